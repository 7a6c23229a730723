"""R-style formulas of a marker's linear mixed trajectory, evaluable at any time (formulaic).

The trajectory of patient i is

    m_i(t) = x_i(t)' beta + z_i(t)' b_i

where x_i(t) and z_i(t) are the rows of the fixed- and random-effects design matrices for the
patient's covariates at time t. The formulas are parsed once and their model specs built once
from the blood-draw table (so categorical codings and stateful transforms such as centring or
spline knots are fixed by the data), then re-evaluated on frames of (patient covariates,
arbitrary time) rows: at event times, at quadrature nodes, at prediction times. The slope
dm/dt is a central difference of the design matrices (exact for polynomials in time up to
rounding), and the area int_0^t m(s) ds is a Gauss–Legendre integral of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd
from formulaic import Formula, ModelSpec, model_matrix

from ._quadrature import QUADRATURE_NODES, gauss_legendre

#: Association structures f(m_i, t): the trajectory's current value, slope, or area from 0.
ASSOCIATIONS = ("value", "slope", "area")
#: Site name of each association's coefficient (reported in summary.csv under these names).
ALPHA_NAMES = {"value": "alpha", "slope": "alpha_slope", "area": "alpha_area"}


def _rhs(text: str, what: str) -> tuple[str | None, str]:
    """(left-hand side or None, right-hand side) of a formula string."""
    if "~" not in text:
        raise ValueError(f"the {what} formula {text!r} has no '~'; write e.g. '~ time'")
    left, rhs = text.split("~", 1)
    if not rhs.strip():
        raise ValueError(f"the {what} formula {text!r} has nothing right of '~'")
    Formula("~" + rhs)  # parse now, so a syntax error names the formula
    return left.strip() or None, rhs.strip()


def formula_variables(rhs: str) -> set[str]:
    """The data columns a right-hand side needs."""
    return {str(v) for v in Formula("~" + rhs).required_variables}


@dataclasses.dataclass(frozen=True)
class MarkerFormulas:
    """Parsed formulas of a marker and of the hazard's baseline covariates.

    Args:
        marker: the marker column of the draws table.
        fixed: fixed effects, e.g. ``"log_bili ~ female * time"`` (the left-hand side, when
            given, must be the marker column).
        random: random effects by patient, e.g. ``"~ time"`` (random intercept and slope).
        surv: baseline covariates of the hazard, e.g. ``"~ female"`` (its intercept is
            dropped: the baseline hazard holds it); ``"~ 1"`` for none.
        time: the time column (the formulas' time variable, in the data's own unit).
    """

    marker: str
    fixed: str
    random: str = "~ 1"
    surv: str = "~ 1"
    time: str = "time"

    def __post_init__(self) -> None:
        lhs, _ = _rhs(self.fixed, "fixed-effects")
        if lhs is not None and lhs != self.marker:
            raise ValueError(
                f"the fixed-effects formula's left-hand side {lhs!r} is not the marker column "
                f"{self.marker!r}; write '{self.marker} ~ ...' or drop the left-hand side"
            )
        for text, what in ((self.random, "random-effects"), (self.surv, "survival")):
            lhs, _ = _rhs(text, what)
            if lhs is not None:
                raise ValueError(
                    f"the {what} formula {text!r} takes no left-hand side (events come from "
                    "the event-time and event columns)"
                )

    @property
    def fixed_rhs(self) -> str:
        return _rhs(self.fixed, "fixed-effects")[1]

    @property
    def random_rhs(self) -> str:
        return _rhs(self.random, "random-effects")[1]

    @property
    def surv_rhs(self) -> str:
        return _rhs(self.surv, "survival")[1]

    def marker_variables(self) -> set[str]:
        """Covariates of the marker formulas other than time."""
        out = formula_variables(self.fixed_rhs) | formula_variables(self.random_rhs)
        return out - {self.time}

    def surv_variables(self) -> set[str]:
        return formula_variables(self.surv_rhs)

    def build(self, draws: pd.DataFrame, patients: pd.DataFrame) -> MarkerDesign:
        """Model specs from the data: marker formulas from ``draws``, hazard covariates from
        ``patients`` (one row per patient)."""
        fixed = model_matrix(self.fixed_rhs, draws).model_spec
        random = model_matrix(self.random_rhs, draws).model_spec
        surv = model_matrix(self.surv_rhs, patients).model_spec
        return MarkerDesign(formulas=self, fixed=fixed, random=random, surv=surv)


def _matrix(spec: ModelSpec, frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(spec.get_model_matrix(frame), dtype=float)


@dataclasses.dataclass(frozen=True, eq=False)
class MarkerDesign:
    """The formulas' model specs, built from a cohort; evaluates design matrices anywhere."""

    formulas: MarkerFormulas
    fixed: ModelSpec
    random: ModelSpec
    surv: ModelSpec

    @property
    def fixed_names(self) -> tuple[str, ...]:
        return tuple(self.fixed.column_names)

    @property
    def random_names(self) -> tuple[str, ...]:
        return tuple(self.random.column_names)

    @property
    def surv_names(self) -> tuple[str, ...]:
        return tuple(c for c in self.surv.column_names if c != "Intercept")

    def marker_matrices(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(X, Z) of the rows of ``frame`` (covariates and the time column)."""
        return _matrix(self.fixed, frame), _matrix(self.random, frame)

    def surv_matrix(self, patients: pd.DataFrame) -> np.ndarray:
        """Baseline covariates of the hazard, one row per patient (no intercept column)."""
        full = pd.DataFrame(_matrix(self.surv, patients), columns=list(self.surv.column_names))
        return full[list(self.surv_names)].to_numpy(dtype=float)

    def _at(self, patients: pd.DataFrame, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(X, Z) at ``times`` (patients, k) for each patient row: shapes (patients, k, .)."""
        n, k = times.shape
        frame = patients.loc[patients.index.repeat(k)].reset_index(drop=True)
        frame[self.formulas.time] = times.reshape(-1)
        x, z = self.marker_matrices(frame)
        return x.reshape(n, k, -1), z.reshape(n, k, -1)

    def association(
        self,
        patients: pd.DataFrame,
        times: np.ndarray,
        form: str,
        *,
        nodes: int = QUADRATURE_NODES,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Design of an association f(m_i, t) at ``times`` (patients, k), linear in (beta, b_i).

        ``form`` is "value" (m_i(t)), "slope" (dm_i/dt, central difference) or "area"
        (int_0^t m_i(s) ds, ``nodes``-point Gauss–Legendre). Returns (X, Z) shaped
        (patients, k, p) and (patients, k, q): f = X beta + Z b_i.
        """
        times = np.asarray(times, dtype=float)
        if form == "value":
            return self._at(patients, times)
        if form == "slope":
            span = max(float(np.abs(times).max()), 1.0)
            h = 1e-5 * span
            xp, zp = self._at(patients, times + h)
            xm, zm = self._at(patients, times - h)
            return (xp - xm) / (2 * h), (zp - zm) / (2 * h)
        if form == "area":
            n, k = times.shape
            s, w = gauss_legendre(np.zeros_like(times), times, nodes)  # (n, k, nodes)
            x, z = self._at(patients, s.reshape(n, k * nodes))
            x = (x.reshape(n, k, nodes, -1) * w[..., None]).sum(axis=2)
            z = (z.reshape(n, k, nodes, -1) * w[..., None]).sum(axis=2)
            return x, z
        raise ValueError(f"unknown association {form!r}; use one of {ASSOCIATIONS}")


def parse_assoc(assoc: str | Sequence[str]) -> tuple[str, ...]:
    """Association forms from ``"value"``, ``"value,slope"`` or a sequence; order kept."""
    items = assoc.split(",") if isinstance(assoc, str) else list(assoc)
    forms = tuple(dict.fromkeys(a.strip() for a in items if a.strip()))
    bad = [a for a in forms if a not in ASSOCIATIONS]
    if not forms or bad:
        raise ValueError(
            f"association {assoc!r} not understood; use one or more of {ASSOCIATIONS}, "
            "e.g. 'value' or 'value,slope'"
        )
    return forms
