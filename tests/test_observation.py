"""Observation model: assay registry, expected counts, count likelihood and simulation."""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer.util import log_density
from scipy import stats
from scipy.special import logsumexp

from ctcdyn._units import DEFAULT_BLOOD_VOLUME_ML, blood_volume_ml
from ctcdyn.observation import (
    Assay,
    Censor,
    assay_names,
    count_log_prob,
    expected_counts,
    get_assay,
    register_assay,
    sample_counts,
    simulate_draw,
)

Y = np.array([0.0, 1.0, 3.0, 10.0, 25.0])
MU = np.array([2.0, 0.7, 5.0, 4.0, 30.0])
PHI = 2.5


def _nbinom(mu, phi=PHI):
    """scipy's nbinom(n, p) with mean mu and Var = mu + mu^2 / phi."""
    return stats.nbinom(phi, phi / (phi + mu))


# --- assays and expected counts -------------------------------------------------------------


def test_registry_holds_the_documented_assays_with_sources():
    assert assay_names() == ("cellsearch", "leukapheresis", "parsortix")
    for name in assay_names():
        assay = get_assay(name)
        for field in ("recovery", "cluster_recovery", "background_per_ml", "default_volume_ml"):
            assert assay.source(field), f"{name}.{field} has no source"
    assert get_assay("CellSearch").default_volume_ml == 7.5
    parsortix = get_assay("parsortix")
    assert parsortix.background_per_ml * 7.5 == pytest.approx(-math.log(1 - 0.069))
    cellsearch = get_assay("cellsearch")
    lam = cellsearch.background_per_ml * 7.5  # P(>= 2 | Poisson(lam)) = 1/344 (Allard 2004)
    assert 1 - math.exp(-lam) * (1 + lam) == pytest.approx(1 / 344, rel=5e-3)


def test_unknown_assay_names_the_known_ones():
    with pytest.raises(ValueError, match="Unknown assay 'cellsaerch'") as info:
        get_assay("cellsaerch")
    for name in assay_names():
        assert name in str(info.value)


def test_register_and_validate_user_assay():
    mine = Assay(
        name="my_chip",
        recovery=0.5,
        recovery_prior=(5.0, 5.0),
        cluster_recovery=0.9,
        cluster_recovery_prior=(9.0, 1.0),
        background_per_ml=0.0,
        background_prior=(1e-3, 1.0),
        default_volume_ml=4.0,
        sources=(("recovery", "in-house spiking"),),
    )
    register_assay(mine)
    assert get_assay("my_chip") is mine
    with pytest.raises(ValueError, match="already registered"):
        register_assay(mine)
    with pytest.raises(ValueError, match="recovery must lie in"):
        dataclasses.replace(mine, recovery=1.5)
    assert float(mine.recovery_distribution().mean) == pytest.approx(0.5)


def test_expected_counts_linear_in_volume_and_singles():
    assay = get_assay("cellsearch")
    b = assay.background_per_ml
    s, c = 2.0e4, 300.0
    base = expected_counts(s, c, assay=assay, volume_ml=7.5)
    double_v = expected_counts(s, c, assay=assay, volume_ml=15.0)
    double_s = expected_counts(2 * s, 2 * c, assay=assay, volume_ml=7.5)
    np.testing.assert_allclose(double_v.singles, 2 * base.singles, rtol=1e-12)
    np.testing.assert_allclose(double_v.clusters, 2 * base.clusters, rtol=1e-12)
    np.testing.assert_allclose(double_s.singles - b * 7.5, 2 * (base.singles - b * 7.5))
    np.testing.assert_allclose(double_s.clusters, 2 * base.clusters, rtol=1e-12)
    np.testing.assert_allclose(
        base.singles, assay.recovery * 7.5 / DEFAULT_BLOOD_VOLUME_ML * s + b * 7.5, rtol=1e-12
    )
    heavy = expected_counts(s, c, assay=assay, blood_volume_ml=blood_volume_ml(100.0))
    np.testing.assert_allclose(heavy.clusters, base.clusters * 5000.0 / 7000.0, rtol=1e-12)


def test_background_only_when_no_ctcs():
    for name in assay_names():
        assay = get_assay(name)
        means = expected_counts(0.0, 0.0, assay=name)
        np.testing.assert_allclose(means.singles, assay.background_per_ml * assay.default_volume_ml)
        assert float(means.clusters) == 0.0


# --- likelihood against scipy ------------------------------------------------------------------


