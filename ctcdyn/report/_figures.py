"""Report figures (matplotlib's object API with the Agg canvas: no pyplot, no global
backend change), as self-contained ``data:image/png;base64`` URIs.

Every figure reads in grey-scale print: series differ by marker, line style and hatching, not by
colour alone, and every axis carries its unit. Figures are drawn from plain arrays, so what is
plotted can be tested without looking at pixels.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from .._units import CELLS_PER_GRAM
from ._cellsearch import THRESHOLD

DPI = 130
_STYLE: Any = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
DAYS_PER_MONTH = 30.4375


def to_data_uri(fig: Figure) -> str:
    """The figure as a PNG data URI (no metadata: nothing in it names a web address)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _forecast_region(ax, last_draw: float, end: float) -> None:
    ax.axvspan(last_draw, end, facecolor="none", edgecolor="0.6", hatch="///", lw=0)
    ax.axvline(last_draw, color="0.3", ls=":", lw=0.8)


def counts_figure(
    *,
    draw_times: np.ndarray,
    singles: np.ndarray,
    clusters: np.ndarray,
    singles_censor: np.ndarray,
    band_times: np.ndarray | None = None,
    singles_band: Sequence[np.ndarray] | None = None,
    clusters_band: Sequence[np.ndarray] | None = None,
    last_draw: float | None = None,
    band_label: str = "",
    level: float = 0.9,
) -> str:
    """Observed single CTCs and clusters per draw, with the posterior predictive band.

    Args:
        draw_times: days from baseline of each real draw.
        singles, clusters: observed counts (NaN where missing).
        singles_censor: 0 exact, 1 ">= count", -1 "<= count".
        band_times: times of the band (None: no band, e.g. a failed fit).
        singles_band, clusters_band: (lower, median, upper) of the replicated counts.
        last_draw: day of the last draw; the region after it is hatched as the forecast.
        band_label: what the band is (draw volume, assay, clock time).
        level: credible level of the band.
    """
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(7.0, 3.4))
        axes = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
        fig.subplots_adjust(hspace=0.4)
        panels = (
            (axes[0], singles_band, "single CTCs\n(count per draw)"),
            (axes[1], clusters_band, "CTC clusters\n(count per draw)"),
        )
        end = float(np.nanmax(band_times)) if band_times is not None else None
        for ax, pband, ylabel in panels:
            if band_times is not None and pband is not None:
                lo, mid, hi = pband
                ax.fill_between(
                    band_times,
                    lo,
                    hi,
                    step="mid",
                    facecolor="0.85",
                    edgecolor="0.55",
                    lw=0.5,
                    label=f"{level:.0%} predictive interval{band_label}",
                )
                ax.plot(band_times, mid, color="0.35", ls="--", lw=1.0, label="predicted median")
                if last_draw is not None and end is not None:
                    _forecast_region(ax, last_draw, end)
            ax.set_ylabel(ylabel)
            ax.set_ylim(bottom=-0.5)
        exact = singles_censor == 0
        axes[0].plot(draw_times[exact], singles[exact], "o", color="black", ms=4, label="observed")
        for flag, marker, text in ((1, "^", "observed, at least"), (-1, "v", "observed, at most")):
            sel = singles_censor == flag
            if sel.any():
                axes[0].plot(
                    draw_times[sel], singles[sel], marker, mfc="white", mec="black", ms=5,
                    label=text,
                )  # fmt: skip
        axes[0].axhline(THRESHOLD, color="black", ls="-.", lw=0.8, label="CellSearch 5 / 7.5 mL")
        axes[1].plot(
            draw_times, clusters, "s", mfc="white", mec="black", ms=4, label="observed clusters"
        )
        tops = [np.nanmax(singles, initial=0), THRESHOLD + 1]
        cluster_tops = [np.nanmax(clusters, initial=0), 2.0]
        if singles_band is not None:
            tops.append(np.nanmax(singles_band[2], initial=0))
        if clusters_band is not None:
            cluster_tops.append(np.nanmax(clusters_band[2], initial=0))
        axes[0].set_ylim(top=float(np.nanmax(tops)) * 1.1 + 1)
        axes[1].set_ylim(top=float(np.nanmax(cluster_tops)) * 1.1 + 0.5)
        axes[1].set_xlabel("time from baseline (days)")
        # legends above each panel, never over the data
        for ax in axes:
            ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=4, frameon=False)
        fig.align_ylabels(axes)
        return to_data_uri(fig)


