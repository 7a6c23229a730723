"""A fit from input files to a run folder: validate, fit (in chunks for per-patient batches),
diagnose, and store — resumable, with every write atomic.

Per-patient runs are cut into chunks of patients by draw-count bucket (``._buckets``); an
executor (``._executor``: this process, or a Dask cluster) fits the chunks, and this process
writes each finished chunk to the run as it arrives: a chunk file (netCDF), or an append to
``posterior.zarr`` (zarr; the summary and gate are then computed from the store a block of
patients at a time). ``resume=True`` redoes only chunks that are not on disk. Chunk k is
fitted with ``fold_in(key(seed), k)`` and padded to its bucket's shape, so a resumed run, or
one on another executor, gives the same draws as an uninterrupted local one. A task carries
only its chunk's arrays and the spec, never the whole cohort.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np
import pandas as pd
import xarray as xr

from ..data import Tables, read_tables
from ..diagnostics import check
from ..specs import ModelSpec
from ..store import Run, summarize
from ..store._append import PATIENT_ROW, in_row_order
from ..store._summary import summarize_in_blocks
from ._buckets import ChunkPlan, plan_chunks
from ._data import FitData, PatientArrays, fit_data
from ._executor import Executor, LocalExecutor
from ._fit import count_model, fit
from ._model import CountModel, Population
from ._nuts import NUTSSettings
from ._shard import shard_patients
from ._svi import SVISettings

Progress = Callable[[str, int, int], None]

#: Draw-axis fields of :class:`PatientArrays` keep (patients, draws); the others (patients, ...).
_PER_PATIENT_ONLY = ("blood_volume_ml", "design", "outcomes")


def subset(data: FitData, index: np.ndarray, width: int | None = None) -> FitData:
    """The patients ``index`` of ``data``, their blood draws cut to ``width`` (default: kept).

    Cutting only removes padding: ``width`` must hold every chosen patient's draws. The
    tables are left out (a task sent to a worker carries only its own patients' arrays).
    """
    arrays = data.arrays.rows(index)
    draw_rows = data.draw_rows[index]
    if width is not None:
        if width < int(data.n_draws[index].max()):
            raise ValueError(f"width {width} is narrower than a chosen patient's draws")
        cut: dict[str, Any] = {
            f.name: np.asarray(getattr(arrays, f.name))[:, :width]
            for f in dataclasses.fields(PatientArrays)
            if f.name not in _PER_PATIENT_ONLY
        }
        arrays = dataclasses.replace(arrays, **cut)
        draw_rows = draw_rows[:, :width]
    return FitData(
        patient_ids=tuple(data.patient_ids[i] for i in index),
        arrays=arrays,
        n_draws=data.n_draws[index],
        draw_rows=draw_rows,
        tables=_NO_TABLES,
        outcomes=data.outcomes,
    )


_NO_TABLES = Tables(pd.DataFrame(), pd.DataFrame(), pd.DataFrame())


@dataclasses.dataclass(frozen=True)
class FitTask:
    """One unit of work for an executor: fit ``data`` and keep its first ``real`` patients.

    Attributes:
        spec, model, population, method, nuts, svi: what to fit and how.
        data: the patients of the task (a chunk, padded; or the whole cohort).
        real: patients to keep (the rest pad the chunk to its bucket's size).
        seed: the run's seed.
        chunk: the chunk id (key ``fold_in(key(seed), chunk)``); None for a cohort fit (key
            ``key(seed)``), whose patients are sharded over the worker's accelerators (on CPU
            devices the chains are spread instead, :func:`~ctcdyn.inference.run_nuts`).
    """

    spec: ModelSpec
    model: CountModel
    data: FitData
    real: int
    seed: int
    chunk: int | None
    population: Population | None
    method: Literal["nuts", "svi"]
    nuts: NUTSSettings
    svi: SVISettings


def fit_task(task: FitTask, progress: Progress | None = None) -> xr.DataTree:
    """Run one :class:`FitTask` (in this process or on a worker); returns its DataTree."""
    key = jax.random.key(task.seed)
    data = task.data
    if task.chunk is not None:
        key = jax.random.fold_in(key, task.chunk)
    elif jax.local_devices()[0].platform != "cpu":
        # Accelerators: the cohort's patients are split over them. CPU devices run chains
        # side by side instead (run_nuts), which needs no exchange between them per step.
        data = shard_patients(data)
    result = fit(
        task.spec,
        data,
        key,
        population=task.population,
        method=task.method,
        nuts=task.nuts,
        svi=task.svi,
        progress=progress,
        model=task.model,
    )
    return _first_patients(result.tree, task.real)


def fit_run(
    spec: ModelSpec,
    files: Mapping[str, Path | str],
    out: Path | str,
    *,
    seed: int = 0,
    method: Literal["nuts", "svi"] = "nuts",
    nuts: NUTSSettings | None = None,
    svi: SVISettings | None = None,
    population: Population | None = None,
    chunk_size: int = 500,
    buckets: bool = True,
    executor: Executor | None = None,
    resume: bool = False,
    overwrite: bool = False,
    format: Literal["netcdf", "zarr"] = "netcdf",
    progress: Progress | None = None,
    outcomes: tuple[str, ...] = (),
) -> Run:
    """Fit ``spec`` to the tables in ``files`` and store everything in the run folder ``out``.

    Args:
        spec: the model spec.
        files: ``{"draws": ..., "patients": ...[, "treatments": ...]}`` (CSV or Parquet).
        out: the run folder (``fits/RUN``).
        seed: PRNG seed of the fit.
        method: the inference method, "nuts" or "svi".
        nuts: settings of NUTS (default :class:`NUTSSettings`).
        svi: settings of SVI (default :class:`SVISettings`).
        population: a fixed population for independent per-patient fits; None for the
            hierarchical cohort fit.
        chunk_size: patients per chunk of a per-patient run.
        buckets: per-patient runs: chunk patients by draw-count bucket (``._buckets``); False
            pads everyone to the largest draw count.
        executor: where fits run (default :class:`LocalExecutor`; :class:`DaskExecutor` for a
            Dask cluster). Results are written by this process as they arrive.
        resume: continue an interrupted run in ``out`` (same inputs and settings; any
            executor).
        overwrite: replace a finished run in ``out``.
        format: "netcdf" (``posterior.nc``) or "zarr" (``posterior.zarr``, for large batches).
        progress: called as ``progress(phase, done, total)``; phase "chunks" after each chunk
            written, "nuts"/"svi" for sampler iterations (local executor only).
        outcomes: clinical endpoints of the patients table fitted with the counts ("os",
            "pfs"; :func:`~ctcdyn.inference.fit_data`). Recorded in the manifest (``sampler``).

    Returns:
        The finished :class:`~ctcdyn.store.Run`; its manifest's ``status`` is "passed",
        "failed_gate" (kept, never hidden) or "approximate" (SVI).

    Raises:
        ctcdyn.data.InputError: invalid tables (nothing is written).
    """
    nuts = NUTSSettings() if nuts is None else nuts
    svi = SVISettings() if svi is None else svi
    executor = LocalExecutor() if executor is None else executor
    paths = {role: Path(p) for role, p in files.items()}
    tables = read_tables(paths["draws"], paths["patients"], paths.get("treatments"))
    data = fit_data(
        spec, tables, labels={role: str(p) for role, p in paths.items()}, outcomes=outcomes
    )
    per_patient = population is not None
    sampler: dict = {"method": method}
    sampler.update(dataclasses.asdict(nuts if method == "nuts" else svi))
    if outcomes:  # part of the likelihood: a resumed run must fit the same ones
        sampler["outcomes"] = list(outcomes)
    if per_patient:
        sampler["chunk_size"] = chunk_size
        sampler["buckets"] = "pow2" if buckets else "none"
        sampler["population"] = population.to_dict()  # type: ignore[union-attr]
    run = Run.create(
        out,
        model=spec.name,
        spec_text=spec.path.read_text() if spec.path else "",
        data=paths,
        seed=seed,
        sampler=sampler,
        mode="per_patient" if per_patient else "cohort",
        overwrite=overwrite,
        resume=resume,
    )
    started = time.perf_counter()
    # one model object for every chunk: compiled samplers are cached per model
    base = FitTask(
        spec=spec,
        model=count_model(spec, data, population),
        data=data,
        real=data.n_patients,
        seed=seed,
        chunk=None,
        population=population,
        method=method,
        nuts=nuts,
        svi=svi,
    )
    local = isinstance(executor, LocalExecutor)
    work = functools.partial(fit_task, progress=progress) if local and progress else fit_task
    if per_patient:
        plans = plan_chunks(data.n_draws, chunk_size, bucketed=buckets)
        append = format == "zarr"
        tree = _chunked(run, data, base, plans, executor, work, progress, append=append)
    else:
        cohort = dataclasses.replace(base, data=subset(data, np.arange(data.n_patients)))
        tree = next(iter(executor.map(work, [cohort])))[1]
    fitted = time.perf_counter() - started
    if tree is None:  # appended chunk by chunk: summarise the store a block at a time
        summary, gate_tree = _summary_from_store(run)
    else:
        summary, gate_tree = summarize(tree), tree
    timings = {"fit": fitted, "total": time.perf_counter() - started}
    if method == "svi":
        if tree is not None:
            run.write_posterior(tree, format=format)
        run.write_summary(summary)
        run.update_manifest(
            status="approximate",
            diagnostics={"passed": False, "note": "SVI is approximate: no MCMC diagnostics"},
            timings=timings,
        )
    else:
        run.finalize(tree, summary, check(gate_tree, summary), timings, format=format)
    return run


def _chunked(
    run: Run,
    data: FitData,
    base: FitTask,
    plans: list[ChunkPlan],
    executor: Executor,
    work: Callable[[FitTask], xr.DataTree],
    progress: Progress | None,
    *,
    append: bool = False,
) -> xr.DataTree | None:
    """Fit the chunks not yet finished and write each as it arrives.

    Returns the whole posterior in cohort order, read back from the chunk files; None when
    ``append`` (each chunk appended to ``posterior.zarr``, checked to hold every patient once).
    """
    done = run.finished_chunks()
    _check_layout(run, done, append)
    todo = [p for p in plans if p.chunk_id not in done]
    # every appended chunk has the store's shape: blood draws padded to the longest series
    sizes = {"blood_draw": max(p.width for p in plans)}
    block = max(p.size for p in plans)

    def tasks() -> Iterator[FitTask]:
        for plan in todo:  # built lazily: only the chunks in flight exist at once
            chunk = subset(data, plan.padded(), plan.width)
            yield dataclasses.replace(
                base, data=chunk, real=plan.patients.size, chunk=plan.chunk_id
            )

    if progress is not None:
        progress("chunks", len(plans) - len(todo), len(plans))
    for position, tree in executor.map(work, tasks()):
        plan = todo[position]
        if plan.chunk_id not in done:  # each chunk is written once, whatever the executor did
            if append:
                run.append_chunk(
                    plan.chunk_id, tree, rows=plan.patients, sizes=sizes, patients_per_block=block
                )
            else:
                run.write_chunk(plan.chunk_id, tree)
            done.add(plan.chunk_id)
        if progress is not None:
            progress("chunks", len(done), len(plans))
    if append:
        _check_store(run, data.patient_ids)
        return None
    return _in_cohort_order(run.read_chunks(), data.patient_ids)


def _check_layout(run: Run, done: set[int], append: bool) -> None:
    """A resumed run keeps the format it started with (chunk files, or an appended store)."""
    appended = run.appended_patients is not None
    if done and append != appended:
        started, asked = ("zarr", "netcdf") if appended else ("netcdf", "zarr")
        raise ValueError(
            f"the run in {run.path} was started with format={started!r} "
            f"({'an appended posterior.zarr' if appended else 'chunk files'}); resume it with "
            f"format={started!r} (CLI --format {started}), not {asked!r}, or use overwrite=True."
        )


def _check_store(run: Run, ids: tuple[str, ...]) -> None:
    """The appended store holds every patient of the cohort exactly once, at its row."""
    tree = run.open_posterior()
    try:
        post = tree["posterior"].to_dataset()
        rows = np.asarray(post[PATIENT_ROW].values)
        got = [str(p) for p in np.asarray(post["patient"].values)]
    finally:
        tree.close()
    expected = np.arange(len(ids))
    in_place = all(ids[r] == p for r, p in zip(rows, got, strict=True))
    if np.array_equal(np.sort(rows), expected) and in_place:
        return
    raise RuntimeError(
        f"the run's store holds {len(got)} patients ({len(set(got))} distinct) but the cohort "
        f"has {len(ids)}; the run folder is inconsistent. Try overwrite=True."
    )


def _summary_from_store(run: Run) -> tuple[pd.DataFrame, xr.DataTree]:
    """The summary table of an appended store, and the tree the diagnostics gate reads
    (``sample_stats``' ``diverging`` and ``energy`` only), patients in cohort order."""
    tree = run.open_posterior()
    try:
        rows = np.asarray(tree["posterior"].to_dataset()[PATIENT_ROW].values)
        summary = summarize_in_blocks(tree, order=np.argsort(rows, kind="stable"))
        stats = tree["sample_stats"].to_dataset()
        stats = in_row_order(stats[[v for v in ("diverging", "energy") if v in stats]]).load()
    finally:
        tree.close()
    return summary, xr.DataTree.from_dict({"sample_stats": stats})


def _in_cohort_order(tree: xr.DataTree, ids: tuple[str, ...]) -> xr.DataTree:
    """The chunks' patients back in the patients table's order (each exactly once)."""
    got = [str(p) for p in np.asarray(tree["posterior"].to_dataset()["patient"])]
    if sorted(got) != sorted(ids) or len(set(got)) != len(got):
        raise RuntimeError(
            f"the run's chunks hold {len(got)} patients ({len(set(got))} distinct) but the "
            f"cohort has {len(ids)}; the run folder is inconsistent. Try overwrite=True."
        )

    def order(ds: xr.Dataset) -> xr.Dataset:
        return ds.sel(patient=list(ids)) if "patient" in ds.dims else ds

    return tree.map_over_datasets(order)


def _first_patients(tree: xr.DataTree, count: int) -> xr.DataTree:
    def keep(ds: xr.Dataset) -> xr.Dataset:
        return ds.isel(patient=slice(0, count)) if "patient" in ds.dims else ds

    return tree.map_over_datasets(keep)
