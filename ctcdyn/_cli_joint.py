"""``ctcdyn fit --marker COLUMN ...``: the joint longitudinal–survival model of any marker.

Called by ``ctcdyn fit`` when ``--marker`` is given (the CTC count model otherwise). The draws
table holds patient_id, the time column, the marker column and covariates; the patients table
holds patient_id, covariates, the event time and indicator.
"""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.progress import TaskID

from ._cli_common import console, fail, progress_bar


def fit_joint_command(
    *,
    draws: Path,
    patients: Path,
    out: Path,
    marker: str,
    family: str,
    fixed: str | None,
    random: str,
    surv: str,
    event_time: str | None,
    event: str | None,
    causes: int,
    assoc: str,
    baseline: str,
    time_column: str,
    entry_time: str | None,
    event_upper: str | None,
    chains: int,
    warmup: int,
    samples: int,
    target_accept: float,
    max_tree_depth: int,
    seed: int,
    overwrite: bool,
    unsupported: dict[str, bool],
) -> None:
    """Validate the options, fit the joint model, store the run and print where it is."""
    from .data import InputError
    from .inference import NUTSSettings
    from .prognosis import BASELINES, JointSpec, MarkerFormulas, fit_joint_run, parse_assoc

    used = [name for name, given in unsupported.items() if given]
    if used:
        raise fail(f"{', '.join(used)} do(es) not apply to joint marker fits (--marker)")
    missing = [
        flag
        for flag, value in (("--fixed", fixed), ("--event-time", event_time), ("--event", event))
        if not value
    ]
    if missing:
        raise fail(f"--marker needs {', '.join(missing)} as well")
    if baseline not in BASELINES:
        raise fail(f"--baseline must be one of {sorted(BASELINES)}, got {baseline!r}")
    try:
        formulas = MarkerFormulas(
            marker=marker,
            fixed=fixed or "",
            random=random,
            surv=surv,
            time=time_column,
        )
        spec = JointSpec(
            formulas=formulas,
            family=family,  # type: ignore[arg-type]
            event_time=event_time or "",
            event=event or "",
            causes=causes,
            entry=entry_time,
            event_upper=event_upper,
            assoc=parse_assoc(assoc),
            baseline=BASELINES[baseline](),
        )
        nuts = NUTSSettings(
            chains=chains,
            warmup=warmup,
            samples=samples,
            target_accept=target_accept,
            max_tree_depth=max_tree_depth,
        )
    except Exception as err:  # formula syntax errors come from formulaic with its own types
        raise fail(escape(f"{type(err).__name__}: {err}")) from None
    with progress_bar() as bar:
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(
                    f"{phase} (iterations; first block compiles)", total=total
                )
            bar.update(tasks[phase], completed=done, total=total)

        try:
            run = fit_joint_run(
                spec,
                {"draws": draws, "patients": patients},
                out,
                seed=seed,
                nuts=nuts,
                overwrite=overwrite,
                progress=progress,
            )
        except (InputError, FileExistsError) as err:
            raise fail(escape(str(err))) from None
    from ._cli_fit import _report

    _report(run)
    summary = run.read_summary()
    alphas = summary[summary["parameter"].str.match(r"^alpha(_slope|_area)?(\[.*\])?$")]
    for _, row in alphas.iterrows():
        console.print(
            f"  {row['parameter']:<12} {row['mean']:.3g} (90% interval {row['q5']:.3g} to "
            f"{row['q95']:.3g})"
        )
