"""Helpers of the slow calibration tests (not a test module): a small spec, SBC and its ranks.

The small spec keeps what makes the model hard to get right (hierarchical patient-level
parameters, a population-level treatment effect, the circadian draw clock, Poisson counts
of singles and clusters) and fixes what only makes it slow or unidentifiable: the initial
burden is fixed, because only shedding x burden reaches the blood, and so are the half-lives.
Counts are tens per draw, so every patient's data inform its parameters without swamping the
prior (the non-centred parameterisation then samples quickly).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import Predictive
from scipy import stats

from ctcdyn.data import read_tables
from ctcdyn.inference import CountModel, FitData, NUTSSettings, PatientArrays, fit_data, run_nuts
from ctcdyn.simulate import simulate_cohort
from ctcdyn.specs import ModelSpec

SMALL_SPEC = """
[model]
name = "calibration"
title = "Small hierarchical model for the calibration tests"
primary_growth = "exponential"
metastatic_growth = "exponential"
count_family = "poisson"

[parameters.growth_rate]
unit = "1/day"
level = "patient"
prior = { distribution = "lognormal", median = 0.01, sd_log = 0.5 }
between_patients = 0.4
source = "test: doubling in ~70 days at the median"

[parameters.shedding_single]
unit = "1/day"
level = "patient"
prior = { distribution = "lognormal", median = 1e-5, sd_log = 0.5 }
between_patients = 0.5
source = "test: ~10-20 CTC per 7.5 mL at baseline"

[parameters.kill_rate]
unit = "1/day"
level = "population"
prior = { distribution = "lognormal", median = 0.03, sd_log = 0.4 }
source = "test: net decline on treatment"

[parameters.primary_burden0]
unit = "cells"
value = 0.0
source = "test"

[parameters.metastatic_burden0]
unit = "g"
value = 20.0
source = "test"

[parameters.metastatic_growth_rate]
unit = "1/day"
value = 0.01
source = "test"

[parameters.shedding_cluster]
unit = "1/day"
value = 3e-7
source = "test: a few clusters per draw at baseline"

[parameters.half_life_single]
unit = "min"
value = 60.0
source = "test"

[parameters.half_life_cluster]
unit = "min"
value = 8.0
source = "test"

[parameters.cluster_size]
unit = "1"
value = 4.0
source = "test"

[parameters.efficiency_single]
unit = "1"
value = 1e-4
source = "test"

[parameters.efficiency_cluster]
unit = "1"
value = 3e-3
source = "test"

[parameters.circadian_amplitude]
unit = "1"
value = 1.28
source = "test"

[parameters.circadian_peak_hour]
unit = "h"
value = 4.0
source = "test"

[scenarios.default]
assay = "cellsearch"
volume_ml = 7.5
follow_up_days = 200.0
draw_days = [0.0, 35.0, 70.0, 105.0, 140.0]
draw_jitter_days = 3.0
draw_clock_hour = 10.0
draw_clock_hour_sd = 1.5

