"""``ctcdyn report``: a patient's posterior report, or a cohort summary, from a run folder."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ._cli_common import console, fail, start


def _formats(text: str) -> list[str]:
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    if not formats or set(formats) - {"html", "pdf"}:
        raise fail(f"--format takes html, pdf or html,pdf; got {text!r}")
    return list(dict.fromkeys(formats))


def _optional_input(path: Path | None, cls):
    if path is None:
        return None
    try:
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as err:
        raise fail(escape(f"{path}: not a valid {cls.__name__} ({err})")) from None


def report(
    run_path: Annotated[Path, typer.Argument(metavar="RUN", help="A run folder (fits/RUN).")],
    out: Annotated[Path, typer.Option(help="Folder to write the report files into.")],
    patient: Annotated[
        str | None, typer.Option(help="Patient id: write this patient's report.")
    ] = None,
    cohort: Annotated[
        bool, typer.Option("--cohort", help="Write the cohort summary instead.")
    ] = False,
    format: Annotated[str, typer.Option(help="html, pdf, or html,pdf.")] = "html,pdf",
    survival: Annotated[
        Path | None,
        typer.Option(help="JSON of the patient's SurvivalSummary (from a survival fit)."),
    ] = None,
    monitoring: Annotated[
        Path | None,
        typer.Option(help="JSON of an MRD MonitoringSuggestion (post-surgery patients)."),
    ] = None,
    horizon_days: Annotated[
        float, typer.Option(min=28.0, help="Forecast horizon after the latest draw (days).")
    ] = 84.0,
    samples: Annotated[int, typer.Option(min=10, help="Posterior draws used for bands.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the forecast's simulated counts.")] = 0,
) -> None:
    """Write a posterior report: one patient (--patient ID) or the cohort (--cohort).

    The HTML file is self-contained (figures and styles inline, no external requests); the PDF
    is made from it with WeasyPrint. A fit that failed its diagnostics gets a prominent warning
    and no estimates. Survival and MRD sections show results passed in with --survival and
    --monitoring, and say "not computed for this run" otherwise. Research use only.
    """
    if (patient is None) == (not cohort):
        raise fail("give exactly one of --patient ID or --cohort")
    formats = _formats(format)
    start()
    import jax

    from .report import (
        MissingDependencyError,
        MonitoringSuggestion,
        ReportError,
        SurvivalSummary,
        cohort_report,
        open_fitted,
        patient_report,
        write_report,
    )

    if cohort and (survival is not None or monitoring is not None):
        raise fail("--survival and --monitoring apply to a patient report (--patient ID)")
    survival_input = _optional_input(survival, SurvivalSummary)
    monitoring_input = _optional_input(monitoring, MonitoringSuggestion)
    try:
        fitted = open_fitted(run_path)
        if patient is not None:
            content = patient_report(
                fitted,
                patient,
                jax.random.key(seed),
                survival=survival_input,
                monitoring=monitoring_input,
                horizon_days=horizon_days,
                n_samples=samples,
            )
            template, stem = "patient.html.j2", "patient-" + re.sub(r"[^\w.-]", "_", patient)
        else:
            content = cohort_report(fitted)  # type: ignore[assignment]
            template, stem = "cohort.html.j2", "cohort"
        written = write_report(content, template, out, stem, formats)
    except (ReportError, MissingDependencyError) as err:
        raise fail(escape(str(err))) from None
    if not (fitted.fit_ok if patient is None else fitted.fit_ok_for(patient)):
        console.print(
            f"[bold red]The fit's status is {fitted.status}: the report shows the warning and "
            "no estimates.[/]"
        )
    elif not fitted.fit_ok:
        console.print(
            f"The run's status is {fitted.status} (other patients' fits); {patient}'s own "
            "per-patient fit passed the gate, so the report shows its estimates."
        )
    for kind, path in written.items():
        console.print(f"  {kind:<5} {path}")
