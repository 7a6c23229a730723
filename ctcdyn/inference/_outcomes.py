"""Observed death, progression and relapse as fit data, and their likelihood.

``ctcdyn fit --outcomes os,pfs`` fits the counts and the clinical endpoints jointly: the same
per-patient dynamics give the burden path, and :class:`~ctcdyn.observation.EndpointModel` turns
it into the probability of what the patients table records (docs/prognosis.md, "Mechanistic
survival"). Columns of the patients table:

- ``os``: ``os_time`` (days; death or last contact) and ``os_event`` (1 death, 0 alive);
- ``pfs``: ``pfs_time``, ``pfs_event`` and ``pfs_last_scan``, the day of the last tumour
  assessment that showed no progression (0 for none: the baseline). Progression found at
  ``pfs_time`` happened in (``pfs_last_scan``, ``pfs_time``]; a PFS that ended with death, or was
  censored, says only that no progression was seen up to ``pfs_last_scan``;
- ``relapse`` (after surgery; :class:`~ctcdyn.observation.RelapseModel`, docs/prognosis.md,
  "Relapse after surgery"): ``relapse_time`` (days from surgery; relapse found, or last
  contact), ``relapse_event`` (1 relapse, 0 none) and optionally ``relapse_last_scan``, the last
  imaging without relapse (0 for none). A relapse happened in (``relapse_last_scan``,
  ``relapse_time``]; without the column, in (``relapse_time`` - 1, ``relapse_time``] (found on
  its day). A censored record says no relapse up to ``relapse_last_scan`` (without the column:
  up to ``relapse_time``).

The burden is evaluated on a per-patient grid from 0 to the latest endpoint time (the running
maximum and nadir are taken there) together with the four times the likelihood reads. Relapse
has its own grid of ``RELAPSE_GRID_POINTS`` from 0 to ``relapse_time`` with its two read times,
so os and pfs read exactly the values they read without it.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from ..data import InputError, Problem
from ..observation import OUTCOMES, EndpointModel, burden_records, log_interval

#: Points of the per-patient grid on which the running maximum and nadir are taken.
GRID_POINTS = 64

#: Points of the per-patient relapse grid: the seeding integral's trapezoid rule on it is
#: within ~0.002 of S_R for lesion growth up to 0.03/day over 5 years (tests/test_relapse.py).
RELAPSE_GRID_POINTS = 128

#: Columns of the patients table each outcome needs.
OUTCOME_COLUMNS = {
    "os": ("os_time", "os_event"),
    "pfs": ("pfs_time", "pfs_event", "pfs_last_scan"),
    "relapse": ("relapse_time", "relapse_event"),
}

# Positions of the read-off times in ``OutcomeArrays.at``.
_LAST_SCAN, _PFS, _BEFORE_DEATH, _OS = range(4)


class OutcomeArrays(eqx.Module):
    """Each patient's recorded endpoints, and the times at which their likelihood reads the
    burden (a PyTree with a leading patient axis).

    Attributes:
        times: sorted evaluation times (days), (patients, GRID_POINTS + 4).
        at: positions in ``times`` of (pfs_last_scan, pfs_time, os_time - 1, os_time).
        died: 1 where death was recorded at ``os_time``.
        progressed: 1 where progression was found at ``pfs_time`` (not death first).
        relapse_times: sorted times of the relapse law (days), (patients,
            RELAPSE_GRID_POINTS + 2); None when relapse is not fitted.
        relapse_at: positions in ``relapse_times`` of (last day known free of relapse,
            ``relapse_time``).
        relapsed: 1 where a relapse was recorded.
    """

    times: Float[ArrayLike, "patients points"]
    at: Int[ArrayLike, "patients 4"]
    died: Bool[ArrayLike, " patients"]
    progressed: Bool[ArrayLike, " patients"]
    relapse_times: Float[ArrayLike, "patients relapse_points"] | None = None
    relapse_at: Int[ArrayLike, "patients 2"] | None = None
    relapsed: Bool[ArrayLike, " patients"] | None = None


def outcome_arrays(
    patients: pd.DataFrame, outcomes: tuple[str, ...], label: str = "patients"
) -> OutcomeArrays:
    """Validate the endpoint columns of ``patients`` and lay them out for the likelihood.

    Raises :class:`~ctcdyn.data.InputError` naming every missing column and bad value.
    """
    problems: list[Problem] = []
    for name in outcomes:
        if name not in OUTCOMES:
            known = ", ".join(OUTCOMES)
            problems.append(Problem(label, None, None, f"unknown outcome {name!r}; known: {known}"))
        for column in OUTCOME_COLUMNS.get(name, ()):
            if column not in patients:
                problems.append(Problem(label, None, column, f"required to fit the {name} outcome"))
    if problems:
        raise InputError(problems)

    n = len(patients)

    def numeric(column: str, rule: str, ok) -> np.ndarray:
        values = pd.to_numeric(patients[column], errors="coerce").to_numpy(float)
        for i in np.flatnonzero(~ok(values)):
            problems.append(Problem(label, int(i) + 2, column, rule, str(patients[column].iat[i])))
        return values

    positive = lambda v: np.isfinite(v) & (v > 0)  # noqa: E731
    zeros = np.zeros(n)
    os_time = os_event = pfs_time = pfs_event = last_scan = zeros
    if "os" in outcomes:
        os_time = numeric("os_time", "must be a number > 0 (days)", positive)
        os_event = patients["os_event"].to_numpy(float)
    if "pfs" in outcomes:
        pfs_time = numeric("pfs_time", "must be a number > 0 (days)", positive)
        pfs_event = patients["pfs_event"].to_numpy(float)
        found = pfs_event == 1
        last_scan = numeric(
            "pfs_last_scan",
            "must be a number >= 0 and <= pfs_time, < pfs_time where progression was found",
            lambda v: np.isfinite(v) & (v >= 0) & ~(v > pfs_time) & ~(found & (v >= pfs_time)),
        )
        if "os" in outcomes:
            late = np.isfinite(pfs_time) & np.isfinite(os_time) & (pfs_time > os_time)
            for i in np.flatnonzero(late):
                problems.append(
                    Problem(label, int(i) + 2, "pfs_time", "must be <= os_time", f"{pfs_time[i]:g}")
                )
    relapse = _relapse_records(patients, numeric, problems) if "relapse" in outcomes else None
    if problems:
        raise InputError(problems)

    died = os_event == 1
    # PFS that ended with a recorded death at the same time is death first, not a progression
    death_first = died & (pfs_time >= os_time) if "os" in outcomes else np.zeros(n, bool)
    progressed = (pfs_event == 1) & ~death_first
    read = np.stack([last_scan, pfs_time, np.maximum(os_time - 1.0, 0.0), os_time], axis=1)
    times, at = _grid_with(np.maximum(os_time, pfs_time), GRID_POINTS, read)
    return OutcomeArrays(
        times=times,
        at=at,
        died=died,
        progressed=progressed,
        **(_relapse_grid(*relapse) if relapse is not None else {}),
    )


def _relapse_records(patients: pd.DataFrame, numeric, problems: list[Problem]):
    """(relapse_time, last day known free of relapse, relapsed), the bad values added to
    ``problems``."""
    time = numeric(
        "relapse_time", "must be a number > 0 (days)", lambda v: np.isfinite(v) & (v > 0)
    )
    event = numeric("relapse_event", "must be 0 or 1", lambda v: (v == 0) | (v == 1))
    relapsed = event == 1
    if "relapse_last_scan" in patients:
        free_to = numeric(
            "relapse_last_scan",
            "must be a number >= 0 and <= relapse_time, < relapse_time where relapse was found",
            lambda v: np.isfinite(v) & (v >= 0) & ~(v > time) & ~(relapsed & (v >= time)),
        )
    else:  # found on its day: in (t - 1, t]; censored: free up to t
        free_to = np.where(relapsed, np.maximum(time - 1.0, 0.0), time)
    return time, free_to, relapsed


def _relapse_grid(time: np.ndarray, free_to: np.ndarray, relapsed: np.ndarray) -> dict:
    read = np.stack([free_to, time], axis=1)
    times, at = _grid_with(time, RELAPSE_GRID_POINTS, read)
    return dict(relapse_times=times, relapse_at=at, relapsed=relapsed)


def _grid_with(end: np.ndarray, points: int, read: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each patient's sorted evaluation times: ``points`` evenly from 0 to ``end`` and the
    times the likelihood reads, ``read`` (patients, k); and where each read time landed."""
    grid = end[:, None] * np.linspace(0.0, 1.0, points)[None, :]
    times = np.concatenate([grid, read], axis=1)
    order = np.argsort(times, axis=1, kind="stable")
    where = np.argsort(order, axis=1)
    return np.take_along_axis(times, order, axis=1), where[:, points:].astype(np.int32)


