"""Fit a cohort: hierarchical (one posterior for everyone) or per patient (independent posteriors
with the population distribution fixed), by NUTS or SVI. Returns an ArviZ DataTree.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jaxtyping import PRNGKeyArray

from ..specs import ModelSpec
from ._data import FitData
from ._model import CountModel, Population, fit_engine
from ._nuts import NUTSSettings, run_nuts
from ._svi import SVISettings, run_svi
from ._tree import build_tree, prior_draws

#: Draws from the prior kept for prior-to-posterior contraction.
PRIOR_DRAWS = 1000

Progress = Callable[[str, int, int], None]


@dataclasses.dataclass(frozen=True)
class FitResult:
    """A finished fit: the DataTree and the seconds each phase took."""

    tree: xr.DataTree
    timings: dict[str, float]


def count_model(spec: ModelSpec, data: FitData, population: Population | None) -> CountModel:
    """The :class:`CountModel` of ``spec`` for ``data`` (engine and censoring chosen from it)."""
    censored = bool(np.any(data.arrays.ctc_censor != 0) or np.any(data.arrays.clusters_censor != 0))
    return CountModel(
        spec=spec,
        engine=fit_engine(spec, data.arrays.design),
        population=population,
        censored=censored,
        outcomes=data.outcomes,
    )


def fit(
    spec: ModelSpec,
    data: FitData,
    key: PRNGKeyArray,
    *,
    population: Population | None = None,
    method: Literal["nuts", "svi"] = "nuts",
    nuts: NUTSSettings | None = None,
    svi: SVISettings | None = None,
    progress: Progress | None = None,
    model: CountModel | None = None,
) -> FitResult:
    """Fit ``spec`` to ``data``.

    Args:
        spec: the model spec.
        data: the cohort (:func:`~ctcdyn.inference.fit_data`).
        key: PRNG key; the same key, data and settings give the same draws.
        population: None for the hierarchical cohort model; a fixed :class:`Population` for
            independent per-patient fits (each patient its own NUTS run, all vmapped in one
            compiled kernel).
        method: "nuts" (default) or "svi" (mean-field normal guide; approximate, for a quick
            look: it is never reported as converged).
        nuts: settings of NUTS (default :class:`NUTSSettings`).
        svi: settings of SVI (default :class:`SVISettings`).
        progress: called as ``progress(phase, done, total)``.
        model: the :class:`CountModel` to use (default :func:`count_model`); pass the same
            object to repeated fits of equal shapes (chunks of a batch) to reuse compilations.

    Returns:
        A :class:`FitResult` whose tree has groups posterior, sample_stats, log_likelihood,
        posterior_predictive, observed_data and prior.
    """
    nuts = NUTSSettings() if nuts is None else nuts
    svi = SVISettings() if svi is None else svi
    model = count_model(spec, data, population) if model is None else model
    arrays = jax.tree.map(jnp.asarray, data.arrays)
    k_fit, k_tree, k_prior = jax.random.split(key, 3)
    report = (lambda phase: lambda d, t: progress(phase, d, t)) if progress else None
    timings: dict[str, float] = {}
    start = time.perf_counter()
    per_patient = population is not None
    if method == "svi":
        posterior, stats = run_svi(
            model, arrays, k_fit, svi, progress=report("svi") if report else None
        )
        warmup_divergences = 0
    elif per_patient:
        batch = jax.tree.map(lambda x: x[:, None], arrays)  # one problem per patient
        result = run_nuts(model, batch, k_fit, nuts, progress=report("nuts") if report else None)
        # (patients, chain, draw, 1, ...) -> (chain, draw, patient, ...)
        posterior = {k: np.moveaxis(v[:, :, :, 0], 0, 2) for k, v in result.samples.items()}
        stats = {k: np.moveaxis(v, 0, 2) for k, v in result.stats.items()}
        warmup_divergences = int(result.warmup_divergences.sum())
    else:
        batch = jax.tree.map(lambda x: x[None], arrays)
        result = run_nuts(model, batch, k_fit, nuts, progress=report("nuts") if report else None)
        posterior = {k: v[0] for k, v in result.samples.items()}
        stats = {k: v[0] for k, v in result.stats.items()}
        warmup_divergences = int(result.warmup_divergences.sum())
    timings["sampling"] = time.perf_counter() - start
    start = time.perf_counter()
    prior = prior_draws(model, arrays, k_prior, PRIOR_DRAWS)
    attrs = {
        "mode": "per_patient" if per_patient else "cohort",
        "method": method,
        "model": spec.name,
        "engine": type(model.engine).__name__,
        "count_family": spec.count_family,
        "warmup_divergences": warmup_divergences,
    }
    tree = build_tree(model, data, posterior, stats, k_tree, prior=prior, attrs=attrs)
    timings["postprocessing"] = time.perf_counter() - start
    return FitResult(tree=tree, timings=timings)
