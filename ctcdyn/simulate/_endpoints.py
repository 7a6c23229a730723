"""Clinical endpoints read off a simulated burden trajectory (daily resolution).

- Progression (scenarios with ``progression_factor``): the burden P + M reaches
  ``progression_factor`` times its nadir so far, the volume analogue of RECIST 1.1's +20% in
  the sum of diameters (1.2^3 = 1.728). Without ``imaging_days`` the burden is assessed every
  day; with them (``scan_days``), only at the scans, against the smallest burden seen at
  baseline (day 0) or an earlier scan, as RECIST compares with the smallest sum on study: a
  progression between scans is found at the next one.
- Death: the burden reaches ``lethal_burden`` (when the spec declares it).
- Relapse (scenarios with ``detect_relapse``): the metastatic burden reaches
  ``detection_burden``, the size at which imaging sees it.

Times are days from baseline on the daily grid; an event that does not happen by the end of
follow-up is censored there (event = 0). Progression-free survival ends at progression or death.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..specs import ModelSpec, Scenario


def _first(condition: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First grid time where ``condition`` holds per row, and whether it ever does."""
    hit = condition.any(axis=1)
    index = np.argmax(condition, axis=1)
    return np.where(hit, grid[index], grid[-1]), hit.astype(int)


def _fixed(spec: ModelSpec, name: str) -> float | None:
    p = spec.parameters.get(name)
    return None if p is None else p.typical() * p.to_internal


def _scanned(
    burden: np.ndarray, grid: np.ndarray, scan_days: np.ndarray, factor: float
) -> tuple[np.ndarray, np.ndarray]:
    """First scan at which the burden is ``factor`` x the smallest at baseline or a prior scan."""
    inside = scan_days <= grid[-1]
    index = np.clip(np.searchsorted(grid, scan_days), 0, grid.size - 1)
    seen = np.where(inside, np.take_along_axis(burden, index, axis=1), np.inf)
    before = np.concatenate([burden[:, :1], seen[:, :-1]], axis=1)
    nadir = np.minimum.accumulate(before, axis=1)
    progressed = inside & (seen >= factor * nadir)
    hit = progressed.any(axis=1)
    first = np.take_along_axis(scan_days, np.argmax(progressed, axis=1)[:, None], axis=1)[:, 0]
    return np.where(hit, first, grid[-1]), hit.astype(int)


def endpoint_table(
    spec: ModelSpec,
    plan: Scenario,
    grid: np.ndarray,
    primary: np.ndarray,
    metastatic: np.ndarray,
    scan_days: np.ndarray | None = None,
) -> pd.DataFrame:
    """Event times and indicators, one row per patient (columns depend on the scenario).

    Args:
        spec, plan: the model spec and the scenario simulated.
        grid: the daily time grid (days from baseline, starting at 0).
        primary, metastatic: burden on the grid, shape (patients, days).
        scan_days: days of each patient's scans, shape (patients, scans), sorted; progression is
            assessed only there (None: every day).
    """
    burden = primary + metastatic
    out = {}
    lethal = _fixed(spec, "lethal_burden")
    if lethal is not None:
        out["os_time"], out["os_event"] = _first(burden >= lethal, grid)
    if plan.progression_factor is not None:
        if scan_days is None:
            nadir = np.minimum.accumulate(burden, axis=1)
            progressed = (burden >= plan.progression_factor * nadir) & (grid[None, :] > 0)
            pfs_time, pfs_event = _first(progressed, grid)
        else:
            pfs_time, pfs_event = _scanned(burden, grid, scan_days, plan.progression_factor)
        if lethal is not None:
            died_first = out["os_event"].astype(bool) & (out["os_time"] < pfs_time)
            pfs_time = np.where(died_first, out["os_time"], pfs_time)
            pfs_event = np.where(died_first, 1, pfs_event)
        out["pfs_time"], out["pfs_event"] = pfs_time, pfs_event
    if plan.detect_relapse:
        detect = _fixed(spec, "detection_burden")
        assert detect is not None  # checked when the spec was read
        out["relapse_time"], out["relapse_event"] = _first(metastatic >= detect, grid)
    return pd.DataFrame(out)
