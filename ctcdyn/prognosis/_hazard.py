r"""Baseline hazards h0(t) of the statistical link: Weibull, piecewise constant, penalised B-spline.

Each baseline is a frozen dataclass that (1) is placed on a cohort's follow-up once
(:meth:`place`: knots, and the crude event rate that centres the priors), (2) turns times into
*features* in NumPy outside the sampler (:meth:`features`: log t, piece indicators, or the
B-spline basis), and (3) inside the NumPyro model samples its parameters (:meth:`sample`) and
returns log h0 at those features (:meth:`log_hazard`). Features are computed once per cohort at
event times and quadrature nodes, so the sampler only does small matrix products.

- **Weibull**: :math:`h_0(t) = \kappa\, t^{\kappa - 1} e^{\lambda}` (shape
  :math:`\kappa` > 0, log scale :math:`\lambda`; sites ``weibull_shape``,
  ``weibull_intercept``).
- **Piecewise constant**: :math:`\log h_0(t) = \lambda_k` on the k-th of the pieces cut at
  quantiles of the event times (site ``log_hazard_piece``, dim ``hazard_piece``).
- **Penalised B-spline**: :math:`\log h_0(t) = \sum_k \gamma_k B_k(t)`, with a first-order
  random-walk prior :math:`\gamma_k = \gamma_{k-1} + \tau z_k`, :math:`z_k \sim N(0, 1)`,
  :math:`\tau \sim \mathrm{HalfNormal}(0.5)`
  (non-centred; the discrete analogue of a P-spline difference penalty, Eilers & Marx 1996;
  JMbayes2 uses the same construction with a second-order penalty). Sites ``spline_coef``
  (dim ``spline_basis``) and ``spline_rw_sd``. Beyond the last knot the spline is held at its
  boundary value (constant extrapolation).

Time is in the data's own unit (days for ctcdyn's CTC tables, years in the PBC example); rates
are per that unit.
"""

from __future__ import annotations

import abc
import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jaxtyping import Array
from scipy.interpolate import BSpline

#: Scale of the half-normal prior on the B-spline random walk's step SD (log h0 per basis
#: function). Wider (1) lets sparse late follow-up swing log h0 by e-fold steps, where NUTS
#: then diverged on the PBC data; 0.5 keeps the PBC posterior (median step 0.18) unchanged.
RW_SD_PRIOR = 0.5

#: sd of the normal priors on log-hazard levels around the crude log rate (weakly informative:
#: a factor e^10 either way holds 95% of the prior).
LOG_RATE_PRIOR_SD = 5.0


def crude_log_rate(time: np.ndarray, event: np.ndarray, entry: np.ndarray | None = None) -> float:
    """log(events / total time at risk): the centre of every baseline's level prior."""
    time = np.asarray(time, dtype=float)
    at_risk = time - (0.0 if entry is None else np.asarray(entry, dtype=float))
    events = max(float(np.sum(np.asarray(event) > 0)), 0.5)
    return float(np.log(events / max(float(at_risk.sum()), 1e-12)))


@dataclasses.dataclass(frozen=True)
class BaselineHazard(abc.ABC):
    """A baseline hazard family (abstract). ``center`` is the crude log event rate of the
    cohort it was placed on (centre of the level priors)."""

    center: float = 0.0
    kind: ClassVar[str] = ""

    @abc.abstractmethod
    def place(self, time: np.ndarray, event: np.ndarray, entry: np.ndarray) -> BaselineHazard:
        """A copy placed on a cohort: knots and prior centre from its follow-up."""

    @abc.abstractmethod
    def features(self, t: np.ndarray) -> np.ndarray:
        """Features of times ``t`` (any shape) -> ``t.shape + (n_features,)`` (NumPy)."""

    @abc.abstractmethod
    def sample(self) -> dict[str, Array]:
        """Sample this baseline's parameters (NumPyro sites); returns them by site name."""

    @abc.abstractmethod
    def log_hazard(self, params: dict[str, Array], features: Array) -> Array:
        """log h0 at ``features`` (``(..., n_features)`` -> ``(...)``)."""

    @abc.abstractmethod
    def sites(self) -> dict[str, tuple[str, ...]]:
        """Reported sites and their dims beyond (chain, draw)."""

    @abc.abstractmethod
    def coords(self) -> dict[str, list[str]]:
        """Coordinates of the dims of :meth:`sites`."""

    @abc.abstractmethod
    def initial_values(self) -> dict[str, np.ndarray]:
        """Sampler start (constrained values) at the prior centre."""

    def breaks(self) -> tuple[float, ...]:
        """Times where h0 jumps: the cumulative hazard's quadrature is split there (none for a
        continuous baseline)."""
        return ()

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for the run's manifest."""
        out = {k: v for k, v in dataclasses.asdict(self).items()}
        out["kind"] = self.kind
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}


