"""A plot of one patient's predicted survival curve with its credible band."""

from __future__ import annotations

from pathlib import Path

from ._predict import SurvivalPrediction


def plot_prediction(
    prediction: SurvivalPrediction,
    *,
    endpoint: str,
    level: float = 0.9,
    path: Path | str | None = None,
    ax=None,
):
    """Median curve, ``level`` band and posterior mean against days after the landmark.

    Readable in grey-scale print (band shaded, mean dashed). Returns the axes; writes the
    figure to ``path`` when given.
    """
    import matplotlib.pyplot as plt

    band = prediction.band(level)
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(6.0, 3.6), layout="constrained")
    ax.fill_between(
        band["days"], band["lower"], band["upper"], color="0.8", label=f"{level:.0%} band"
    )
    ax.plot(band["days"], band["median"], color="0.1", lw=2, label="median")
    ax.plot(band["days"], band["mean"], color="0.35", lw=1.2, ls="--", label="mean")
    ax.set(
        xlabel="days after the latest draw",
        ylabel="probability of no event",
        ylim=(0.0, 1.02),
        xlim=(0.0, float(band["days"].iloc[-1])),
        title=f"{prediction.patient_id}: {endpoint}",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", frameon=False)
    if own and path is not None:
        fig.savefig(path, dpi=150)
        plt.close(fig)
    return ax