def outcome_log_likelihood(
    endpoints: EndpointModel,
    outcomes: tuple[str, ...],
    arrays: OutcomeArrays,
    log_burden: Float[Array, "patients points"],
) -> dict[str, Array]:
    """Log-likelihood of each patient's recorded outcomes, given log B at ``arrays.times``.

    Returns {outcome: (patients,)} for each of ``outcomes`` but relapse
    (:func:`relapse_log_likelihood`).
    """
    record, rise = burden_records(log_burden)
    at = jnp.asarray(arrays.at)
    times = jnp.take_along_axis(jnp.asarray(arrays.times), at, axis=1)
    out: dict[str, Array] = {}
    if "os" in outcomes:
        reached = jnp.take_along_axis(record, at, axis=1)
        log_s = endpoints.log_survival_death(reached, times)
        death = log_interval(log_s[:, _BEFORE_DEATH], log_s[:, _OS])
        out["os"] = jnp.where(jnp.asarray(arrays.died), death, log_s[:, _OS])
    if "pfs" in outcomes:
        risen = jnp.take_along_axis(rise, at, axis=1)
        log_s = endpoints.log_survival_progression(risen, times)
        found = log_interval(log_s[:, _LAST_SCAN], log_s[:, _PFS])
        out["pfs"] = jnp.where(jnp.asarray(arrays.progressed), found, log_s[:, _LAST_SCAN])
    return out


def relapse_log_likelihood(
    arrays: OutcomeArrays, log_survival: Float[Array, "patients relapse_points"]
) -> Array:
    """Log-likelihood of each patient's relapse record, given log S_R at
    ``arrays.relapse_times`` (:meth:`~ctcdyn.observation.RelapseModel.log_survival`), (patients,).
    """
    assert arrays.relapse_at is not None, "the data carry no relapse (outcome_arrays(relapse))"
    read = jnp.take_along_axis(log_survival, jnp.asarray(arrays.relapse_at), axis=1)
    found = log_interval(read[:, 0], read[:, 1])
    return jnp.where(jnp.asarray(arrays.relapsed), found, read[:, 0])