def _to_grams(cells: Any) -> Any:
    return np.asarray(cells, dtype=float) / CELLS_PER_GRAM


def _to_cells(grams: Any) -> Any:
    return np.asarray(grams, dtype=float) * CELLS_PER_GRAM


def burden_figure(
    *,
    times: np.ndarray,
    burden_90: Sequence[np.ndarray],
    burden_50: Sequence[np.ndarray],
    draw_times: np.ndarray,
    last_draw: float,
) -> str:
    """Inferred tumour burden (cells, log scale) with 50% and 90% credible bands."""
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(7.0, 2.1))
        ax = fig.subplots()
        ax.fill_between(times, burden_90[0], burden_90[2], facecolor="0.9", edgecolor="0.6",
                        lw=0.5, label="90% credible band")  # fmt: skip
        ax.fill_between(times, burden_50[0], burden_50[2], facecolor="0.7", edgecolor="0.4",
                        lw=0.5, hatch="...", label="50% credible band")  # fmt: skip
        ax.plot(times, burden_90[1], color="black", lw=1.2, label="posterior median")
        _forecast_region(ax, last_draw, float(np.max(times)))
        for t in draw_times:
            ax.axvline(t, ymax=0.04, color="black", lw=1.0)
        ax.set_yscale("log")
        ax.set_xlabel("time from baseline (days; ticks at the bottom: blood draws)")
        ax.set_ylabel("tumour burden (cells)")
        grams = ax.secondary_yaxis("right", functions=(_to_grams, _to_cells))
        grams.set_ylabel("(g, 1e9 cells ~ 1 g)")
        ax.spines["right"].set_visible(True)
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=3, frameon=False)
        return to_data_uri(fig)


def survival_figure(
    *,
    months: np.ndarray,
    median: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    level: float,
    endpoint: str,
) -> str:
    """P(event-free) over the coming months with its credible band."""
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(3.6, 2.3))
        ax = fig.subplots()
        ax.fill_between(months, 100 * lower, 100 * upper, facecolor="0.85", edgecolor="0.5",
                        lw=0.5, hatch="//", label=f"{level:.0%} credible band")  # fmt: skip
        ax.plot(months, 100 * median, color="black", lw=1.2, label="posterior median")
        ax.set_ylim(0, 100)
        ax.set_xlabel("months from the latest draw")
        ax.set_ylabel(f"{endpoint} (%)")
        ax.legend(loc="lower left", frameon=False)
        return to_data_uri(fig)


def histogram_figure(
    values: np.ndarray, *, xlabel: str, log: bool = False, reference: float | None = None
) -> str:
    """Distribution of one per-patient quantity across a cohort."""
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(3.3, 2.0))
        ax = fig.subplots()
        x = np.asarray(values, dtype=float)
        x = x[np.isfinite(x)]
        bins: Any
        if log:
            x = x[x > 0]
            bins = np.geomspace(x.min(), x.max(), 16) if x.size and x.min() < x.max() else 10
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            bins = 15
        ax.hist(x, bins=bins, color="0.75", edgecolor="black", lw=0.5, hatch="//")
        if reference is not None:
            ax.axvline(reference, color="black", ls="--", lw=1.0, label="reference")
            ax.legend(frameon=False)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("patients (count)")
        return to_data_uri(fig)


def coverage_figure(nominal: np.ndarray, singles: np.ndarray, clusters: np.ndarray) -> str:
    """Observed coverage of central predictive intervals against their nominal level."""
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(3.3, 2.6))
        ax = fig.subplots()
        ax.plot([0, 100], [0, 100], color="0.5", ls=":", lw=1.0, label="ideal")
        ax.plot(100 * nominal, 100 * singles, "o-", color="black", ms=3, label="single CTCs")
        ax.plot(100 * nominal, 100 * clusters, "s--", color="0.35", mfc="white", ms=3,
                label="clusters")  # fmt: skip
        ax.set_xlabel("nominal central interval (%)")
        ax.set_ylabel("observed counts inside (%)")
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.legend(loc="upper left", frameon=False)
        return to_data_uri(fig)