def test_uncensored_log_prob_matches_scipy():
    np.testing.assert_allclose(count_log_prob(MU, Y), stats.poisson.logpmf(Y, MU), rtol=1e-12)
    # NumPyro's NegativeBinomial2 uses JAX's betaln, good to ~5e-7 in float64.
    np.testing.assert_allclose(
        count_log_prob(MU, Y, family="negbin", concentration=PHI),
        _nbinom(MU).logpmf(Y),
        atol=2e-6,
    )


@pytest.mark.parametrize("family", ["poisson", "negbin"])
def test_censored_log_prob_matches_scipy_and_numpyro(family):
    ref = stats.poisson(MU) if family == "poisson" else _nbinom(MU)
    base = dist.Poisson(MU) if family == "poisson" else dist.NegativeBinomial2(MU, PHI)
    kw = {"family": family, "concentration": PHI}
    right = count_log_prob(MU, Y, censor=Censor.RIGHT, **kw)  # true count >= y
    left = count_log_prob(MU, Y, censor=Censor.LEFT, **kw)  # true count <= y
    np.testing.assert_allclose(right, ref.logsf(Y - 1), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(left, ref.logcdf(Y), rtol=1e-9, atol=1e-12)
    # The convention against NumPyro's wrappers: RIGHT at y is NumPyro's right-censored at y-1.
    ours_right = right[Y > 0]
    numpyro_right = dist.RightCensoredDistribution(base, censored=True).log_prob(Y - 1)[Y > 0]
    np.testing.assert_allclose(ours_right, numpyro_right, rtol=1e-9)
    numpyro_left = dist.LeftCensoredDistribution(base, censored=True).log_prob(Y)
    np.testing.assert_allclose(left, numpyro_left, rtol=1e-9, atol=1e-12)


def test_mixed_flags_in_one_call():
    flags = np.array([0, 1, -1, 0, 1])
    got = count_log_prob(MU, Y, censor=flags)
    want = np.where(
        flags == 1,
        stats.poisson.logsf(Y - 1, MU),
        np.where(flags == -1, stats.poisson.logcdf(Y, MU), stats.poisson.logpmf(Y, MU)),
    )
    np.testing.assert_allclose(got, want, rtol=1e-9)


@pytest.mark.parametrize("family", ["poisson", "negbin"])
def test_far_tails_stay_accurate(family):
    # "> 200" reported as 201, right-censored, when the model mean is 5: NumPyro's wrapper
    # stops at ln(eps) = -36; the direct tail is far below.
    # scipy's logsf underflows there, so the reference sums scipy's log-pmf over the tail.
    mu = np.array([5.0, 1e-3, 50.0])
    y = np.array([201.0, 40.0, 400.0])
    got = count_log_prob(mu, y, censor=Censor.RIGHT, family=family, concentration=PHI)
    for m, k, g in zip(mu, y, got, strict=True):
        ref = stats.poisson(m) if family == "poisson" else _nbinom(m)
        want = logsumexp(ref.logpmf(np.arange(k, k + 5000)))
        if family == "poisson":
            assert want < -36.0  # where NumPyro's RightCensoredDistribution would stop
        np.testing.assert_allclose(g, want, rtol=1e-8)
    # Left-censored "<= y" when the mean is huge.
    mu = np.array([1e4, 3e3])
    y = np.array([0.0, 5.0])
    got = count_log_prob(mu, y, censor=Censor.LEFT, family=family, concentration=200.0)
    for m, k, g in zip(mu, y, got, strict=True):
        ref = stats.poisson(m) if family == "poisson" else _nbinom(m, 200.0)
        np.testing.assert_allclose(g, logsumexp(ref.logpmf(np.arange(k + 1))), rtol=1e-8)


def test_masked_value_contributes_zero_with_finite_gradient():
    y = jnp.array([3.0, jnp.nan, 2.0])
    mask = jnp.array([True, False, True])

    def total(mu):
        return count_log_prob(mu, y, mask=mask, family="negbin", concentration=PHI).sum()

    mu = jnp.array([2.0, 4.0, 1.0])
    lp = count_log_prob(mu, y, mask=mask, family="negbin", concentration=PHI)
    assert float(lp[1]) == 0.0
    grad = jax.grad(total)(mu)
    assert np.all(np.isfinite(grad)) and float(grad[1]) == 0.0


@pytest.mark.parametrize("family", ["poisson", "negbin"])
def test_gradient_finite_at_small_means(family):
    # every (count, censoring flag) pair, exact / right / left, at means from 1e-304 up
    y = jnp.tile(jnp.array([0.0, 1.0, 5.0, 201.0]), 3)
    flags = jnp.repeat(jnp.array([Censor.NONE, Censor.RIGHT, Censor.LEFT]), 4)

    @jax.jit
    def value_and_grad(log_mu):
        def total(log_mu):
            mean = jnp.exp(log_mu)
            lp = count_log_prob(mean, y, censor=flags, family=family, concentration=PHI)
            return lp.sum()

        return jax.value_and_grad(total)(log_mu)

    for log_mu in (-700.0, -30.0, -12.0, -3.0, 8.0):
        value, grad = value_and_grad(jnp.full(12, log_mu))
        assert np.isfinite(value) and np.all(np.isfinite(grad)), (log_mu, value, grad)


@pytest.mark.parametrize("censor", [Censor.RIGHT, Censor.LEFT])
def test_censored_negbin_gradient_in_concentration(censor):
    # JAX's betainc has no derivative in its shape arguments; ours is checked against a
    # central difference of scipy's log tail.
    y, mu, phi = 6.0, 4.0, 1.7

    def ref(p):
        d = _nbinom(mu, p)
        return d.logsf(y - 1) if censor == Censor.RIGHT else d.logcdf(y)

    grad = jax.grad(
        lambda p: count_log_prob(mu, y, censor=censor, family="negbin", concentration=p)
    )(phi)
    h = 1e-5
    np.testing.assert_allclose(grad, (ref(phi + h) - ref(phi - h)) / (2 * h), rtol=1e-5)


def test_inside_a_numpyro_model():
    y, flags = jnp.array([0.0, 3.0, 201.0]), jnp.array([-1, 0, 1])

    def model():
        mu = numpyro.sample("mu", dist.LogNormal(0.0, 1.0))
        numpyro.factor("counts", count_log_prob(mu, y, censor=flags).sum())

    lp, _ = log_density(model, (), {}, {"mu": 2.0})
    tail = logsumexp(stats.poisson.logpmf(np.arange(201, 1000), 2.0))  # P(Y >= 201)
    want = dist.LogNormal(0.0, 1.0).log_prob(2.0) + (
        stats.poisson.logcdf(0, 2.0) + stats.poisson.logpmf(3, 2.0) + tail
    )
    np.testing.assert_allclose(lp, want, rtol=1e-9)


# --- sampling ------------------------------------------------------------------------------


def test_negbin_sampler_moments():
    mean, phi, n = 4.0, 2.0, 200_000
    x = np.asarray(
        sample_counts(jax.random.key(1), jnp.full(n, mean), family="negbin", concentration=phi),
        dtype=float,
    )
    var = mean + mean**2 / phi
    se_mean = math.sqrt(var / n)
    centred = x - x.mean()
    se_var = math.sqrt(np.mean(centred**4) - np.var(x) ** 2) / math.sqrt(n)
    assert abs(x.mean() - mean) < 5 * se_mean
    assert abs(x.var(ddof=1) - var) < 5 * se_var
    assert x.min() >= 0


def test_family_errors_are_clear():
    with pytest.raises(ValueError, match="needs a concentration"):
        count_log_prob(1.0, 1.0, family="negbin")
    with pytest.raises(ValueError, match="Unknown count family"):
        sample_counts(jax.random.key(0), 1.0, family="binomial")  # type: ignore[arg-type]


def test_jit_vmap_simulate_and_likelihood():
    keys = jax.random.split(jax.random.key(0), 8)
    s = jnp.linspace(0.0, 2e5, 8)
    c = jnp.linspace(0.0, 2e3, 8)
    draw = jax.jit(
        jax.vmap(
            functools.partial(simulate_draw, assay="parsortix", family="negbin", concentration=3.0)
        )
    )
    counts = draw(keys, s, c)
    assert counts.singles.shape == (8,) and counts.clusters.shape == (8,)
    assert int(counts.clusters[0]) == 0 and np.all(np.asarray(counts.singles) >= 0)
    # Means of zero CTCs: only background singles, never clusters.
    means = expected_counts(s, c, assay="parsortix")
    loglik = jax.jit(jax.vmap(lambda m, y: count_log_prob(m, y)))(means.singles, counts.singles)
    assert loglik.shape == (8,) and np.all(np.isfinite(loglik))


def test_solver_round_off_below_zero_counts_as_empty_circulation():
    # A compartment that has died out can come back from a solver as -1e-14 cells.
    means = expected_counts(-1e-14, -1e-16, assay="cellsearch", volume_ml=7.5)
    assert float(means.clusters) == 0.0
    assert float(means.singles) == pytest.approx(get_assay("cellsearch").background_per_ml * 7.5)
