"""``ctcdyn leadtime``: CTC monitoring schedules against imaging relapse after surgery."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ._cli_common import console, err_console, fail, load_spec, progress_bar, start

#: --compare keys and the MonitoringSchedule field each sets.
_COMPARE_KEYS = {
    "name": "name",
    "interval": "interval_days",
    "hour": "clock_hour",
    "clock-hour": "clock_hour",
    "volume": "volume_ml",
    "assay": "assay",
    "threshold": "threshold",
    "horizon": "horizon_days",
    "first-day": "first_day",
}


def _parse_compare(text: str) -> dict[str, Any]:
    """``"name=night,hour=4,volume=7.5"`` -> MonitoringSchedule field overrides."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in _COMPARE_KEYS:
            raise fail(
                f"--compare {text!r}: expected key=value pairs with keys "
                f"{', '.join(_COMPARE_KEYS)}; e.g. --compare 'name=night,hour=4'"
            )
        field = _COMPARE_KEYS[key]
        value = value.strip()
        if field in ("name", "assay"):
            out[field] = value
        else:
            try:
                number = float(value)
            except ValueError:
                raise fail(f"--compare {text!r}: {key} must be a number, got {value!r}") from None
            out[field] = int(number) if field == "threshold" else number
    return out


def _cell(estimate: float, se: float, scale: float = 1.0, digits: int = 2) -> str:
    if math.isnan(estimate):
        return "-"
    if math.isnan(se):
        return f"{estimate / scale:.{digits}f}"
    return f"{estimate / scale:.{digits}f} ± {se / scale:.{digits}f}"


def _print_table(result, title: str) -> None:
    table = result.summary()
    out = Table(title=title)
    out.add_column("quantity (± MC standard error)")
    for label in table.index:
        out.add_column(escape(str(label)), justify="right")
    rows = [
        ("P(relapse within horizon)", "p_relapse", 1.0),
        ("P(positive test before imaging)", "p_detect_before_imaging", 1.0),
        ("P(no positive test before relapse)", "p_missed", 1.0),
        ("P(positive holding a tumour CTC)", "p_detect_true", 1.0),
        ("median lead time (weeks)", "median_lead_days", 7.0),
        ("  lower quartile (weeks)", "q25_lead_days", 7.0),
        ("  upper quartile (weeks)", "q75_lead_days", 7.0),
        ("median lead, tumour-CTC positive (weeks)", "median_true_lead_days", 7.0),
        ("false positives per patient-year (cured)", "false_positives_per_year", 1.0),
    ]
    for name, column, scale in rows:
        cells = [
            _cell(float(r[column]), float(r[f"{column}_se"]), scale) for _, r in table.iterrows()
        ]
        out.add_row(name, *cells)
    out.add_row(
        "patients / relapsed / cured",
        *[
            f"{r['n_patients']:.0f} / {r['n_relapsed']:.0f} / {r['n_cured']:.0f}"
            for _, r in table.iterrows()
        ],
    )
    console.print(out)


