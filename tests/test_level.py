"""The partially centred singles level of the cohort model (ctcdyn/inference/_level.py).

It changes only the sampler's coordinates: the patient parameters must keep their hierarchical
distribution whatever the weights, and the level's terms must be exactly the factors the
single-CTC counts see as one product.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import handlers
from numpyro.infer import Predictive

from ctcdyn.data import read_tables
from ctcdyn.inference import Population, count_model, fit_data
from ctcdyn.inference._level import LEVEL_SITE, SinglesLevel
from ctcdyn.simulate import simulate_cohort


@pytest.fixture(scope="module")
def data(tmp_path_factory, mbc):
    out = tmp_path_factory.mktemp("cohort")
    simulate_cohort(mbc, 6, jax.random.key(5)).write(out)
    files = [out / f"{t}.csv" for t in ("draws", "patients", "treatments")]
    return fit_data(mbc, read_tables(*files))


def test_the_level_of_mbc_is_burden_shedding_division_half_life_recovery(mbc):
    level = SinglesLevel.from_spec(mbc)
    assert level is not None
    assert set(level.patient) == {"metastatic_burden0", "shedding_single_per_division"}
    assert level.shift == ("growth_rate",)
    assert set(level.population) == {"half_life_single", "recovery"}
    assert level.circadian  # the rhythm's factor in blood at the draws' hours shifts it
    sds = [mbc.parameters[n].between_patients for n in level.patient]
    assert level.prior_sd == pytest.approx(np.sqrt(np.sum(np.square(sds))))


def test_singles_counts_see_only_the_product_of_the_level_terms(mbc, data):
    """Trading a factor between burden and shedding (x 3 against / 3; the clusters' shedding
    too, or their seeding would grow the burden differently) leaves every expected single count
    unchanged; either alone triples them (less the background). The half-life is a term only
    approximately: half-life x 2 against shedding / 2 also changes the seeding of lesions, and
    with it the later counts."""
    model = count_model(mbc, data, None)
    arrays = jax.tree.map(jnp.asarray, data.arrays)
    n = data.n_patients
    values = {
        name: jnp.full((n,), mbc.parameters[name].typical())
        if mbc.parameters[name].level == "patient"
        else jnp.asarray(mbc.parameters[name].typical())
        for name in mbc.sampled
    }

    def singles(**factors):
        changed = {k: v * factors.get(k, 1.0) for k, v in values.items()}
        return np.asarray(model.expected(arrays, changed)[0].singles)

    base = singles()
    traded = singles(
        metastatic_burden0=3.0,
        shedding_single_per_division=1 / 3,
        shedding_cluster_per_division=1 / 3,
    )
    np.testing.assert_allclose(traded, base, rtol=1e-6)
    background = np.asarray(data.arrays.background_per_ml * data.arrays.volume_ml)
    for alone in (singles(metastatic_burden0=3.0), singles(shedding_single_per_division=3.0)):
        assert np.all(alone - background > 2.5 * (base - background))


def test_partial_centring_is_opt_in_and_cohort_only(mbc, data):
    cohort = count_model(mbc, data, None)
    assert cohort.singles_level is None and LEVEL_SITE not in cohort.patient_sites()
    opted = dataclasses.replace(cohort, partial_centring=True)
    assert opted.singles_level == SinglesLevel.from_spec(mbc)
    assert opted.patient_sites()[-1] == LEVEL_SITE and opted != cohort
    single = count_model(mbc, data, Population.from_spec(mbc))
    assert dataclasses.replace(single, partial_centring=True).singles_level is None


def test_weights_are_the_counts_share_of_the_level_precision(mbc, data):
    level = SinglesLevel.from_spec(mbc)
    assert level is not None
    arrays = data.arrays
    w = np.asarray(level.weights(arrays)[0])
    assert w.shape == (data.n_patients,)
    assert np.all((w >= 0) & (w < 1))
    # no counts: non-centred; ever more cells: ever more centred
    none = dataclasses.replace(arrays, ctc=np.zeros_like(np.asarray(arrays.ctc)))
    assert np.all(np.asarray(level.weights(none)[0]) == 0.0)
    many = dataclasses.replace(arrays, ctc=np.where(arrays.ctc_mask, 1000.0, 0.0))
    more = dataclasses.replace(arrays, ctc=np.where(arrays.ctc_mask, 2000.0, 0.0))
    w_many, w_more = np.asarray(level.weights(many)[0]), np.asarray(level.weights(more)[0])
    assert np.all(w_more > w_many) and np.all(w_many > 0.9)
    # censored counts carry no exact information
    censored = dataclasses.replace(many, ctc_censor=np.ones_like(np.asarray(arrays.ctc_censor)))
    assert np.all(np.asarray(level.weights(censored)[0]) == 0.0)


@pytest.mark.parametrize("counts", ["none", "many", "mixed"])
def test_patient_parameters_keep_their_hierarchical_distribution(mbc, data, counts):
    """With the population sites held at values away from the prior medians, the patients'
    unconstrained parameters must be N(location, sd^2) independently, whatever the weights
    (no cells: all 0; thousands: all above 0.9; mixed): mean and covariance of 40,000 patients
    against the exact ones."""
    model = dataclasses.replace(count_model(mbc, data, None), partial_centring=True)
    patient = [n for n in mbc.sampled if mbc.parameters[n].level == "patient"]
    held = {}
    for k, name in enumerate(patient):
        held[f"{name}_median"] = mbc.parameters[name].typical() * np.exp(0.3 * (k - 2))
        held[f"{name}_sd"] = mbc.parameters[name].between_patients * (1.5 + 0.3 * k)
    held |= {"half_life_single": 95.0, "recovery": 0.6, "circadian_amplitude": 0.8}
    for name in mbc.sampled:
        if mbc.parameters[name].level != "patient" and name not in held:
            held[name] = mbc.parameters[name].typical()
    n = 40_000
    arrays = jax.tree.map(lambda x: np.resize(np.asarray(x), (n, *np.shape(x)[1:])), data.arrays)
    rng = np.random.default_rng(1)
    y = {
        "none": np.zeros(arrays.ctc.shape),
        "many": np.full(arrays.ctc.shape, 5000.0),
        "mixed": rng.poisson(rng.lognormal(1.0, 2.0, size=(n, 1)), size=arrays.ctc.shape),
    }[counts]
    arrays = dataclasses.replace(arrays, ctc=np.where(arrays.ctc_mask, y, 0.0))
    weight = np.asarray(model.singles_level.weights(arrays)[0])
    if counts == "none":
        assert weight.max() == 0
    elif counts == "many":
        assert weight.min() > 0.9  # a negative-binomial count carries at most phi of information
    else:  # both regimes well represented
        assert np.mean(weight < 0.5) > 0.1 and np.mean(weight > 0.9) > 0.1
    conditioned = handlers.condition(model.sample_parameters, data=held)
    draws = Predictive(conditioned, num_samples=1)(jax.random.key(2), n, arrays)
    assert LEVEL_SITE in draws
    theta = np.stack([np.log(np.asarray(draws[name][0])) for name in patient])
    location = np.log([held[f"{name}_median"] for name in patient])
    sd = np.array([held[f"{name}_sd"] for name in patient])
    standardised = (theta - location[:, None]) / sd[:, None]
    se = 1 / np.sqrt(n)  # of a mean; sqrt(2) x that of a variance
    np.testing.assert_allclose(standardised.mean(axis=1), 0.0, atol=4.5 * se)
    np.testing.assert_allclose(np.cov(standardised), np.eye(len(patient)), atol=4.5 * 1.5 * se)
