"""Virtual cohorts: parameters, draw schedules, treatments, dynamics, blood tests and endpoints.

:func:`simulate_cohort` returns the four tables that fitting reads (DESIGN.md section 9) plus
the truth; :func:`write_cohort` saves them as CSV. Everything random derives from one PRNG key,
so the same key gives identical tables.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import PRNGKeyArray

from .._units import BLOOD_ML_PER_KG, HOURS_PER_DAY
from ..dynamics import AbstractEngine, FastClearance, solve
from ..specs import TREATMENT_COLUMNS, ModelSpec, Scenario, build_model, treatments_from_table
from ._endpoints import endpoint_table
from ._observe import observe_draws
from ._parameters import draw_parameters

#: Patients solved per compiled call; bounds memory for large cohorts.
CHUNK = 2000


@dataclasses.dataclass(frozen=True)
class Cohort:
    """A simulated cohort: the input tables of a fit, and the truth behind them."""

    draws: pd.DataFrame
    patients: pd.DataFrame
    treatments: pd.DataFrame
    truth: pd.DataFrame

    def write(self, out: Path | str) -> dict[str, Path]:
        """Write draws.csv, patients.csv, treatments.csv and truth.csv into ``out``."""
        return write_cohort(self, out)


def _patient_ids(n: int) -> list[str]:
    width = max(4, len(str(n)))
    return [f"P{i + 1:0{width}d}" for i in range(n)]


def _schedule(scenario: Scenario, n: int, key: PRNGKeyArray) -> tuple[np.ndarray, np.ndarray]:
    """Draw times (days, including the clock hour) and clock hours, shape (n, draws)."""
    k_day, k_hour = jax.random.split(key)
    nominal = np.asarray(scenario.draw_days)
    unit = np.asarray(jax.random.uniform(k_day, (n, nominal.size), minval=-1.0, maxval=1.0))
    jitter = np.where(
        nominal == nominal[0], 0.0, scenario.draw_jitter_days * unit
    )  # baseline is day 0 exactly
    days = np.round(np.maximum(nominal + jitter, 0.0))
    hours = scenario.draw_clock_hour + scenario.draw_clock_hour_sd * np.asarray(
        jax.random.normal(k_hour, (n, nominal.size))
    )
    hours = np.round(np.clip(hours, 0.0, 23.75) * 4.0) / 4.0  # quarter-hour resolution
    days = np.maximum.accumulate(days, axis=1)
    times = days + hours / HOURS_PER_DAY
    return times, hours


def _imaging_schedule(scenario: Scenario, n: int, key: PRNGKeyArray) -> np.ndarray | None:
    """Scan days per patient, shape (n, scans): nominal days + uniform jitter, whole days."""
    if not scenario.imaging_days:
        return None
    nominal = np.asarray(scenario.imaging_days)
    unit = np.asarray(jax.random.uniform(key, (n, nominal.size), minval=-1.0, maxval=1.0))
    days = np.maximum(np.round(nominal + scenario.imaging_jitter_days * unit), 1.0)
    return np.maximum.accumulate(days, axis=1)


def _treatment_table(scenario: Scenario, ids: list[str]) -> pd.DataFrame:
    rows = []
    for pid in ids:
        if scenario.surgery_day is not None:
            rows.append(
                dict(
                    patient_id=pid,
                    kind="surgery",
                    start=scenario.surgery_day,
                    end=scenario.surgery_day,
                )
            )
        for plan in scenario.treatments:
            rows.append(
                dict(
                    patient_id=pid,
                    kind=plan.kind,
                    start=plan.start,
                    end=plan.end,
                    dose=plan.dose,
                    dose_interval_days=plan.dose_interval_days,
                    dose_clock_hour=plan.dose_clock_hour,
                )
            )
    return pd.DataFrame(rows, columns=TREATMENT_COLUMNS)


@functools.cache
def _solver(engine: AbstractEngine) -> Callable:
    """One compiled, patient-vmapped solve per engine (reused across cohorts of equal shape)."""

    def one(model, ts, key):
        return solve(model, ts, engine, key=key if engine.stochastic else None)

    return jax.jit(jax.vmap(one))


def simulate_cohort(
    spec: ModelSpec,
    n_patients: int,
    key: PRNGKeyArray,
    *,
    scenario: str = "default",
    engine: AbstractEngine | None = None,
    population: Literal["typical", "prior"] = "typical",
    progress: Callable[[int], None] | None = None,
) -> Cohort:
    """Simulate ``n_patients`` virtual patients of ``spec``'s ``scenario``.

    Args:
        spec: a validated model spec (:func:`ctcdyn.specs.load_spec`).
        n_patients: cohort size.
        key: PRNG key; the same key gives the same cohort.
        scenario: name of a scenario in the spec.
        engine: dynamics engine (:class:`~ctcdyn.FastClearance` by default).
        population: population-level parameters at their prior medians ("typical") or drawn
            from their priors ("prior").
        progress: called with the number of patients finished after each chunk.

    Returns:
        A :class:`Cohort`. ``truth`` holds every sampled parameter per patient in the spec's
        units, named as the fitted posterior names them.
    """
    if n_patients < 1:
        raise ValueError(f"n_patients must be >= 1, got {n_patients}")
    engine = FastClearance() if engine is None else engine
    plan = spec.scenario(scenario)
    k_par, k_sched, k_cov, k_dyn, k_obs = jax.random.split(key, 5)
    ids = _patient_ids(n_patients)
    values = draw_parameters(spec, n_patients, k_par, population=population)
    weight = np.round(
        np.clip(70.0 + 12.0 * np.asarray(jax.random.normal(k_cov, (n_patients,))), 40, 140), 1
    )
    times, hours = _schedule(plan, n_patients, k_sched)
    treatments_df = _treatment_table(plan, ids)
    treatments = treatments_from_table(spec, treatments_df, ids, values)
    model = build_model(spec, values, treatments)

    grid = np.arange(0.0, plan.follow_up_days + 1.0)
    ts = np.concatenate([np.broadcast_to(grid, (n_patients, grid.size)), times], axis=1)
    order = np.argsort(ts, axis=1, kind="stable")
    ts_sorted = np.take_along_axis(ts, order, axis=1)
    where = np.argsort(order, axis=1)  # position of each original column in the sorted grid

    run = _solver(engine)
    dyn_keys = jax.random.split(k_dyn, n_patients)
    pieces = []
    for lo in range(0, n_patients, CHUNK):
        hi = min(lo + CHUNK, n_patients)
        chunk = _broadcast_model(_rows(model, lo, hi, n_patients), hi - lo)
        traj = run(chunk, jnp.asarray(ts_sorted[lo:hi]), dyn_keys[lo:hi])
        pieces.append(jax.tree.map(np.asarray, (traj.state, traj.ok)))
        if progress is not None:
            progress(hi)
    state = jax.tree.map(lambda *xs: np.concatenate(xs), *[p[0] for p in pieces])
    ok = np.concatenate([p[1] for p in pieces])
    if not ok.all():
        bad = ", ".join(np.asarray(ids)[~ok][:5])
        raise RuntimeError(
            f"the {type(engine).__name__} engine failed for patients {bad}; "
            "try another engine or looser tolerances"
        )
    at = lambda x, cols: np.take_along_axis(x, where[:, cols], axis=1)  # noqa: E731
    daily = slice(0, grid.size)
    draw_cols = slice(grid.size, ts.shape[1])
    patients = pd.DataFrame({"patient_id": ids, "weight_kg": weight})
    scans = _imaging_schedule(plan, n_patients, jax.random.fold_in(k_sched, 1))
    events = endpoint_table(
        spec,
        plan,
        grid,
        at(state.primary, daily),
        at(state.metastatic, daily),
        scans,
        key=jax.random.fold_in(k_cov, 1),  # a stream of its own: parameters and draws unchanged
        model=model,  # the relapse law's lesion rates, seeding and treatments
    )
    patients = pd.concat([patients, events], axis=1)

    draws = observe_draws(
        spec,
        plan,
        values,
        k_obs,
        ids=ids,
        times=times,
        hours=hours,
        blood_volume_ml=BLOOD_ML_PER_KG * weight,
        singles=at(state.singles, draw_cols),
        clusters=at(state.clusters, draw_cols),
    )
    # A blood test needs a living patient within follow-up; monitoring for residual disease
    # ends when relapse is found (the patient moves on to treatment of metastatic disease).
    last = pd.Series(plan.follow_up_days, index=ids)
    by_id = patients.set_index("patient_id")
    if "os_time" in patients:
        last = np.minimum(last, by_id["os_time"])
    if "relapse_time" in patients:
        last = np.minimum(last, by_id["relapse_time"].where(by_id["relapse_event"] == 1, np.inf))
    draws = draws[draws["time"] <= draws["patient_id"].map(last)].reset_index(drop=True)

    truth = pd.DataFrame({"patient_id": ids})
    for name in spec.sampled:
        truth[name] = np.broadcast_to(np.asarray(values[name]), (n_patients,))
    return Cohort(draws=draws, patients=patients, treatments=treatments_df, truth=truth)


def _rows(model, lo: int, hi: int, n: int):
    """Patients lo..hi of a batched model (leaves without a patient axis are kept whole)."""
    return jax.tree.map(lambda x: x[lo:hi] if jnp.ndim(x) and x.shape[0] == n else x, model)


def _broadcast_model(model, n: int):
    """Give every leaf a leading patient axis (population-level values are scalars)."""
    return jax.tree.map(
        lambda x: jnp.broadcast_to(x, (n, *jnp.shape(x))) if jnp.ndim(x) == 0 else x, model
    )


def write_cohort(cohort: Cohort, out: Path | str) -> dict[str, Path]:
    """Write the cohort's tables as CSV into ``out`` (created if needed); returns the paths.

    Files are written to temporary names and renamed, so a crash never leaves a partial table
    that looks complete.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ("draws", "patients", "treatments", "truth"):
        path = out / f"{name}.csv"
        tmp = out / f".{name}.csv.tmp"
        getattr(cohort, name).to_csv(tmp, index=False, float_format="%.10g")
        tmp.replace(path)
        paths[name] = path
    return paths
