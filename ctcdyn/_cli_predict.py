"""``ctcdyn predict``: one patient's posterior survival curve from a joint fit, updated with any
draws taken since the fit (dynamic prediction, no refit of the cohort)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ._cli_common import console, fail, start

#: Rows of the printed table (the JSON and the plot hold the whole curve).
TABLE_ROWS = 6


def predict(
    run_path: Annotated[
        Path,
        typer.Argument(
            metavar="RUN", help="A joint fit (--marker ...) or a count fit with --outcomes."
        ),
    ],
    patient: Annotated[str, typer.Option(help="Patient id (in the fit, or in --patients).")],
    horizon: Annotated[
        float, typer.Option(min=1.0, help="Days after the landmark to predict to.")
    ] = 180.0,
    draws: Annotated[
        Path | None,
        typer.Option(help="New marker draws (CSV/Parquet, the fit's draws columns)."),
    ] = None,
    patients: Annotated[
        Path | None,
        typer.Option(help="Covariates of a patient not in the fit (the patients columns)."),
    ] = None,
    landmark: Annotated[
        float | None,
        typer.Option(help="Condition on survival to this time (data's unit); default: last draw."),
    ] = None,
    time_unit: Annotated[
        str, typer.Option(help="Unit of the data's time column: days, weeks, months or years.")
    ] = "days",
    endpoint: Annotated[
        str | None, typer.Option(help="The event in words, e.g. 'overall survival'.")
    ] = None,
    level: Annotated[float, typer.Option(min=0.5, max=0.99, help="Credible level.")] = 0.9,
    samples: Annotated[int, typer.Option(min=50, help="Posterior draws used.")] = 500,
    seed: Annotated[int, typer.Option(help="Seed of the random effects' sampling.")] = 0,
    out: Annotated[
        Path | None,
        typer.Option(help="Write the curve as JSON for `ctcdyn report --survival`."),
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a plot of the curve (PNG/PDF).")] = None,
    ignore_gate: Annotated[
        bool,
        typer.Option("--ignore-gate", help="Predict even from a fit that failed its gate."),
    ] = False,
) -> None:
    """Posterior probability that PATIENT stays event-free over the next HORIZON days.

    Conditional on no event up to the landmark (the latest draw), using the patient's draws up
    to then; --draws adds draws taken since the fit, so the prediction updates without
    refitting. Prints the curve with its credible band; --out writes it for the patient report.

    For a count fit with --outcomes the curve comes from the fitted dynamics (mechanistic
    survival), from the patient's recorded last contact; --draws, --patients and --landmark
    do not apply there.
    """
    start()
    import jax

    from .data import InputError
    from .prognosis import TIME_UNITS, PredictionError, open_joint_run, predict_survival
    from .prognosis._data import read_table

    if time_unit not in TIME_UNITS:
        raise fail(f"--time-unit must be one of {', '.join(TIME_UNITS)}, got {time_unit!r}")
    if _fitted_outcomes(run_path):
        from ._cli_predict_counts import predict_from_counts

        return predict_from_counts(
            run_path,
            patient,
            horizon=horizon,
            level=level,
            samples=samples,
            seed=seed,
            out=out,
            plot=plot,
            ignore_gate=ignore_gate,
            unsupported={
                "--draws": draws is not None,
                "--patients": patients is not None,
                "--landmark": landmark is not None,
            },
        )

    try:
        fit = open_joint_run(run_path)
        new_draws = read_table(draws) if draws is not None else None
        new_patients = read_table(patients) if patients is not None else None
    except (PredictionError, InputError) as err:
        raise fail(escape(str(err))) from None
    status = json.loads((run_path / "manifest.json").read_text())["status"]
    if status != "passed" and not ignore_gate:
        raise fail(
            f"the fit in {run_path} has status {status!r}: its posterior is not to be trusted, "
            f"so no prediction is made. See `ctcdyn diagnose {run_path}`; --ignore-gate "
            "predicts anyway (for model development, never for a patient).",
            code=1,
        )
    days = TIME_UNITS[time_unit]
    try:
        prediction = predict_survival(
            fit,
            patient,
            jax.random.key(seed),
            horizon=horizon / days,
            landmark=landmark,
            draws=new_draws,
            patients=new_patients,
            samples=samples,
            days_per_unit=days,
        )
    except (PredictionError, InputError) as err:
        raise fail(escape(str(err))) from None
    spec = fit.data.spec
    endpoint = endpoint or f"event-free survival ({spec.event})"
    band = prediction.band(level)
    table = Table(
        title=f"{patient}: P(no event) after t0 = {prediction.landmark:g} {time_unit} "
        f"({prediction.draws_used} draws used)"
    )
    for name in ("days after t0", "median", f"{level:.0%} band", "mean"):
        table.add_column(name, justify="right")
    for i in _rows(len(band)):
        r = band.iloc[i]
        table.add_row(
            f"{r['days']:.0f}",
            f"{r['median']:.3f}",
            f"{r['lower']:.3f} to {r['upper']:.3f}",
            f"{r['mean']:.3f}",
        )
    console.print(table)
    if status != "passed":
        console.print(f"[bold red]From a fit with status {status!r}: not for patient care.[/]")
    if not prediction.reliable:
        console.print(
            "[bold yellow]warning: the importance sampling of this patient's random effects was "
            "poor for many posterior draws; the band may be too narrow.[/]"
        )
    f = spec.formulas
    model = (
        f"joint model ({run_path.name}): {spec.family} {f.marker} ~ {f.fixed_rhs}, random "
        f"{f.random_rhs}; hazard {spec.baseline.kind} baseline x exp({f.surv_rhs} + "
        f"{', '.join(spec.assoc)} of the marker trajectory); "
        f"{prediction.survival.shape[0]} posterior draws"
    )
    if status != "passed":  # --ignore-gate: the report shows this line with the curve
        model += f"; FIT STATUS {status.upper()}: NOT FOR PATIENT CARE"
    if out is not None:
        summary = prediction.summary(endpoint=endpoint, model=model, level=level)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary.to_dict(), indent=2), encoding="utf-8")
        console.print(f"  curve  {out} (for `ctcdyn report --survival`)")
    if plot is not None:
        from .prognosis._predict_plot import plot_prediction

        plot_prediction(prediction, endpoint=endpoint, level=level, path=plot)
        console.print(f"  plot   {plot}")


def _fitted_outcomes(run_path: Path) -> bool:
    """Whether ``run_path`` is a count fit that included the endpoints (``--outcomes``)."""
    try:
        manifest = json.loads((run_path / "manifest.json").read_text())
    except (OSError, ValueError):
        return False  # not a run: open_joint_run says so
    return bool((manifest.get("sampler") or {}).get("outcomes"))


def _rows(n: int) -> list[int]:
    """Evenly spaced rows of the curve, ending at the horizon (the landmark row is always 1)."""
    step = max((n - 1) // TABLE_ROWS, 1)
    rows = list(range(step, n, step))
    return rows if rows and rows[-1] == n - 1 else [*rows, n - 1]