@dataclasses.dataclass(frozen=True)
class WeibullHazard(BaselineHazard):
    """Weibull baseline hazard h0(t) = shape * t^(shape - 1) * exp(intercept).

    Priors: shape ~ LogNormal(0, 1); intercept ~ Normal(crude log rate, 5).
    """

    kind: ClassVar[str] = "weibull"

    def place(self, time, event, entry) -> WeibullHazard:
        return dataclasses.replace(self, center=crude_log_rate(time, event, entry))

    def features(self, t):
        t = np.asarray(t, dtype=float)
        return np.log(np.maximum(t, 1e-300))[..., None]

    def sample(self):
        shape = numpyro.sample("weibull_shape", dist.LogNormal(0.0, 1.0))
        intercept = numpyro.sample("weibull_intercept", dist.Normal(self.center, LOG_RATE_PRIOR_SD))
        return {"weibull_shape": shape, "weibull_intercept": intercept}

    def log_hazard(self, params, features):
        shape = params["weibull_shape"]
        return jnp.log(shape) + (shape - 1.0) * features[..., 0] + params["weibull_intercept"]

    def sites(self):
        return {"weibull_shape": (), "weibull_intercept": ()}

    def coords(self):
        return {}

    def initial_values(self):
        return {"weibull_shape": np.array(1.0), "weibull_intercept": np.array(self.center)}


def _quantile_knots(time: np.ndarray, event: np.ndarray, n: int) -> tuple[float, ...]:
    """``n`` interior knots at evenly spaced quantiles of the event times (all times if none)."""
    t = np.asarray(time, dtype=float)
    pool = t[np.asarray(event) > 0]
    pool = pool if pool.size else t
    qs = np.linspace(0.0, 1.0, n + 2)[1:-1]
    knots = np.unique(np.quantile(pool, qs))
    return tuple(float(k) for k in knots if 0.0 < k < t.max())


@dataclasses.dataclass(frozen=True)
class PiecewiseHazard(BaselineHazard):
    """Piecewise-constant baseline hazard: log h0 = level of the piece that holds t.

    Args:
        pieces: number of pieces (cut at quantiles of the event times) when ``cuts`` is empty.
        cuts: interior cut points (time unit of the data); filled in by :meth:`place`.

    Priors: each level ~ Normal(crude log rate, 5), independently.
    """

    pieces: int = 6
    cuts: tuple[float, ...] = ()
    kind: ClassVar[str] = "piecewise"

    def __post_init__(self) -> None:
        if self.pieces < 1:
            raise ValueError(f"a piecewise hazard needs >= 1 piece, got {self.pieces}")

    def place(self, time, event, entry) -> PiecewiseHazard:
        cuts = self.cuts or _quantile_knots(time, event, self.pieces - 1)
        return dataclasses.replace(
            self, cuts=tuple(cuts), center=crude_log_rate(time, event, entry)
        )

    @property
    def n_levels(self) -> int:
        return len(self.cuts) + 1

    def features(self, t):
        piece = np.searchsorted(np.asarray(self.cuts), np.asarray(t, dtype=float), side="right")
        return np.eye(self.n_levels)[piece]

    def sample(self):
        levels = numpyro.sample(
            "log_hazard_piece",
            dist.Normal(jnp.full(self.n_levels, self.center), LOG_RATE_PRIOR_SD).to_event(1),
        )
        return {"log_hazard_piece": levels}

    def log_hazard(self, params, features):
        return features @ params["log_hazard_piece"]

    def sites(self):
        return {"log_hazard_piece": ("hazard_piece",)}

    def breaks(self):
        return self.cuts

    def coords(self):
        edges = [0.0, *self.cuts, float("inf")]
        return {"hazard_piece": [f"{a:g}-{b:g}" for a, b in itertools.pairwise(edges)]}

    def initial_values(self):
        return {"log_hazard_piece": np.full(self.n_levels, self.center)}


