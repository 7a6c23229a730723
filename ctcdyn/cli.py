"""The ``ctcdyn`` command line: batch jobs over specs and cohorts.

The CLI enables JAX's 64-bit mode when a command starts (the library itself never changes JAX's
configuration); counts and burdens spanning 1 to 1e12 are computed in double precision.
"""

from __future__ import annotations

import enum
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ._cli_common import (
    console,
    err_console,
    progress_bar,
)
from ._cli_common import (
    fail as _fail,
)
from ._cli_common import (
    load_spec as _load_spec,
)
from ._cli_common import (
    start as _start,
)
from ._cli_demo import demo
from ._cli_fit import diagnose, fit
from ._cli_leadtime import leadtime
from ._cli_predict import predict
from ._cli_report import report
from ._version import __version__

app = typer.Typer(
    name="ctcdyn",
    help="Stochastic population dynamics and prognosis of circulating tumour cells.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.command()(fit)
app.command()(diagnose)
app.command()(demo)
app.command()(leadtime)
app.command()(report)
app.command()(predict)
spec_app = typer.Typer(help="List, show and check model specs (TOML).", no_args_is_help=True)
app.add_typer(spec_app, name="spec")


class EngineName(enum.StrEnum):
    fast = "fast"
    ode = "ode"
    jump = "jump"
    hybrid = "hybrid"
    sde = "sde"


def _engine(
    name: EngineName,
    *,
    growth_noise: float = 0.0,
    shedding_noise: float = 0.0,
    shedding_reversion: float = 1.0,
):
    from . import dynamics

    if name is EngineName.sde:
        return dynamics.SDE(
            growth_noise=growth_noise,
            shedding_noise=shedding_noise,
            shedding_reversion=shedding_reversion,
        )
    engines = {
        EngineName.fast: dynamics.FastClearance,
        EngineName.ode: dynamics.ODE,
        EngineName.jump: dynamics.Jump,
        EngineName.hybrid: dynamics.Hybrid,
    }
    return engines[name]()


@app.callback(invoke_without_command=True)
def _main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        console.print(f"ctcdyn {__version__}")
        raise typer.Exit()


@app.command()
def simulate(
    model: Annotated[str, typer.Option(help="Bundled model name (mbc, adjuvant) or a .toml spec.")],
    out: Annotated[Path, typer.Option(help="Folder for draws/patients/treatments/truth.csv.")],
    patients: Annotated[int, typer.Option(min=1, help="Number of virtual patients.")] = 100,
    seed: Annotated[
        int, typer.Option(help="Random seed; the same seed gives identical files.")
    ] = 0,
    scenario: Annotated[str, typer.Option(help="Scenario of the spec.")] = "default",
    engine: Annotated[EngineName, typer.Option(help="Dynamics engine.")] = EngineName.fast,
    from_prior: Annotated[
        bool, typer.Option(help="Draw population-level parameters from their priors.")
    ] = False,
    growth_noise: Annotated[
        float, typer.Option(help="sde engine: environmental growth noise (1/sqrt(day)).")
    ] = 0.05,
    shedding_noise: Annotated[
        float, typer.Option(help="sde engine: Ornstein-Uhlenbeck log-shedding noise (1/sqrt(day)).")
    ] = 1.0,
    shedding_reversion: Annotated[
        float, typer.Option(help="sde engine: reversion rate of log-shedding (1/day).")
    ] = 1.0,
) -> None:
    """Simulate a virtual cohort and write it in the formats that fitting reads.

    Engines: fast (default; exact periodic circulation), ode (stiff reference), jump (exact
    stochastic; small populations only), hybrid (exact below 1e4 cells, deterministic above),
    sde (growth noise and bursty shedding; noise levels are illustrative, not from the
    literature).
    """
    _start()
    import jax

    from .simulate import simulate_cohort

    spec = _load_spec(model)
    try:
        spec.scenario(scenario)
    except ValueError as err:
        raise _fail(str(err)) from None
    started = time.perf_counter()
    with progress_bar("[bold]simulating[/] {task.description}") as bar:
        task = bar.add_task(f"{spec.name}/{scenario}", total=patients)
        cohort = simulate_cohort(
            spec,
            patients,
            jax.random.key(seed),
            scenario=scenario,
            engine=_engine(
                engine,
                growth_noise=growth_noise,
                shedding_noise=shedding_noise,
                shedding_reversion=shedding_reversion,
            ),
            population="prior" if from_prior else "typical",
            progress=lambda done: bar.update(task, completed=done),
        )
    paths = cohort.write(out)
    elapsed = time.perf_counter() - started
    _summarise(cohort, spec.name, scenario, elapsed)
    for name, path in paths.items():
        console.print(f"  {name:<10} {path}")


def _summarise(cohort, model: str, scenario: str, elapsed: float) -> None:
    draws, patients = cohort.draws, cohort.patients
    table = Table(title=f"{model}/{scenario}: {len(patients)} patients in {elapsed:.1f} s")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("blood draws", f"{len(draws)}")
    first = draws.groupby("patient_id").head(1)
    table.add_row("baseline CTC >= 5 / 7.5 mL", f"{(first['ctc'] >= 5).mean():.0%}")
    table.add_row("median baseline CTC", f"{first['ctc'].median():g}")
    table.add_row("draws with a cluster", f"{(draws['clusters'] > 0).mean():.1%}")
    for event in ("pfs", "os", "relapse"):
        if f"{event}_event" in patients:
            table.add_row(f"{event} events", f"{patients[f'{event}_event'].mean():.0%}")
            observed = patients.loc[patients[f"{event}_event"] == 1, f"{event}_time"]
            if len(observed):
                table.add_row(f"median {event} time (events)", f"{observed.median():.0f} days")
    console.print(table)


@app.command()
def validate(
    draws: Annotated[Path, typer.Option(help="Blood draws, one row per draw (.csv or .parquet).")],
    patients: Annotated[Path, typer.Option(help="Patients, one row per patient.")],
    treatments: Annotated[
        Path | None, typer.Option(help="Treatments, one row per treatment (optional).")
    ] = None,
) -> None:
    """Check input tables without fitting; exit code 2 and every problem listed when invalid.

    Writes nothing. The rules are listed in docs/data.md.
    """
    from rich.markup import escape

    from .data import InputError, read_tables

    try:
        tables = read_tables(draws, patients, treatments)
    except InputError as err:
        raise _fail(escape(str(err))) from None
    d, t = tables.draws, tables.treatments
    table = Table(title="valid input tables")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("patients", f"{len(tables.patients)}")
    table.add_row("patients with draws", f"{d['patient_id'].nunique()}")
    table.add_row("blood draws", f"{len(d)}")
    for assay, n in d["assay"].value_counts().sort_index().items():
        table.add_row(f"  {assay}", f"{n}")
    table.add_row("draw times", f"day {d['time'].min():g} to {d['time'].max():g}")
    table.add_row("draws missing a CTC count", f"{int(d['ctc'].isna().sum())}")
    censored = int((d["ctc_censor"] != 0).sum() + (d["clusters_censor"] != 0).sum())
    table.add_row("censored counts", f"{censored}")
    table.add_row("treatments", f"{len(t)}")
    for kind, n in t["kind"].value_counts().sort_index().items():
        table.add_row(f"  {kind}", f"{n}")
    console.print(table)


@spec_app.command("list")
def spec_list() -> None:
    """List the bundled model specs."""
    from .specs import bundled_models, load_spec

    table = Table(title="bundled models")
    for col in ("name", "title", "scenarios"):
        table.add_column(col)
    for name in bundled_models():
        spec = load_spec(name)
        table.add_row(name, spec.title, ", ".join(spec.scenarios))
    console.print(table)


@spec_app.command("show")
def spec_show(model: Annotated[str, typer.Argument(help="Model name or .toml path.")]) -> None:
    """Show a spec's parameters: level, unit, prior or value, and source."""
    spec = _load_spec(model)
    table = Table(title=f"{spec.name}: {spec.title}", show_lines=False)
    for col in ("parameter", "level", "unit", "prior / value", "source"):
        table.add_column(col, overflow="fold")
    for name, p in spec.parameters.items():
        what = p.prior.describe() if p.prior is not None else f"{p.value:g}"
        if p.level == "patient":
            what += f", between patients {p.between_patients:g}"
        table.add_row(name, p.level, p.unit, what, p.source)
    console.print(table)


@spec_app.command("check")
def spec_check(paths: Annotated[list[str], typer.Argument(help="Spec files or names.")]) -> None:
    """Validate specs; exit code 2 and every problem listed when one is invalid."""
    from .specs import SpecError, load_spec

    failed = False
    for path in paths:
        try:
            spec = load_spec(path)
            console.print(f"[green]ok[/] {spec.path} ({len(spec.parameters)} parameters)")
        except (SpecError, ValueError, FileNotFoundError) as err:
            failed = True
            err_console.print(f"[bold red]invalid:[/] {err}", soft_wrap=True)
    if failed:
        raise typer.Exit(2)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
