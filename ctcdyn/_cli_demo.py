"""``ctcdyn demo``: the main job end to end on bundled example data, small enough for a laptop.

Each step calls the same command a user would type, so the demo's output is what those
commands print; the equivalent command lines are shown as it goes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from ._cli_common import console, start

#: Cohort fit: 4 chains of 500 + 500 iterations; 300 + 300 left R-hat and ESS borderline for
#: kill_rate on the bundled seed, and target acceptance 0.9 left one divergent transition after
#: a change of rounding (docs/inference.md, "Divergences in small mbc cohorts").
DEMO_FIT = {"chains": 4, "warmup": 500, "samples": 500, "target_accept": 0.95}
#: Per-patient fits (the population fixed at the spec's literature priors, as for a new patient
#: in clinic), with the recorded death and progression fitted jointly with the counts, so the
#: patient report can show a survival curve: no hierarchical funnel; 500 + 1000 iterations at
#: target acceptance 0.95 (docs/prognosis.md, "Sampling" for what they give on this cohort).
PATIENT_FIT = {
    "chains": 4,
    "warmup": 500,
    "samples": 1000,
    "target_accept": 0.95,
    "outcomes": "os,pfs",
}
#: MRD comparison on the same virtual patients: the adjuvant scenario's default schedule
#: (quarterly at 09:00), the same at 04:00, and monthly (Monte-Carlo errors on every number).
MRD_PATIENTS = 2000
MRD_COMPARE = ("name=scenario-default", "name=night,hour=4", "name=monthly,interval=30")


def _options(settings: dict) -> str:
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in settings.items())


def _step(title: str, command: str) -> None:
    console.rule(f"[bold]{title}")
    console.print(f"[dim]$ {command}[/]")


def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's outputs.")] = Path("out/demo"),
    patients: Annotated[
        int, typer.Option(min=2, help="Virtual patients to simulate and fit.")
    ] = 12,
    seed: Annotated[int, typer.Option(help="Seed of the simulation and the fit.")] = 2026,
) -> None:
    """Simulate a small mbc cohort, fit it, diagnose it, write reports, compare MRD schedules."""
    from ._cli_fit import diagnose, fit
    from ._cli_leadtime import leadtime
    from ._cli_report import report
    from .cli import simulate

    # one CPU device per chain (as `ctcdyn fit` sets up), before the simulation starts JAX
    start(cpu_devices=int(DEMO_FIT["chains"]))
    cohort, run, reports, mrd = out / "cohort", out / "fit", out / "reports", out / "mrd"
    per_patient = out / "fit-per-patient"
    console.print(
        f"ctcdyn demo: {patients} virtual patients of the bundled metastatic-breast-cancer model "
        "(models/mbc.toml; CellSearch draws every 4 weeks on a new line of therapy)."
    )
    _step(
        "1. Simulate a virtual cohort",
        f"ctcdyn simulate --model mbc --patients {patients} --seed {seed} --out {cohort}",
    )
    simulate(model="mbc", out=cohort, patients=patients, seed=seed)

    _step(
        "2. Fit the hierarchical cohort model (NUTS)",
        f"ctcdyn fit --model mbc --draws {cohort}/draws.csv --patients {cohort}/patients.csv "
        f"--treatments {cohort}/treatments.csv --out {run} {_options(DEMO_FIT)} "
        f"--seed {seed} --overwrite",
    )
    fit(
        draws=cohort / "draws.csv",
        patients=cohort / "patients.csv",
        treatments=cohort / "treatments.csv",
        out=run,
        model="mbc",
        seed=seed,
        overwrite=True,
        **DEMO_FIT,  # type: ignore[arg-type]
    )

    _step("3. Diagnose the fit", f"ctcdyn diagnose {run}")
    try:
        diagnose(run_path=run)
        passed = True
    except typer.Exit as exit_:
        passed = exit_.exit_code == 0
    if not passed:
        console.print(
            "[bold yellow]The fit failed the diagnostics gate: its numbers are not to be "
            "trusted (the run records this).[/]"
        )

    _step(
        "4. Fit each patient alone, the population fixed at the spec's priors",
        f"ctcdyn fit --model mbc --per-patient --draws {cohort}/draws.csv "
        f"--patients {cohort}/patients.csv --treatments {cohort}/treatments.csv "
        f"--out {per_patient} {_options(PATIENT_FIT)} --seed {seed} --overwrite",
    )
    fit(
        draws=cohort / "draws.csv",
        patients=cohort / "patients.csv",
        treatments=cohort / "treatments.csv",
        out=per_patient,
        model="mbc",
        per_patient=True,
        seed=seed,
        overwrite=True,
        **PATIENT_FIT,  # type: ignore[arg-type]
    )

    # a patient still alive at the end of follow-up, as a clinician would see one: their
    # report can look ahead (survival from the last contact)
    table = pd.read_csv(cohort / "patients.csv")
    alive = table[table["os_event"] == 0]
    first = str((alive if len(alive) else table)["patient_id"].iloc[0])
    _step("5. Cohort report (hierarchical fit)", f"ctcdyn report {run} --cohort --out {reports}")
    report(run_path=run, out=reports, cohort=True)
    _step(
        f"6. One patient's report for a clinician ({first}, per-patient fit)",
        f"ctcdyn report {per_patient} --patient {first} --out {reports}",
    )
    report(run_path=per_patient, out=reports, patient=first)

    _step(
        "7. MRD: monitoring schedules after curative surgery (adjuvant model)",
        f"ctcdyn leadtime --model adjuvant --n {MRD_PATIENTS} --seed {seed} "
        + " ".join(f"--compare '{c}'" for c in MRD_COMPARE)
        + f" --plot {mrd}/schedules.png",
    )
    mrd.mkdir(parents=True, exist_ok=True)
    leadtime(
        model="adjuvant",
        n=MRD_PATIENTS,
        seed=seed,
        compare=list(MRD_COMPARE),
        plot=mrd / "schedules.png",
    )

    console.rule("[bold]Outputs")
    console.print(f"virtual cohort (the input format of `ctcdyn fit`): {cohort}/")
    console.print(f"truth to compare with the fit: {cohort}/truth.csv")
    console.print(f"cohort fit: {run}/ (manifest.json, posterior, summary.csv)")
    console.print(f"per-patient fits: {per_patient}/")
    console.print(f"reports (HTML and PDF): {reports}/")
    console.print(f"MRD schedule comparison: {mrd}/schedules.png")