[[scenarios.default.treatments]]
kind = "cytotoxic"
start = 0.0
end = 70.0
dose = 1.0
"""


def simulated_data(spec: ModelSpec, n_patients: int, seed: int, folder: Path):
    """A cohort simulated as ``ctcdyn simulate`` does, written to CSV and read back to fit."""
    cohort = simulate_cohort(spec, n_patients, jax.random.key(seed))
    paths = cohort.write(folder)
    tables = read_tables(paths["draws"], paths["patients"], paths["treatments"])
    return fit_data(spec, tables), cohort.truth


def prior_replicates(
    model: CountModel, data: FitData, n: int, key
) -> tuple[dict[str, np.ndarray], PatientArrays]:
    """``n`` data sets of the model's own prior predictive on ``data``'s design.

    Returns every site of ``model.sample_parameters`` (leading axis: replicate) and the
    stacked arrays (leading axis: replicate) with the simulated counts in place of the
    observed ones.
    """
    k_par, k_obs = jax.random.split(key)
    sites = Predictive(model.sample_parameters, num_samples=n)(k_par, data.n_patients)
    arrays = jax.tree.map(jnp.asarray, data.arrays)
    values = {name: sites[name] for name in model.spec.sampled}
    draw = jax.jit(jax.vmap(lambda k, v: model.predict(k, arrays, v)))
    counts = draw(jax.random.split(k_obs, n), values)
    batch = jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *jnp.shape(x))), arrays)
    dtype = jnp.result_type(arrays.ctc)
    batch = eqx.tree_at(
        lambda a: (a.ctc, a.clusters),
        batch,
        (counts.singles.astype(dtype), counts.clusters.astype(dtype)),
    )
    return {k: np.asarray(v) for k, v in sites.items()}, batch


@dataclasses.dataclass(frozen=True)
class Ranks:
    """SBC ranks (replicates, quantities) in 0..n_draws, and the quantities' names."""

    ranks: np.ndarray
    names: list[str]
    n_draws: int
    divergences: int


def sbc_ranks(
    model: CountModel,
    batch: PatientArrays,
    truth: dict[str, np.ndarray],
    key,
    settings: NUTSSettings,
    thin: int,
    n_draws: int,
) -> Ranks:
    """Fit every replicate of ``batch``; rank each truth among ``n_draws`` posterior draws,
    every ``thin``-th of each chain (thinning makes them nearly independent, Talts et al. 2018).

    Quantities: every hyperparameter and population-level parameter, each patient's value of
    every patient-level parameter, and the total log likelihood of the replicate's counts
    (a data-dependent quantity that sees the whole parameter vector; Modrak et al. 2023).
    """
    result = run_nuts(model, batch, key, settings)
    population, patient = model.site_names()
    n_patients = truth[patient[0]].shape[1]

    def thinned(x):  # (replicates, chains, samples, ...) -> (replicates, draws, ...)
        x = x[:, :, ::thin]
        x = x.reshape(x.shape[0], -1, *x.shape[3:])
        assert x.shape[1] >= n_draws, (x.shape, n_draws)
        return x[:, :n_draws]

    columns, names = [], []
    for name in population:
        columns.append(_rank(thinned(result.samples[name]), truth[name]))
        names.append(name)
    for name in patient:
        post = thinned(result.samples[name])
        for i in range(n_patients):
            columns.append(_rank(post[:, :, i], truth[name][:, i]))
            names.append(f"{name}[{i}]")
    sampled = model.spec.sampled
    total = lambda a, v: sum(jnp.sum(ll) for ll in model.log_likelihood(a, v))  # noqa: E731
    per_draw = jax.jit(jax.vmap(jax.vmap(total, in_axes=(None, 0)), in_axes=(0, 0)))
    ll_post = per_draw(batch, {k: thinned(result.samples[k]) for k in sampled})
    ll_true = per_draw(batch, {k: truth[k][:, None] for k in sampled})[:, 0]
    columns.append(_rank(np.asarray(ll_post), np.asarray(ll_true)))
    names.append("log_likelihood")
    return Ranks(
        ranks=np.stack(columns, axis=1),
        names=names,
        n_draws=n_draws,
        divergences=int(np.asarray(result.stats["diverging"]).sum()),
    )


def _rank(draws: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.sum(draws < truth[:, None], axis=1)


def uniformity_pvalues(ranks: Ranks, bins: int) -> np.ndarray:
    """Chi-square test of uniform ranks, per quantity, on ``bins`` equal bins of 0..n_draws."""
    if (ranks.n_draws + 1) % bins:
        raise ValueError(f"{ranks.n_draws + 1} rank values do not split into {bins} equal bins")
    width = (ranks.n_draws + 1) // bins
    p = []
    for column in ranks.ranks.T:
        counts = np.bincount(column // width, minlength=bins)
        p.append(stats.chisquare(counts).pvalue)
    return np.asarray(p)
