"""A comparison of monitoring schedules in one figure (no pyplot: no global state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ._leadtime import LeadTimeResult


def plot_comparison(result: LeadTimeResult, path: Path | str | None = None) -> Figure:
    """Lead-time distributions (ECDF, weeks) and P(positive before imaging) with 95% MC
    intervals, one colour per schedule; saved to ``path`` when given."""
    table = result.summary()
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=(1.6, 1))
    for label in result.labels:
        lead = result.patients["lead_days"].sel(schedule=label).values
        lead = np.sort(lead[~np.isnan(lead)]) / 7.0
        if lead.size:
            left.step(lead, np.arange(1, lead.size + 1) / lead.size, where="post", label=label)
    left.axvspan(7, 9, color="0.85", label="review: 7-9 weeks")
    left.set_xlabel("lead time: imaging relapse - first positive test (weeks)")
    left.set_ylabel("fraction of detected relapses")
    left.legend(fontsize=7, loc="lower right")
    y = np.arange(len(table))
    p, se = table["p_detect_before_imaging"], table["p_detect_before_imaging_se"]
    right.barh(y, p, xerr=1.96 * se, color="tab:blue", alpha=0.7, label="any positive")
    right.plot(table["p_detect_true"], y, "k|", markersize=14, label="with a tumour CTC")
    right.set_yticks(y, [str(i) for i in table.index], fontsize=7)
    right.set_xlim(0, 1)
    right.set_xlabel("P(positive test before imaging relapse)")
    right.legend(fontsize=7)
    fig.suptitle(
        f"{result.n_patients} virtual patients; imaging {result.imaging.label}, "
        f"detection {result.detection_cells:.0e} cells",
        fontsize=9,
    )
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