def leadtime(
    model: Annotated[str, typer.Option(help="Bundled model name or a .toml spec.")] = "adjuvant",
    scenario: Annotated[str, typer.Option(help="Scenario of the spec (surgery, follow-up).")] = (
        "default"
    ),
    fit: Annotated[
        Path | None, typer.Option(help="A fit's run folder: simulate from a patient's posterior.")
    ] = None,
    patient: Annotated[str | None, typer.Option(help="--fit: the patient's id.")] = None,
    interval: Annotated[
        float | None, typer.Option(help="Days between draws [scenario's spacing].")
    ] = None,
    clock_hour: Annotated[
        float | None, typer.Option(help="Clock hour of the draws, 0-24 [scenario's].")
    ] = None,
    volume: Annotated[
        float | None, typer.Option(help="Blood processed per test, mL [scenario's].")
    ] = None,
    assay: Annotated[str | None, typer.Option(help="Assay name [scenario's].")] = None,
    threshold: Annotated[int, typer.Option(min=1, help="Positive at >= this many CTCs.")] = 1,
    horizon: Annotated[
        float | None, typer.Option(help="Days of monitoring [scenario's follow-up].")
    ] = None,
    imaging_interval: Annotated[
        float, typer.Option(min=0.0, help="Days between scans; 0 = continuous (clinical).")
    ] = 0.0,
    detection_cells: Annotated[
        float | None, typer.Option(help="Burden a scan sees (cells) [spec's detection_burden].")
    ] = None,
    compare: Annotated[
        list[str] | None,
        typer.Option(
            help="A schedule to compare, as overrides of the one above, e.g. "
            "'name=night,hour=4' or 'name=leukapheresis,assay=leukapheresis,volume=2500'. "
            "Repeat for more."
        ),
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Write the comparison figure here (PNG, PDF, SVG).")
    ] = None,
    n: Annotated[int, typer.Option(min=1, help="Virtual patients (MC error ~ 1/sqrt(n)).")] = (
        10_000
    ),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    from_prior: Annotated[
        bool, typer.Option(help="Draw population-level parameters from their priors.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    suggestion: Annotated[
        Path | None,
        typer.Option(
            help="Write the first schedule as a MonitoringSuggestion JSON, for "
            "`ctcdyn report --monitoring` (the others appear in its rationale)."
        ),
    ] = None,
) -> None:
    """MRD lead time: when does a CTC test schedule turn positive before imaging relapse?

    Simulates residual disease after curative surgery with the hybrid stochastic engine and
    reports, per schedule, the lead-time distribution (imaging relapse - first positive test),
    P(positive before imaging), false positives per patient-year from the assay background,
    each with its Monte-Carlo standard error. With --compare, schedules are simulated on the
    same virtual patients and shown side by side (table, and a figure with --plot).
    """
    start()
    import jax

    from .mrd import ImagingSchedule, default_schedule, lead_time
    from .mrd._posterior import posterior_values

    spec = load_spec(model)
    try:
        base = default_schedule(spec, scenario)
        given = dict(
            interval_days=interval,
            clock_hour=clock_hour,
            volume_ml=volume,
            assay=assay,
            horizon_days=horizon,
        )
        overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        if assay is not None and volume is None:
            overrides["volume_ml"] = None  # the assay's own default volume
        if interval is not None:
            overrides["first_day"] = None  # one interval after surgery
        base = dataclasses.replace(base, threshold=threshold, **overrides)
        schedules = [dataclasses.replace(base, **_parse_compare(c)) for c in compare or []]
        schedules = schedules or [base]
        imaging = ImagingSchedule(interval_days=imaging_interval, detection_cells=detection_cells)
    except ValueError as err:
        raise fail(escape(str(err))) from None

    key = jax.random.key(seed)
    values = None
    source = f"{spec.name}/{scenario}, {'prior' if from_prior else 'typical'} population"
    if fit is not None or patient is not None:
        if fit is None or patient is None:
            raise fail("--fit and --patient go together: the run folder and the patient's id")
        from .store import NotARunError, Run

        try:
            run = Run.open(fit)
        except NotARunError as err:
            raise fail(escape(str(err))) from None
        posterior = run.read_posterior()["posterior"].to_dataset()
        fixed = (run.manifest.get("sampler") or {}).get("population", {}).get("values")
        try:
            values = posterior_values(
                spec, posterior, patient, n, jax.random.fold_in(key, 1), population=fixed
            )
        except ValueError as err:
            raise fail(escape(str(err))) from None
        source = f"posterior of patient {patient} in {fit}"

    with progress_bar("[bold]simulating[/] {task.description}") as bar:
        task = bar.add_task("patients (the first chunk compiles)", total=n)
        try:
            result = lead_time(
                spec,
                schedules,
                key,
                n_patients=n,
                imaging=imaging,
                scenario=scenario,
                population="prior" if from_prior else "typical",
                values=values,
                progress=lambda done: bar.update(task, completed=done),
            )
        except ValueError as err:
            raise fail(escape(str(err))) from None
    if plot is not None:
        from .mrd._plot import plot_comparison

        plot_comparison(result, plot)
    if suggestion is not None:
        from .mrd import monitoring_suggestion

        try:
            suggested = monitoring_suggestion(result, source=source)
        except ValueError as err:
            raise fail(escape(str(err))) from None
        suggestion.parent.mkdir(parents=True, exist_ok=True)
        suggestion.write_text(json.dumps(suggested.to_dict(), indent=2), encoding="utf-8")
        (err_console if json_out else console).print(
            f"monitoring suggestion: {suggestion} (for `ctcdyn report --monitoring`)"
        )
    if json_out:
        payload = result.to_dict()
        payload["source"] = source
        typer.echo(json.dumps(payload, indent=2))
        return
    _print_table(
        result,
        f"MRD lead time: {n} virtual patients ({escape(source)}); imaging "
        f"{result.imaging.label}, relapse at {result.detection_cells:.0e} cells",
    )
    if plot is not None:
        console.print(f"figure: {plot}")
