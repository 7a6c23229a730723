"""Statistical validity of the inference engine (slow): parameter recovery and simulation-based
calibration of the hierarchical cohort model.

Run with ``pytest -m slow tests/test_calibration.py`` (a few minutes on 2 CPU cores). Both use
the small spec of ``_calibration.py``; every random number comes from a fixed key.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import numpy as np
import pytest
from _calibration import (
    SMALL_SPEC,
    Ranks,
    prior_replicates,
    sbc_ranks,
    simulated_data,
    uniformity_pvalues,
)

from ctcdyn.inference import NUTSSettings, count_model, fit
from ctcdyn.specs import load_spec
from ctcdyn.store import summarize

pytestmark = pytest.mark.slow

#: SBC: replicates of the correct model (power against mild miscalibration grows with them:
#: 128 ranks in 10 bins expect 12.8 per bin) and of the broken one (its miscalibration is gross).
N_CORRECT, N_BROKEN = 128, 32
#: Posterior draws each truth is ranked among: every 4th of 2 x 200, less one, so that the 100
#: possible ranks split into 10 equal bins.
SBC_NUTS = NUTSSettings(chains=2, warmup=150, samples=200, max_tree_depth=5)
THIN, N_DRAWS, BINS = 4, 99, 10
#: Family-wise level of the uniformity test over all ranked quantities (Bonferroni).
ALPHA = 0.01
#: Expected counts of the broken model relative to the true ones.
BROKEN_SCALE = 1.5


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "calibration.toml"
    path.write_text(SMALL_SPEC)
    return load_spec(path)


def test_cohort_fit_covers_true_patient_values(spec, tmp_path):
    """90% credible intervals of a hierarchical fit cover the true per-patient values ~90% of
    the time.

    Method: simulate 60 patients with ``simulate_cohort`` (population medians at the prior
    medians, between-patient SDs at the spec's ``between_patients``: the centre of the fitted
    model's hyperprior, so the fit's patient-level posteriors are calibrated given a good
    estimate of the population), fit the cohort model by NUTS, and pool the indicators
    "q5 <= truth <= q95" over both patient-level parameters and all patients (120 intervals).

    Threshold: with independent indicators the coverage has binomial sd sqrt(0.9 x 0.1 / 120)
    = 0.027; the band 0.9 +- 3 sd = [0.82, 0.98] fails with probability 0.3% for a calibrated
    fit. The indicators share the population estimates, which widens the true spread a little;
    intervals too narrow (wrong likelihood, stuck chains) or too wide (data ignored) leave it.
    The fit must also converge (R-hat < 1.05), else coverage means nothing.
    """
    data, truth = simulated_data(spec, 60, seed=20240601, folder=tmp_path)
    nuts = NUTSSettings(chains=2, warmup=300, samples=300)
    result = fit(spec, data, jax.random.key(7), nuts=nuts)
    summary = summarize(result.tree).set_index("parameter")
    model = count_model(spec, data, None)
    _, patient_level = model.site_names()
    inside = []
    for name in patient_level:
        true = truth.set_index("patient_id")[name]
        rows = summary.loc[[f"{name}[{pid}]" for pid in data.patient_ids]]
        assert rows["r_hat"].max() < 1.05, rows["r_hat"].max()
        values = true.loc[list(data.patient_ids)].to_numpy()
        inside.append((rows["q5"].to_numpy() <= values) & (values <= rows["q95"].to_numpy()))
    covered = np.concatenate(inside)
    coverage = covered.mean()
    sd = np.sqrt(0.9 * 0.1 / covered.size)
    print(f"coverage of 90% intervals: {coverage:.3f} over {covered.size} (binomial sd {sd:.3f})")
    assert abs(coverage - 0.9) <= 3 * sd, (coverage, covered.size)


@pytest.fixture(scope="module")
def sbc(spec, tmp_path_factory) -> tuple[Ranks, Ranks]:
    """Ranks of the correct model's replicates and of the broken model's (one NUTS batch).

    Design fixed: draw times, treatments and weights of 4 simulated patients, 5 draws each.
    Truth and data: the cohort model's own prior predictive (``sample_parameters``, with its
    hyperpriors; not ``simulate_cohort``, whose between-patient SDs are fixed). The broken
    variant fits the same data with every draw's volume 1.5x the real one, i.e. with expected
    counts 1.5x too high; it shares the compiled sampler with the correct one.
    """
    data, _ = simulated_data(spec, 4, seed=3, folder=tmp_path_factory.mktemp("design"))
    model = count_model(spec, data, None)
    truth, batch = prior_replicates(model, data, N_CORRECT + N_BROKEN, jax.random.key(11))
    scale = np.where(np.arange(N_CORRECT + N_BROKEN) < N_CORRECT, 1.0, BROKEN_SCALE)
    batch = eqx.tree_at(lambda a: a.volume_ml, batch, batch.volume_ml * scale[:, None, None])
    ranks = sbc_ranks(model, batch, truth, jax.random.key(12), SBC_NUTS, THIN, N_DRAWS)
    transitions = (N_CORRECT + N_BROKEN) * SBC_NUTS.chains * SBC_NUTS.samples
    print(f"SBC: {ranks.divergences} divergent transitions of {transitions}")
    # Divergences flag regions NUTS cannot explore: a few are tolerable, many bias the ranks.
    assert ranks.divergences < 0.005 * transitions, ranks.divergences

    def part(rows):
        return Ranks(ranks.ranks[rows], ranks.names, ranks.n_draws, ranks.divergences)

    return part(slice(0, N_CORRECT)), part(slice(N_CORRECT, None))


def _report(label: str, ranks: Ranks) -> float:
    p = uniformity_pvalues(ranks, BINS)
    for name, value in zip(ranks.names, p, strict=True):
        print(f"{label} {name}: p = {value:.3g}")
    return float(p.min()) * p.size  # Bonferroni-adjusted smallest p-value


def test_sbc_ranks_of_the_cohort_model_are_uniform(sbc):
    """Simulation-based calibration (Talts et al. 2018) of the hierarchical cohort model.

    Method: for each of 128 replicates draw parameters from the model's prior and counts from
    its likelihood, fit by NUTS, and rank the true value among 99 posterior draws (every 4th
    draw of 2 chains, thinned so that the draws are nearly independent). If the sampler draws
    from the exact posterior, each rank is uniform on 0..99 for every quantity: the five
    hyperparameters and population-level parameters, each patient's growth rate and shedding
    rate, and the log likelihood of the data (which responds to errors in any direction).

    Test statistic: Pearson's chi-square of the ranks in 10 equal bins (9 df), one per
    quantity (14); the smallest p-value times 14 (Bonferroni) must exceed 0.01, so a calibrated
    engine fails with probability < 1%. The broken variant below shows the same test rejects.
    """
    correct, _ = sbc
    adjusted = _report("correct", correct)
    assert adjusted > ALPHA, adjusted


def test_sbc_rejects_a_model_with_wrong_expected_counts(sbc):
    """The SBC test of the previous test rejects a deliberately broken fit.

    The data of 32 replicates come from the model; the fit sees draws 1.5x larger than the
    truth (expected counts scaled by 1.5), so the shedding rates and their median come out
    1.5x too low and the truth's log likelihood under the fitted model is too low. The same
    Bonferroni-adjusted chi-square test must reject at the family-wise level 0.01. (With
    fewer replicates than the correct model's: the miscalibration is gross, and a test with
    less power that still rejects shows the check is not vacuous.)
    """
    _, broken = sbc
    adjusted = _report("broken", broken)
    assert adjusted < ALPHA, adjusted


def test_sbc_of_the_partially_centred_singles_level(spec, tmp_path_factory):
    """The same SBC with the opt-in partially centred singles level (``partial_centring``):
    the reparameterisation depends on the data (each patient's weight comes from its counts),
    so calibration of the correct model's replicates is checked with it on as well."""
    data, _ = simulated_data(spec, 4, seed=3, folder=tmp_path_factory.mktemp("design"))
    model = dataclasses.replace(count_model(spec, data, None), partial_centring=True)
    assert model.singles_level is not None
    truth, batch = prior_replicates(model, data, N_CORRECT, jax.random.key(11))
    ranks = sbc_ranks(model, batch, truth, jax.random.key(12), SBC_NUTS, THIN, N_DRAWS)
    transitions = N_CORRECT * SBC_NUTS.chains * SBC_NUTS.samples
    print(f"SBC, partially centred: {ranks.divergences} divergent transitions of {transitions}")
    assert ranks.divergences < 0.005 * transitions, ranks.divergences
    adjusted = _report("partially centred", ranks)
    assert adjusted > ALPHA, adjusted
