"""Clinical endpoints read off a simulated burden trajectory (daily resolution).

Each patient's thresholds and other-cause events come from the spec's
:class:`~ctcdyn.observation.EndpointModel` (the model that fitting with ``--outcomes`` uses):

- Progression (scenarios with ``progression_factor``): the burden P + M reaches the patient's
  threshold f_i times its nadir so far (median f: the volume analogue of RECIST 1.1's +20% in
  the sum of diameters, 1.2^3 = 1.728), or progression by another route (a new lesion) happens.
  Without ``imaging_days`` the burden is assessed every day; with them (``scan_days``), only at
  the scans, against the smallest burden seen at baseline (day 0) or an earlier scan, as RECIST
  compares with the smallest sum on study: a progression between scans is found at the next
  one. ``pfs_last_scan`` is the day of the last assessment without progression.
- Death: the burden reaches the patient's lethal burden L_i (when the spec declares
  ``lethal_burden``), or death from another cause.
- Relapse (scenarios with ``detect_relapse``): the first metastasis reaches
  ``detection_burden`` cells, the size at which imaging sees it, or relapse by another route;
  drawn from the relapse-free survival S_R of :class:`~ctcdyn.observation.RelapseModel` (the law
  that fitting with ``--outcomes relapse`` uses) by inverting it with one uniform per patient.
  Found on its day without ``imaging_days``, else at the next scan (``relapse_last_scan``: the
  last scan before it).

Times are days from baseline on the daily grid; an event that does not happen by the end of
follow-up is censored there (event = 0). Progression-free survival ends at progression or death.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import PRNGKeyArray

from ..dynamics import CTCModel
from ..observation import EndpointModel, PatientThresholds, RelapseModel
from ..specs import ModelSpec, Scenario

#: Most points of the grid on which the relapse law is evaluated (every k-th day).
RELAPSE_POINTS = 256

#: Patients per evaluation of the relapse law (its memory grows as points^2 per patient).
RELAPSE_CHUNK = 64


def _first(condition: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First grid time where ``condition`` holds per row, and whether it ever does."""
    hit = condition.any(axis=1)
    index = np.argmax(condition, axis=1)
    return np.where(hit, grid[index], grid[-1]), hit.astype(int)


def _fixed(spec: ModelSpec, name: str) -> float | None:
    p = spec.parameters.get(name)
    return None if p is None else p.typical() * p.to_internal


