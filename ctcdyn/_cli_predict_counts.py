"""``ctcdyn predict`` for a count fit that included the endpoints (``ctcdyn fit --outcomes``).

The curve comes from the fitted dynamics through the mechanistic endpoint model
(:func:`ctcdyn.report._survival.mechanistic_survival`): the patient's posterior burden path, and
the probability that it stays below the patient's progression threshold and lethal burden, from
the last contact on. New draws need a refit here (the joint model's dynamic update re-draws
random effects; a count fit's patients are not random effects of a fixed population).
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from ._cli_common import console, fail


def predict_from_counts(
    run_path: Path,
    patient: str,
    *,
    horizon: float,
    level: float,
    samples: int,
    seed: int,
    out: Path | None,
    plot: Path | None,
    ignore_gate: bool,
    unsupported: dict[str, bool],
) -> None:
    """Print (and write) the patient's mechanistic survival curve; exits like ``predict``."""
    import jax

    from .report import ReportError, open_fitted
    from .report._survival import NoSurvival, mechanistic_survival

    given = [name for name, used in unsupported.items() if used]
    if given:
        raise fail(
            f"{', '.join(given)}: not for a count fit with --outcomes ({run_path}); its curve "
            "starts at the patient's recorded last contact. Refit with the new data."
        )
    try:
        fitted = open_fitted(run_path)
        fitted.patient_index(patient)
    except ReportError as err:
        raise fail(escape(str(err))) from None
    if not fitted.fit_ok_for(patient) and not ignore_gate:
        raise fail(
            f"the fit of {patient} in {run_path} fails the diagnostics gate (run status "
            f"{fitted.status!r}): its posterior is not to be trusted, so no prediction is "
            f"made. See `ctcdyn diagnose {run_path}`; "
            "--ignore-gate predicts anyway (for model development, never for a patient).",
            code=1,
        )
    curve = mechanistic_survival(
        fitted, patient, jax.random.key(seed), horizon_days=horizon, level=level, n_samples=samples
    )
    if isinstance(curve, NoSurvival) or curve is None:
        raise fail(escape(curve.reason if curve else "the fit has no endpoints"), code=1)
    if not fitted.fit_ok_for(patient):
        from dataclasses import replace

        curve = replace(curve, model=f"{curve.model}; FIT STATUS {fitted.status.upper()}: "
                        "NOT FOR PATIENT CARE")  # fmt: skip
    table = Table(title=f"{patient}: {curve.endpoint}; days from the latest draw")
    for name in ("days", "median", f"{level:.0%} band"):
        table.add_column(name, justify="right")
    n = len(curve.times_days)
    for i in sorted({0, *range(n // 6, n, max(n // 6, 1)), n - 1}):
        table.add_row(
            f"{curve.times_days[i]:.0f}",
            f"{curve.median[i]:.3f}",
            f"{curve.lower[i]:.3f} to {curve.upper[i]:.3f}",
        )
    console.print(table)
    console.print(f"model: {escape(curve.model)}")
    if not fitted.fit_ok_for(patient):
        console.print(f"[bold red]Fit status {fitted.status!r}: not for patient care.[/]")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(curve.to_dict(), indent=2), encoding="utf-8")
        console.print(f"  curve  {out} (for `ctcdyn report --survival`)")
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5, 3.2))
        ax = fig.subplots()
        ax.fill_between(curve.times_days, curve.lower, curve.upper, color="0.8",
                        label=f"{level:.0%} credible band")  # fmt: skip
        ax.plot(curve.times_days, curve.median, color="black", label="posterior median")
        ax.set(xlabel="days from the latest draw", ylabel=f"{curve.endpoint} probability")
        ax.set_ylim(0, 1)
        ax.legend(frameon=False)
        fig.tight_layout()
        plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(plot, dpi=150)
        console.print(f"  plot   {plot}")