@dataclasses.dataclass(frozen=True)
class BSplineHazard(BaselineHazard):
    """Penalised B-spline log baseline hazard with a random-walk prior on the coefficients.

    Args:
        segments: number of equal-width segments of [0, last follow-up] between knots (as
            JMbayes2 places its knots).
        degree: spline degree (2: quadratic, 3: cubic).
        upper: the last knot; filled in by :meth:`place` (largest follow-up time).

    Priors: first coefficient ~ Normal(crude log rate, 5); each next one ~ Normal(previous,
    rw_sd); rw_sd ~ HalfNormal(0.5) (change of log h0 per basis function).
    """

    segments: int = 6
    degree: int = 2
    upper: float = 0.0
    kind: ClassVar[str] = "bspline"

    def __post_init__(self) -> None:
        if self.segments < 1 or self.degree < 0:
            raise ValueError(
                f"a B-spline hazard needs segments >= 1 and degree >= 0, got {self.segments}, "
                f"{self.degree}"
            )

    def place(self, time, event, entry) -> BSplineHazard:
        upper = self.upper or float(np.max(time))
        return dataclasses.replace(self, upper=upper, center=crude_log_rate(time, event, entry))

    @property
    def n_basis(self) -> int:
        return self.segments + self.degree

    def _knots(self) -> np.ndarray:
        inner = np.linspace(0.0, self.upper, self.segments + 1)
        return np.concatenate([np.zeros(self.degree), inner, np.full(self.degree, self.upper)])

    def features(self, t):
        if self.upper <= 0:
            raise ValueError("place() the B-spline hazard on a cohort before evaluating it")
        t = np.clip(np.asarray(t, dtype=float), 0.0, self.upper)
        flat = t.reshape(-1)
        if flat.size == 0:
            return np.zeros((*t.shape, self.n_basis))
        basis = BSpline.design_matrix(flat, self._knots(), self.degree).toarray()
        return basis.reshape((*t.shape, self.n_basis))

    def sample(self):
        first = numpyro.sample("spline_first", dist.Normal(self.center, LOG_RATE_PRIOR_SD))
        rw_sd = numpyro.sample("spline_rw_sd", dist.HalfNormal(RW_SD_PRIOR))
        steps = numpyro.sample(
            "spline_steps", dist.Normal(jnp.zeros(self.n_basis - 1), 1.0).to_event(1)
        )
        # (batched over a leading cause axis inside a plate)
        walk = jnp.cumsum(rw_sd[..., None] * steps, axis=-1)
        zero = jnp.zeros((*walk.shape[:-1], 1))
        coef = first[..., None] + jnp.concatenate([zero, walk], axis=-1)
        coef = numpyro.deterministic("spline_coef", coef)
        return {"spline_coef": coef, "spline_rw_sd": rw_sd}

    def log_hazard(self, params, features):
        return features @ params["spline_coef"]

    def sites(self):
        return {"spline_coef": ("spline_basis",), "spline_rw_sd": ()}

    def coords(self):
        return {"spline_basis": [str(k) for k in range(self.n_basis)]}

    def initial_values(self):
        return {
            "spline_first": np.array(self.center),
            "spline_rw_sd": np.array(0.5),
            "spline_steps": np.zeros(self.n_basis - 1),
        }


#: Baseline hazards by the names the command line uses.
BASELINES: dict[str, type[BaselineHazard]] = {
    "weibull": WeibullHazard,
    "piecewise": PiecewiseHazard,
    "bspline": BSplineHazard,
}


def baseline_from_description(description: Mapping[str, Any]) -> BaselineHazard:
    """The baseline hazard that :meth:`BaselineHazard.describe` described (a run's manifest)."""
    fields = dict(description)
    kind = fields.pop("kind", None)
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline hazard {kind!r}; known: {sorted(BASELINES)}")
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return BASELINES[kind](**values)