def _scanned(
    burden: np.ndarray,
    grid: np.ndarray,
    scan_days: np.ndarray,
    factor: np.ndarray,
    other: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """First scan at which the burden is ``factor`` x the smallest at baseline or a prior scan,
    or the first scan on or after an other-route progression at ``other`` (days)."""
    inside = scan_days <= grid[-1]
    index = np.clip(np.searchsorted(grid, scan_days), 0, grid.size - 1)
    seen = np.where(inside, np.take_along_axis(burden, index, axis=1), np.inf)
    before = np.concatenate([burden[:, :1], seen[:, :-1]], axis=1)
    nadir = np.minimum.accumulate(before, axis=1)
    progressed = inside & ((seen >= factor[:, None] * nadir) | (scan_days >= other[:, None]))
    hit = progressed.any(axis=1)
    first = np.take_along_axis(scan_days, np.argmax(progressed, axis=1)[:, None], axis=1)[:, 0]
    return np.where(hit, first, grid[-1]), hit.astype(int)


def _last_scan(
    scan_days: np.ndarray | None, pfs_time: np.ndarray, progressed: np.ndarray
) -> np.ndarray:
    """Day of the last assessment without progression: before ``pfs_time`` where progression
    was found there, else on or before it (0, the baseline, when there is none)."""
    if scan_days is None:  # assessed every day
        return np.where(progressed, pfs_time - 1.0, pfs_time)
    limit = pfs_time[:, None]
    earlier = np.where(progressed[:, None], scan_days < limit, scan_days <= limit)
    return np.max(np.where(earlier, scan_days, 0.0), axis=1, initial=0.0)


def endpoint_table(
    spec: ModelSpec,
    plan: Scenario,
    grid: np.ndarray,
    primary: np.ndarray,
    metastatic: np.ndarray,
    scan_days: np.ndarray | None = None,
    key: PRNGKeyArray | None = None,
    model: CTCModel | None = None,
) -> pd.DataFrame:
    """Event times and indicators, one row per patient (columns depend on the scenario).

    Args:
        spec, plan: the model spec and the scenario simulated.
        grid: the daily time grid (days from baseline, starting at 0).
        primary, metastatic: burden on the grid, shape (patients, days).
        scan_days: days of each patient's scans, shape (patients, scans), sorted; progression is
            assessed only there (None: every day).
        key: draws each patient's thresholds and other-cause events from the spec's
            :class:`~ctcdyn.observation.EndpointModel`; None: every patient at the median
            thresholds, with no other-cause event.
        model: the patients' batched :class:`~ctcdyn.CTCModel` (lesion rates, M_0, seeding,
            treatments), which the relapse law needs; relapse is drawn with
            ``fold_in(key, 2)`` (None: each patient's median relapse time). Without it relapse
            is the first day the summed metastatic burden reaches ``detection_burden`` (the
            deterministic reading of earlier versions).
    """
    burden = primary + metastatic
    n = burden.shape[0]
    endpoints = EndpointModel.from_spec(spec, plan.name)
    if key is None:
        inf = np.full(n, np.inf)
        thresholds = PatientThresholds(
            log_lethal=np.log(endpoints.lethal_burden or np.inf) + np.zeros(n),
            log_factor=np.log(endpoints.progression_factor or np.inf) + np.zeros(n),
            other_death=inf,
            other_progression=inf,
        )
    else:
        thresholds = endpoints.draw_patients(key, n)
    lethal = np.exp(np.asarray(thresholds.log_lethal))
    factor = np.exp(np.asarray(thresholds.log_factor))
    other_death = np.ceil(np.asarray(thresholds.other_death))
    other_progression = np.asarray(thresholds.other_progression)
    out = {}
    if endpoints.lethal_burden is not None:
        died = (burden >= lethal[:, None]) | (grid[None, :] >= other_death[:, None])
        out["os_time"], out["os_event"] = _first(died, grid)
    if plan.progression_factor is not None:
        if scan_days is None:
            nadir = np.minimum.accumulate(burden, axis=1)
            progressed = (burden >= factor[:, None] * nadir) | (
                grid[None, :] >= np.ceil(other_progression)[:, None]
            )
            pfs_time, pfs_event = _first(progressed & (grid[None, :] > 0), grid)
        else:
            pfs_time, pfs_event = _scanned(burden, grid, scan_days, factor, other_progression)
        progression = pfs_event.astype(bool)
        if endpoints.lethal_burden is not None:
            died_first = out["os_event"].astype(bool) & (out["os_time"] <= pfs_time)
            pfs_time = np.where(died_first, out["os_time"], pfs_time)
            pfs_event = np.where(died_first, 1, pfs_event)
            progression &= ~died_first
        out["pfs_time"], out["pfs_event"] = pfs_time, pfs_event
        out["pfs_last_scan"] = _last_scan(scan_days, pfs_time, progression)
    if plan.detect_relapse and model is None:
        detect = _fixed(spec, "detection_burden")
        assert detect is not None  # checked when the spec was read
        out["relapse_time"], out["relapse_event"] = _first(metastatic >= detect, grid)
    elif plan.detect_relapse and model is not None:
        relapse = RelapseModel.from_spec(spec)
        assert relapse is not None  # detection_burden: checked when the spec was read
        relapse_key = None if key is None else jax.random.fold_in(key, 2)
        day, found = relapse_days(relapse, model, grid, burden, relapse_key)
        if scan_days is None:
            out["relapse_time"], out["relapse_event"] = day, found
        else:
            out.update(_relapse_at_scans(day, found, scan_days, grid[-1]))
    return pd.DataFrame(out)


def relapse_days(
    relapse: RelapseModel,
    model: CTCModel,
    grid: np.ndarray,
    burden: np.ndarray,
    key: PRNGKeyArray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each patient's relapse day drawn from S_R (the median with ``key`` None), and whether it
    happens by ``grid[-1]`` (else that day, event 0).

    S_R is evaluated on every k-th day of the daily ``grid`` (at most ``RELAPSE_POINTS`` points,
    the last day included) from the burden ``P + M`` there, shape (patients, days).
    """
    n = burden.shape[0]
    step = max(1, math.ceil((grid.size - 1) / (RELAPSE_POINTS - 1)))
    index = np.unique(np.append(np.arange(0, grid.size, step), grid.size - 1))
    times = jnp.asarray(grid[index], dtype=float)
    model = jax.tree.map(
        lambda x: jnp.broadcast_to(x, (n, *jnp.shape(x))) if jnp.ndim(x) == 0 else x, model
    )
    run = _relapse_solver(relapse)
    pieces = []
    for lo in range(0, n, RELAPSE_CHUNK):
        hi = min(lo + RELAPSE_CHUNK, n)
        rows = jax.tree.map(functools.partial(_take, slice(lo, hi)), model)
        pieces.append(np.asarray(run(rows, times, jnp.asarray(burden[lo:hi, index], float))))
    day, found = relapse.draw_days(key, times, np.concatenate(pieces))
    return np.asarray(day, float), np.asarray(found, int)


def _take(rows: slice, x):
    return x[rows]


@functools.cache
def _relapse_solver(relapse: RelapseModel):
    """log S_R of a chunk of patients (compiled once per relapse law and shape)."""
    return jax.jit(jax.vmap(relapse.log_survival_of, in_axes=(0, None, 0)))


def _relapse_at_scans(
    day: np.ndarray, found: np.ndarray, scan_days: np.ndarray, end: float
) -> dict[str, np.ndarray]:
    """A relapse is seen at the first scan on or after its day; the last scan before that (0
    for none) is the last known free of relapse."""
    inside = scan_days <= end
    seen = inside & found.astype(bool)[:, None] & (scan_days >= day[:, None])
    hit = seen.any(axis=1)
    first = np.take_along_axis(scan_days, np.argmax(seen, axis=1)[:, None], axis=1)[:, 0]
    time = np.where(hit, first, end)
    before = inside & np.where(hit[:, None], scan_days < time[:, None], scan_days <= end)
    last = np.max(np.where(before, scan_days, 0.0), axis=1, initial=0.0)
    return {"relapse_time": time, "relapse_event": hit.astype(int), "relapse_last_scan": last}
