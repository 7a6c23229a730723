"""The diagnostics gate: a fit is reported only when its sampler diagnostics pass.

The rule (the project's, after Vehtari et al. 2021 and Betancourt 2016):

- rank-normalised split R-hat <= 1.01 for every scalar parameter;
- bulk and tail effective sample size >= 400 for every scalar parameter;
- no divergent transitions;
- E-BFMI >= 0.3 for every chain (and every patient of a per-patient fit).

A NaN R-hat or ESS (one chain, NaN draws) fails: it is never hidden.

References:
    Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021). Rank-normalization, folding, and
    localization: an improved R-hat for assessing convergence of MCMC. Bayesian Analysis 16(2),
    667-718. (R-hat and ESS, and the thresholds 1.01 and 400.)

    Betancourt (2016). Diagnosing suboptimal cotangent disintegrations in Hamiltonian Monte
    Carlo. arXiv:1604.00695. (E-BFMI, and 0.3 as the warning level.)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ..store._summary import summarize

#: Offenders listed per rule; the rest are counted.
MAX_LISTED = 5


@dataclasses.dataclass(frozen=True)
class Gate:
    """Thresholds of the diagnostics gate (defaults: the project's rule, see module docs)."""

    max_r_hat: float = 1.01
    min_ess_bulk: float = 400.0
    min_ess_tail: float = 400.0
    max_divergences: int = 0
    min_bfmi: float = 0.3

    def __post_init__(self) -> None:
        if not self.max_r_hat >= 1.0:
            raise ValueError(f"max_r_hat must be >= 1, got {self.max_r_hat}")
        for name in ("min_ess_bulk", "min_ess_tail", "max_divergences", "min_bfmi"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class GateResult:
    """Outcome of :func:`check`.

    ``failures`` holds one human-readable line per broken rule and offender (the worst
    :data:`MAX_LISTED` per rule, after a line counting them all when there are more).
    ``divergences`` is -1 when the tree has no ``sample_stats.diverging``; ``min_bfmi``,
    ``worst_r_hat``, ``min_ess_bulk`` and ``min_ess_tail`` are NaN when any value is NaN or
    there is nothing to measure.
    """

    passed: bool
    failures: list[str]
    divergences: int
    min_bfmi: float
    worst_r_hat: float
    min_ess_bulk: float
    min_ess_tail: float
    gate: Gate = dataclasses.field(default_factory=Gate)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict for the manifest (NaN becomes None)."""
        out = dataclasses.asdict(self)
        return {k: _json(v) for k, v in out.items()}


def _json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def bfmi(energy: xr.DataArray) -> xr.DataArray:
    """E-BFMI of each chain (and of each element of any other dim, e.g. ``patient``).

    E-BFMI = sum_n (E_n - E_{n-1})^2 / sum_n (E_n - mean E)^2 over a chain's draws n, where
    E is the Hamiltonian energy (Betancourt 2016, eq. 7); the same estimate as
    ``arviz_stats.bfmi``. NaN for a constant energy or fewer than 2 draws.
    """
    e = energy.transpose(..., "draw")
    values = np.asarray(e.values, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        num = np.square(np.diff(values, axis=-1)).mean(axis=-1)
        den = values.var(axis=-1, ddof=1)
        out = num / den
    return xr.DataArray(
        out, dims=e.dims[:-1], coords={d: e[d] for d in e.dims[:-1] if d in e.coords}
    )


def check(
    tree: xr.DataTree, summary: pd.DataFrame | None = None, gate: Gate | None = None
) -> GateResult:
    """Check a fit against the diagnostics gate.

    Args:
        tree: the fit, with ``posterior`` and ``sample_stats`` (``diverging``, ``energy``).
        summary: :func:`ctcdyn.store.summarize`'s table of ``tree`` (computed when None).
        gate: thresholds (:class:`Gate` defaults when None).

    Returns:
        A :class:`GateResult`; ``passed`` is True only when every rule holds.
    """
    gate = Gate() if gate is None else gate
    summary = summarize(tree) if summary is None else summary
    failures: list[str] = []
    if summary.empty:
        failures.append("the posterior has no parameters to check")
    names = summary["parameter"].to_numpy(dtype=object)
    name = names.__getitem__
    r_hat = summary["r_hat"].to_numpy(dtype=float)
    failures += _offenders(name, r_hat, "r_hat", ">", gate.max_r_hat, "{:.3f}", worst="high")
    ess = {}
    for column, limit in (("ess_bulk", gate.min_ess_bulk), ("ess_tail", gate.min_ess_tail)):
        ess[column] = summary[column].to_numpy(dtype=float)
        failures += _offenders(name, ess[column], column, "<", limit, "{:.0f}", worst="low")

    stats = tree["sample_stats"].to_dataset() if "sample_stats" in tree.children else xr.Dataset()
    divergences = -1
    if "diverging" in stats:
        diverging = stats["diverging"].astype(int)
        divergences = int(diverging.sum())
        if divergences > gate.max_divergences:
            failures.append(_divergence_line(diverging, divergences, gate.max_divergences))
    else:
        failures.append("sample_stats has no 'diverging': divergences cannot be checked")
    min_bfmi = math.nan
    if "energy" in stats:
        e_bfmi = bfmi(stats["energy"])
        min_bfmi = _extreme(e_bfmi.values.ravel(), "low")
        failures += _offenders(
            _chain_namer(e_bfmi),
            e_bfmi.values.ravel(),
            "E-BFMI",
            "<",
            gate.min_bfmi,
            "{:.2f}",
            worst="low",
            noun="chains",
        )
    else:
        failures.append("sample_stats has no 'energy': E-BFMI cannot be checked")

    return GateResult(
        passed=not failures,
        failures=failures,
        divergences=divergences,
        min_bfmi=min_bfmi,
        worst_r_hat=_extreme(r_hat, "high"),
        min_ess_bulk=_extreme(ess["ess_bulk"], "low"),
        min_ess_tail=_extreme(ess["ess_tail"], "low"),
        gate=gate,
    )


def _extreme(values: np.ndarray, worst: str) -> float:
    if values.size == 0 or np.isnan(values).any():
        return math.nan
    return float(values.max() if worst == "high" else values.min())


def _offenders(
    name: Callable[[int], str],
    values: np.ndarray,
    rule: str,
    op: str,
    limit: float,
    fmt: str,
    *,
    worst: str,
    noun: str = "parameters",
) -> list[str]:
    """Lines for the elements breaking ``value op limit`` (NaN always breaks it), worst first."""
    ok = values <= limit if op == ">" else values >= limit
    bad = np.flatnonzero(~ok)
    if bad.size == 0:
        return []
    key = -values[bad] if worst == "high" else values[bad]
    order = bad[np.argsort(np.where(np.isnan(key), -np.inf, key), kind="stable")]
    lines = []
    if bad.size > MAX_LISTED:
        lines.append(
            f"{rule} {op} {limit:g} or NaN for {bad.size} of {values.size} {noun}; "
            f"the worst {MAX_LISTED}:"
        )
    for i in order[:MAX_LISTED]:
        if np.isnan(values[i]):
            lines.append(f"{rule} is NaN for {name(i)} (one chain, too few draws, or NaN draws?)")
        else:
            lines.append(f"{rule} {fmt.format(values[i])} {op} {limit:g} for {name(i)}")
    return lines


def _chain_namer(da: xr.DataArray) -> Callable[[int], str]:
    """Names the flat index of a per-chain array: 'chain 2', 'chain 2 of patient P0007'."""

    def name(flat: int) -> str:
        index = np.unravel_index(flat, da.shape)
        parts = dict(zip(da.dims, index, strict=True))
        order = ["chain", *(d for d in da.dims if d != "chain")]
        return " of ".join(f"{d} {_coord(da, d, int(parts[d]))}" for d in order if d in parts)

    return name


def _coord(da: xr.DataArray, dim: Any, i: int) -> str:
    return str(da[dim].values[i]) if dim in da.coords else str(i)


def _divergence_line(diverging: xr.DataArray, total: int, limit: int) -> str:
    line = f"{total} divergent transitions > {limit}"
    if "patient" not in diverging.dims:
        return line
    per = diverging.sum([d for d in diverging.dims if d != "patient"])
    hit = np.flatnonzero(per.values > 0)
    hit = hit[np.argsort(-per.values[hit], kind="stable")]
    shown = ", ".join(f"{_coord(per, 'patient', i)}: {per.values[i]}" for i in hit[:MAX_LISTED])
    more = f", ... and {hit.size - MAX_LISTED} more" if hit.size > MAX_LISTED else ""
    return f"{line} in {hit.size} patients ({shown}{more})"
