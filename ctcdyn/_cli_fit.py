"""``ctcdyn fit`` and ``ctcdyn diagnose``: fits into run folders, and the gate they must pass."""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import (
    TaskID,
)
from rich.table import Table

from ._cli_common import console, fail, load_spec, progress_bar, start

#: Per-patient rows shown by ``diagnose`` without --all (the worst by R-hat and ESS).
WORST_SHOWN = 10


class Method(enum.StrEnum):
    nuts = "nuts"
    svi = "svi"


class Format(enum.StrEnum):
    netcdf = "netcdf"
    zarr = "zarr"


class ExecutorName(enum.StrEnum):
    local = "local"
    dask = "dask"


class MassMatrix(enum.StrEnum):
    diagonal = "diagonal"
    blocks = "blocks"


def fit(
    draws: Annotated[Path, typer.Option(help="Blood draws, one row per draw (.csv or .parquet).")],
    patients: Annotated[Path, typer.Option(help="Patients, one row per patient.")],
    out: Annotated[Path, typer.Option(help="Run folder to write (e.g. fits/RUN).")],
    model: Annotated[str, typer.Option(help="Bundled model name or a .toml spec.")] = "mbc",
    treatments: Annotated[Path | None, typer.Option(help="Treatments (optional).")] = None,
    per_patient: Annotated[
        bool, typer.Option(help="Fit each patient independently, the population fixed.")
    ] = False,
    population: Annotated[
        Path | None,
        typer.Option(help="--per-patient: take the population from this cohort fit's run."),
    ] = None,
    method: Annotated[Method, typer.Option(help="nuts (default) or svi (approximate).")] = (
        Method.nuts
    ),
    chains: Annotated[int, typer.Option(min=1)] = 4,
    warmup: Annotated[int, typer.Option(min=1)] = 1000,
    samples: Annotated[int, typer.Option(min=1)] = 1000,
    target_accept: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.8,
    max_tree_depth: Annotated[int, typer.Option(min=1)] = 10,
    mass_matrix: Annotated[
        MassMatrix,
        typer.Option(
            help="NUTS mass matrix: diagonal (Stan's default) or dense over a cohort fit's "
            "population-level parameters (blocks; docs/inference.md)."
        ),
    ] = MassMatrix.diagonal,
    svi_steps: Annotated[int, typer.Option(min=1)] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed of the fit.")] = 0,
    chunk_size: Annotated[int, typer.Option(min=1, help="Patients per chunk (--per-patient).")] = (
        500
    ),
    executor: Annotated[
        ExecutorName,
        typer.Option(help="Where fits run: this process, or a Dask cluster (docs/scale.md)."),
    ] = ExecutorName.local,
    scheduler: Annotated[
        str | None,
        typer.Option(help="--executor dask: scheduler address; without it a LocalCluster starts."),
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run in --out.")] = False,
    format: Annotated[Format, typer.Option(help="Posterior file format.")] = Format.netcdf,
    marker: Annotated[
        str | None,
        typer.Option(help="Joint model of this marker column and an event (docs/prognosis.md)."),
    ] = None,
    family: Annotated[
        str, typer.Option(help="--marker: gaussian, poisson or negbin.")
    ] = "gaussian",
    fixed_formula: Annotated[
        str | None, typer.Option("--fixed", help='--marker: e.g. "log_bili ~ sex * time".')
    ] = None,
    random_formula: Annotated[
        str, typer.Option("--random", help='--marker: random effects, e.g. "~ time".')
    ] = "~ 1",
    surv_formula: Annotated[
        str, typer.Option("--surv", help='--marker: hazard covariates, e.g. "~ sex".')
    ] = "~ 1",
    event_time: Annotated[
        str | None, typer.Option(help="--marker: event/censoring time column of --patients.")
    ] = None,
    event: Annotated[
        str | None, typer.Option(help="--marker: event indicator column (1 event, 0 censored).")
    ] = None,
    causes: Annotated[
        int, typer.Option(min=1, help="--marker: competing causes coded 1..K in --event.")
    ] = 1,
    assoc: Annotated[
        str, typer.Option(help="--marker: value, slope, area, or several: value,slope.")
    ] = "value",
    baseline: Annotated[
        str, typer.Option(help="--marker: baseline hazard: bspline, weibull or piecewise.")
    ] = "bspline",
    time_column: Annotated[
        str, typer.Option(help="--marker: time column of --draws (the formulas' time).")
    ] = "time",
    entry_time: Annotated[
        str | None, typer.Option(help="--marker: delayed-entry column (left truncation).")
    ] = None,
    event_upper: Annotated[
        str | None,
        typer.Option(help="--marker: upper bound of interval-censored events (column)."),
    ] = None,
    outcomes: Annotated[
        str | None,
        typer.Option(
            help="Fit the patients' endpoints with the counts through the mechanistic "
            "endpoint model: os, pfs or os,pfs (established disease), relapse (after "
            "surgery); columns: docs/prognosis.md."
        ),
    ] = None,
) -> None:
    """Fit a model to serial CTC counts; writes manifest, posterior and summary.csv into --out.

    With --outcomes os,pfs the patients' recorded death and progression enter the likelihood
    too, through the burden the same dynamics give (mechanistic survival); with --outcomes
    relapse, relapse after surgery as the first metastasis to reach a detectable size.

    With --marker, fits the joint model of any longitudinal marker (linear mixed trajectory
    from --fixed and --random formulas) and an event (hazard linked by --assoc) instead.

    The cohort model (default) is hierarchical. --per-patient fits every patient on their own
    with the population fixed (from the spec, or --population fits/RUN), batched in one
    compiled sampler. Every NUTS fit is checked against the diagnostics gate; a failed gate is
    recorded in the run and printed, and `ctcdyn diagnose RUN` exits non-zero for it.
    """
    start(cpu_devices=chains)  # one CPU device per chain: chains run side by side
    if marker is not None:
        from ._cli_joint import fit_joint_command

        return fit_joint_command(
            draws=draws,
            patients=patients,
            out=out,
            marker=marker,
            family=family,
            fixed=fixed_formula,
            random=random_formula,
            surv=surv_formula,
            event_time=event_time,
            event=event,
            causes=causes,
            assoc=assoc,
            baseline=baseline,
            time_column=time_column,
            entry_time=entry_time,
            event_upper=event_upper,
            chains=chains,
            warmup=warmup,
            samples=samples,
            target_accept=target_accept,
            max_tree_depth=max_tree_depth,
            seed=seed,
            overwrite=overwrite,
            unsupported={
                "--treatments": treatments is not None,
                "--per-patient": per_patient,
                "--population": population is not None,
                "--method svi": method != Method.nuts,
                "--resume": resume,
                "--outcomes": outcomes is not None,
                "--mass-matrix blocks": mass_matrix != MassMatrix.diagonal,
            },
        )
    from .data import InputError
    from .inference import NUTSSettings, Population, SVISettings, fit_run
    from .store import NotARunError, ResumeMismatchError, Run

    spec = load_spec(model)
    from .observation import OUTCOMES

    fitted_outcomes = tuple(o.strip() for o in (outcomes or "").split(",") if o.strip())
    unknown = [o for o in fitted_outcomes if o not in OUTCOMES]
    if unknown or (outcomes is not None and not fitted_outcomes):
        raise fail(
            f"--outcomes takes a comma-separated list of {', '.join(OUTCOMES)}; "
            f"got {escape(repr(outcomes))}"
        )
    if population is not None and not per_patient:
        raise fail("--population applies to --per-patient fits; add --per-patient")
    fixed = None
    if per_patient:
        if population is None:
            fixed = Population.from_spec(spec)
        else:
            try:
                earlier = Run.open(population)
            except NotARunError as err:
                raise fail(str(err)) from None
            if earlier.manifest.get("mode") != "cohort":
                raise fail(f"{population}: --population needs a cohort fit (not a per-patient one)")
            posterior = earlier.read_posterior()["posterior"].to_dataset()
            fixed = Population.from_posterior(spec, posterior, source=str(population))
    files = {"draws": draws, "patients": patients}
    if treatments is not None:
        files["treatments"] = treatments
    try:
        nuts = NUTSSettings(
            chains=chains,
            warmup=warmup,
            samples=samples,
            target_accept=target_accept,
            max_tree_depth=max_tree_depth,
            mass_matrix=str(mass_matrix),
        )
        svi = SVISettings(steps=svi_steps)
    except ValueError as err:
        raise fail(str(err)) from None
    if scheduler is not None and executor != ExecutorName.dask:
        raise fail("--scheduler applies to --executor dask; add --executor dask")
    runner = None
    if executor == ExecutorName.dask:
        from .inference import DaskExecutor
        from .inference._executor import import_distributed

        try:
            import_distributed()
        except ImportError as err:
            raise fail(escape(str(err))) from None
        runner = DaskExecutor(scheduler=scheduler)
    with progress_bar() as bar:
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                label = (
                    "chunks written"
                    if phase == "chunks"
                    else f"{phase} (iterations; first block compiles)"
                )
                tasks[phase] = bar.add_task(label, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        try:
            run = fit_run(
                spec,
                files,
                out,
                seed=seed,
                method=method.value,  # type: ignore[arg-type]
                nuts=nuts,
                svi=svi,
                population=fixed,
                chunk_size=chunk_size,
                executor=runner,
                resume=resume,
                overwrite=overwrite,
                format=format.value,  # type: ignore[arg-type]
                progress=progress,
                outcomes=fitted_outcomes,
            )
        except InputError as err:
            raise fail(escape(str(err))) from None
        except (FileExistsError, ResumeMismatchError) as err:
            raise fail(escape(str(err))) from None
    _report(run)


def _report(run) -> None:
    manifest = run.manifest
    status = manifest["status"]
    colour = {"passed": "green", "failed_gate": "bold red", "approximate": "yellow"}.get(
        status, "red"
    )
    console.print(f"run [bold]{run.path}[/]: status [{colour}]{status}[/]")
    diagnostics = manifest.get("diagnostics") or {}
    if status == "failed_gate":
        if manifest.get("mode") == "per_patient":
            console.print(
                "[bold red]The run failed the diagnostics gate; do not use the numbers of the "
                "patients named below.[/] Every patient is a fit of their own: reports and "
                "predictions re-check the gate per patient and withhold only those that fail."
            )
        else:
            console.print(
                "[bold red]The fit failed the diagnostics gate; do not use its numbers.[/]"
            )
        for line in diagnostics.get("failures", [])[:12]:
            console.print(f"  {escape(line)}")
        console.print(f"  details: ctcdyn diagnose {run.path}")
    elif status == "approximate":
        console.print("SVI is approximate: fine for a quick look, not for reporting.")
    for role, entry in (manifest.get("files") or {}).items():
        console.print(f"  {role:<10} {run.path / entry['path']}")


def diagnose(
    run_path: Annotated[Path, typer.Argument(metavar="RUN", help="A run folder (fits/RUN).")],
    all_rows: Annotated[
        bool, typer.Option("--all", help="Show every per-patient row, not only the worst.")
    ] = False,
) -> None:
    """Print a fit's per-parameter diagnostics; exit code 1 when it fails the gate.

    Gate: rank-normalised R-hat < 1.01, bulk and tail ESS >= 400, no divergences,
    E-BFMI >= 0.3. Also shows which parameters the data informed (prior-to-posterior
    contraction) and which stayed at their priors.
    """
    start()
    import pandas as pd

    from .diagnostics import Gate, check, contraction
    from .store import NotARunError, Run

    try:
        run = Run.open(run_path)
    except NotARunError as err:
        raise fail(str(err)) from None
    tree = run.read_posterior()
    summary = run.read_summary()
    gate = Gate()
    result = check(tree, summary, gate)
    # per-patient rows: the variables with a patient dim (not every bracketed name: a joint
    # model's beta[time] or b_sd[Intercept] are population parameters)
    posterior = tree["posterior"].to_dataset()
    per_patient = [str(v) for v, da in posterior.data_vars.items() if "patient" in da.dims]
    pattern = "^(?:" + "|".join(re.escape(v) for v in per_patient) + r")\["
    is_patient = (
        summary["parameter"].str.match(pattern)
        if per_patient
        else pd.Series(False, index=summary.index)
    )
    population_rows = summary[~is_patient]
    patient_rows = summary[is_patient]
    if not all_rows and len(patient_rows) > WORST_SHOWN:
        badness = (
            patient_rows["r_hat"].fillna(float("inf"))
            - patient_rows[["ess_bulk", "ess_tail"]].min(axis=1).fillna(0) / 1e6
        )
        patient_rows = patient_rows.loc[badness.sort_values(ascending=False).index[:WORST_SHOWN]]
    table = Table(
        title=f"{run.path}: {run.manifest['model']} ({run.manifest['mode']})",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("parameter", no_wrap=True)
    for col in ("mean", "q5", "q95", "r_hat", "ess_bulk", "ess_tail", "contraction"):
        table.add_column(col, justify="right", no_wrap=True)
    for _, row in [*population_rows.iterrows(), *patient_rows.iterrows()]:
        r_hat_bad = not row["r_hat"] < gate.max_r_hat
        ess_bad = not min(row["ess_bulk"], row["ess_tail"]) >= gate.min_ess_bulk
        mark = "[bold red]" if r_hat_bad or ess_bad else ""
        end = "[/]" if mark else ""
        table.add_row(
            f"{mark}{escape(row['parameter'])}{end}",
            f"{row['mean']:.3g}",
            f"{row['q5']:.3g}",
            f"{row['q95']:.3g}",
            f"{row['r_hat']:.3f}",
            f"{row['ess_bulk']:.0f}",
            f"{row['ess_tail']:.0f}",
            f"{row.get('contraction', float('nan')):.2f}",
        )
    # Never cut names or numbers to an ellipsis: on a narrow terminal the lines wrap instead.
    natural = Measurement.get(console, console.options.update(width=1000), table).maximum
    Console(width=max(console.width, natural)).print(table)
    if not all_rows and is_patient.sum() > WORST_SHOWN:
        console.print(
            f"(the {WORST_SHOWN} worst of {int(is_patient.sum())} per-patient rows; --all)"
        )
    if "prior" in tree.children:
        shrink = contraction(tree)
        informed = shrink.loc[shrink["informed"], "parameter"].tolist()
        prior_only = shrink.loc[shrink["prior_dominated"], "parameter"].tolist()
        console.print(f"informed by the data: {', '.join(informed) or 'none'}")
        console.print(
            f"[yellow]prior-dominated (the data say little):[/] {', '.join(prior_only) or 'none'}"
        )
    console.print(f"divergences: {result.divergences}; min E-BFMI: {result.min_bfmi:.2f}")
    if run.manifest["status"] == "approximate":
        console.print("[yellow]SVI fit: approximate, no MCMC diagnostics apply.[/]")
        raise typer.Exit(1)
    if result.passed:
        console.print("[green]gate passed[/]")
        return
    console.print("[bold red]gate failed:[/]")
    for line in result.failures:
        console.print(f"  {escape(line)}")
    raise typer.Exit(1)
