"""A fit from input files to a run folder: validate, fit (in chunks for per-patient batches),
diagnose, and store — resumable, with every write atomic.

Per-patient runs are split into chunks of patients; each finished chunk is written to the run
before the next starts, and ``resume=True`` redoes only chunks that are not on disk. Chunk k is
fitted with ``fold_in(key, k)`` and padded to the chunk size, so a resumed run gives the same
draws as an uninterrupted one, and every chunk reuses one compiled sampler.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import jax
import numpy as np
import xarray as xr

from ..data import read_tables
from ..diagnostics import check
from ..specs import ModelSpec
from ..store import Run, summarize
from ._data import FitData, fit_data
from ._fit import count_model, fit
from ._model import Population
from ._nuts import NUTSSettings
from ._svi import SVISettings

Progress = Callable[[str, int, int], None]


def subset(data: FitData, index: np.ndarray) -> FitData:
    """The patients ``index`` of ``data`` (the padded draw width is kept)."""
    return FitData(
        patient_ids=tuple(data.patient_ids[i] for i in index),
        arrays=data.arrays.rows(index),
        n_draws=data.n_draws[index],
        draw_rows=data.draw_rows[index],
        tables=data.tables,
    )


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
    resume: bool = False,
    overwrite: bool = False,
    format: Literal["netcdf", "zarr"] = "netcdf",
    progress: Progress | None = None,
) -> Run:
    """Fit ``spec`` to the tables in ``files`` and store everything in the run folder ``out``.

    Args:
        spec: the model spec.
        files: ``{"draws": ..., "patients": ...[, "treatments": ...]}`` (CSV or Parquet).
        out: the run folder (``fits/RUN``).
        seed: PRNG seed of the fit.
        method, nuts, svi: the inference method and its settings.
        population: a fixed population for independent per-patient fits; None for the
            hierarchical cohort fit.
        chunk_size: patients per chunk of a per-patient run.
        resume: continue an interrupted run in ``out`` (same inputs and settings).
        overwrite: replace a finished run in ``out``.
        format: "netcdf" (``posterior.nc``) or "zarr" (``posterior.zarr``, for large batches).
        progress: called as ``progress(phase, done, total)``.

    Returns:
        The finished :class:`~ctcdyn.store.Run`; its manifest's ``status`` is "passed",
        "failed_gate" (kept, never hidden) or "approximate" (SVI).

    Raises:
        ctcdyn.data.InputError: invalid tables (nothing is written).
    """
    nuts = NUTSSettings() if nuts is None else nuts
    svi = SVISettings() if svi is None else svi
    paths = {role: Path(p) for role, p in files.items()}
    tables = read_tables(paths["draws"], paths["patients"], paths.get("treatments"))
    data = fit_data(spec, tables, labels={role: str(p) for role, p in paths.items()})
    per_patient = population is not None
    sampler: dict = {"method": method}
    sampler.update(dataclasses.asdict(nuts if method == "nuts" else svi))
    if per_patient:
        sampler["chunk_size"] = chunk_size
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
    key = jax.random.key(seed)
    started = time.perf_counter()
    # one model object for every chunk: compiled samplers are cached per model
    kwargs = dict(
        population=population,
        method=method,
        nuts=nuts,
        svi=svi,
        progress=progress,
        model=count_model(spec, data, population),
    )
    if per_patient:
        tree = _chunked(spec, run, data, key, chunk_size, kwargs)
    else:
        tree = fit(spec, data, key, **kwargs).tree  # type: ignore[arg-type]
    fitted = time.perf_counter() - started
    summary = summarize(tree)
    timings = {"fit": fitted, "total": time.perf_counter() - started}
    if method == "svi":
        run.write_posterior(tree, format=format)
        run.write_summary(summary)
        run.update_manifest(
            status="approximate",
            diagnostics={"passed": False, "note": "SVI is approximate: no MCMC diagnostics"},
            timings=timings,
        )
    else:
        run.finalize(tree, summary, check(tree, summary), timings, format=format)
    return run


def _chunked(spec: ModelSpec, run: Run, data: FitData, key, chunk_size: int, kwargs) -> xr.DataTree:
    n = data.n_patients
    size = min(chunk_size, n)
    starts = range(0, n, size)
    done = run.finished_chunks()
    for k, lo in enumerate(starts):
        if k in done:
            continue
        real = np.arange(lo, min(lo + size, n))
        # Pad the last chunk to the chunk size (repeating its last patient): one compilation.
        index = np.concatenate([real, np.full(size - real.size, real[-1])])
        chunk = subset(data, index)
        tree = fit(spec, chunk, jax.random.fold_in(key, k), **kwargs).tree
        tree = _first_patients(tree, real.size)
        run.write_chunk(k, tree)
    return run.read_chunks()


def _first_patients(tree: xr.DataTree, count: int) -> xr.DataTree:
    def keep(ds: xr.Dataset) -> xr.Dataset:
        return ds.isel(patient=slice(0, count)) if "patient" in ds.dims else ds

    return tree.map_over_datasets(keep)
