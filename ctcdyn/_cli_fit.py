"""``ctcdyn fit`` and ``ctcdyn diagnose``: fits into run folders, and the gate they must pass."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ._cli_common import console, err_console, fail, load_spec, start

#: Per-patient rows shown by ``diagnose`` without --all (the worst by R-hat and ESS).
WORST_SHOWN = 10


class Method(enum.StrEnum):
    nuts = "nuts"
    svi = "svi"


class Format(enum.StrEnum):
    netcdf = "netcdf"
    zarr = "zarr"


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
    svi_steps: Annotated[int, typer.Option(min=1)] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed of the fit.")] = 0,
    chunk_size: Annotated[int, typer.Option(min=1, help="Patients per chunk (--per-patient).")] = (
        500
    ),
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run in --out.")] = False,
    format: Annotated[Format, typer.Option(help="Posterior file format.")] = Format.netcdf,
) -> None:
    """Fit a model to serial CTC counts; writes manifest, posterior and summary.csv into --out.

    The cohort model (default) is hierarchical. --per-patient fits every patient on their own
    with the population fixed (from the spec, or --population fits/RUN), batched in one
    compiled sampler. Every NUTS fit is checked against the diagnostics gate; a failed gate is
    recorded in the run and printed, and `ctcdyn diagnose RUN` exits non-zero for it.
    """
    start()
    from .data import InputError
    from .inference import NUTSSettings, Population, SVISettings, fit_run
    from .store import NotARunError, ResumeMismatchError, Run

    spec = load_spec(model)
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
        )
        svi = SVISettings(steps=svi_steps)
    except ValueError as err:
        raise fail(str(err)) from None
    with Progress(
        TextColumn("[bold]{task.description}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(
                    f"{phase} (iterations; first block compiles)", total=total
                )
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
                resume=resume,
                overwrite=overwrite,
                format=format.value,  # type: ignore[arg-type]
                progress=progress,
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
        console.print("[bold red]The fit failed the diagnostics gate; do not use its numbers.[/]")
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
    is_patient = summary["parameter"].str.contains(r"\[", regex=True)
    population_rows = summary[~is_patient]
    patient_rows = summary[is_patient]
    if not all_rows and len(patient_rows) > WORST_SHOWN:
        badness = (
            patient_rows["r_hat"].fillna(float("inf"))
            - patient_rows[["ess_bulk", "ess_tail"]].min(axis=1).fillna(0) / 1e6
        )
        patient_rows = patient_rows.loc[badness.sort_values(ascending=False).index[:WORST_SHOWN]]
    table = Table(title=f"{run.path}: {run.manifest['model']} ({run.manifest['mode']})")
    for col in ("parameter", "mean", "q5", "q95", "r_hat", "ess_bulk", "ess_tail", "contraction"):
        table.add_column(col, justify="left" if col == "parameter" else "right")
    for _, row in [*population_rows.iterrows(), *patient_rows.iterrows()]:
        r_hat_bad = not row["r_hat"] < gate.max_r_hat
        ess_bad = not min(row["ess_bulk"], row["ess_tail"]) >= gate.min_ess_bulk
        mark = "[bold red]" if r_hat_bad or ess_bad else ""
        end = "[/]" if mark else ""
        table.add_row(
            f"{mark}{row['parameter']}{end}",
            f"{row['mean']:.4g}",
            f"{row['q5']:.4g}",
            f"{row['q95']:.4g}",
            f"{row['r_hat']:.3f}",
            f"{row['ess_bulk']:.0f}",
            f"{row['ess_tail']:.0f}",
            f"{row.get('contraction', float('nan')):.2f}",
        )
    console.print(table)
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
