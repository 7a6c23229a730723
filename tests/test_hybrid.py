"""Hybrid engine: agrees in law with the exact engine when small, the mean field when large."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from ctcdyn.dynamics import Circadian, Exponential, example_model, solve
from ctcdyn.dynamics._hybrid import Hybrid, _limit_in_loop, limit_law
from ctcdyn.dynamics._jump import Jump


def _branching_model(p0):
    model = example_model()
    growth = Exponential(0.3, death_rate=0.3)  # b = 0.6, d = 0.3
    return eqx.tree_at(
        lambda m: (
            m.primary_growth,
            m.metastatic_growth,
            m.primary0,
            m.metastatic0,
            m.shedding_single,
            m.shedding_cluster,
            m.circadian,
        ),
        model,
        (growth, growth, p0, 0.0, 0.0, 0.0, Circadian(0.0)),
    )


def _replicates(model, ts, engine, seed, n):
    keys = jax.random.split(jax.random.key(seed), n)
    return jax.jit(jax.vmap(lambda k: solve(model, ts, engine, key=k)))(keys)


def test_hybrid_matches_exact_in_law():
    # P0 = 2 cells, t = 12 days: E P = 2 e^{3.6} = 73, the hybrid is deterministic above 30.
    n = 1000
    model = _branching_model(2.0)
    ts = jnp.array([12.0])
    exact = np.asarray(_replicates(model, ts, Jump(), 0, n).primary[:, 0])
    hybrid = np.asarray(_replicates(model, ts, Hybrid(threshold=30.0), 1, n).primary[:, 0])
    # Extinction (q = 0.25 eventually): two-proportion z test at 4 SD; SD = sqrt(2 q (1-q) / n)
    # = 0.019, so a difference of 0.08 is detected with power > 0.5.
    q_exact, q_hybrid = np.mean(exact == 0), np.mean(hybrid == 0)
    pooled = 0.5 * (q_exact + q_hybrid)
    assert abs(q_exact - q_hybrid) < 4 * math.sqrt(2 * pooled * (1 - pooled) / n)
    # log P given survival: two-sample KS at alpha = 1e-3 (critical D = 0.09 for ~750 each).
    ks = stats.ks_2samp(np.log(exact[exact > 0]), np.log(hybrid[hybrid > 0]))
    assert ks.pvalue > 1e-3, ks


def test_hybrid_is_mean_field_above_threshold():
    model = example_model()  # 1e9 + 1e8 cells, Gompertz
    ts = jnp.linspace(0.0, 60.0, 4)
    reference = solve(model, ts)
    plain = Hybrid(branching_noise=False)
    traj = solve(model, ts, plain, key=jax.random.key(2))
    assert bool(traj.ok)
    np.testing.assert_allclose(
        traj.primary, reference.primary, rtol=2e-5
    )  # Heun h=1 d vs Tsit5 1e-6
    np.testing.assert_allclose(traj.metastatic, reference.metastatic, rtol=1e-4)
    # Lesions: Poisson counts around the mean-field N (a few per month at this burden).
    assert np.all(np.diff(np.asarray(traj.lesions)) >= 0)
    # Circulation: Poisson draws around the fast-clearance mean (~3 singles).
    assert np.all(np.asarray(traj.singles) == np.round(np.asarray(traj.singles)))
    # With the branching noise (the default), each population starts from a draw of its limit
    # law: relative sd sqrt((b + d) / ((b - d) n0)) = n0^-1/2 for this pure-birth clone.
    noisy = solve(model, ts, Hybrid(), key=jax.random.key(2))
    for name, n0 in (("primary", 1e9), ("metastatic", 1e8)):
        ratio = np.asarray(getattr(noisy, name)) / np.asarray(getattr(traj, name))
        assert ratio[0] != 1.0 and np.all(np.abs(ratio - 1.0) < 5.0 / math.sqrt(n0)), ratio


def test_seeding_is_poisson_with_the_model_rate():
    model = eqx.tree_at(
        lambda m: (m.primary_growth, m.metastatic_growth, m.primary0, m.metastatic0),
        example_model(),
        (Exponential(0.0), Exponential(0.0), 1e11, 1e4),
    )
    ts = jnp.array([10.0])
    mean = float(solve(model, ts).lesions[0])  # FastClearance: lambda t
    traj = _replicates(model, ts, Hybrid(), 3, 500)
    lesions = np.asarray(traj.lesions[:, 0])
    assert abs(lesions.mean() - mean) < 4 * math.sqrt(mean / 500), (lesions.mean(), mean)
    assert abs(lesions.var(ddof=1) / lesions.mean() - 1) < 4 * math.sqrt((1 / mean + 2) / 500)


def test_vmap_over_models_and_budget():
    model = _branching_model(5.0)
    batch = jax.vmap(lambda p0: eqx.tree_at(lambda m: m.primary0, model, p0))(jnp.array([5.0, 1e5]))
    keys = jax.random.split(jax.random.key(4), 2)
    ts = jnp.linspace(0.0, 10.0, 3)
    traj = jax.jit(jax.vmap(lambda m, k: solve(m, ts, Hybrid(threshold=100.0), key=k)))(batch, keys)
    assert traj.primary.shape == (2, 3) and bool(jnp.all(traj.ok))
    short = solve(model, ts, Hybrid(max_events=2), key=jax.random.key(5))
    assert not bool(short.ok)


# Limit law of a birth-death clone (b = 0.6, d = 0.3 per day) from 10 cells: mean n, variance
# n (b + d) / (b - d) = 30, extinction (d / b)^n = 2^-10 (Kendall 1948).
LAW_CELLS, LAW_BIRTH, LAW_DEATH = 10.0, 0.6, 0.3


def _check_limit_law(w, with_atom=True):
    n, b, d = LAW_CELLS, LAW_BIRTH, LAW_DEATH
    size = w.size
    variance = n * (b + d) / (b - d)
    assert abs(w.mean() - n) < 4 * math.sqrt(variance / size), w.mean()
    # SE of the sample variance from the sample's fourth central moment.
    se_var = math.sqrt((np.mean((w - w.mean()) ** 4) - w.var() ** 2) / size)
    assert abs(w.var(ddof=1) - variance) < 4 * se_var, (w.var(ddof=1), variance)
    if with_atom:
        q = (d / b) ** n
        assert abs(np.mean(w == 0) - q) < 4 * math.sqrt(q * (1 - q) / size) + 1e-4


def test_limit_law_has_the_branching_moments_and_extinction():
    n = 40_000
    keys = jax.random.split(jax.random.key(6), n)
    cells, b, d = (jnp.asarray(x) for x in (LAW_CELLS, LAW_BIRTH, LAW_DEATH))
    _check_limit_law(np.asarray(jax.vmap(lambda k: limit_law(k, cells, b, d))(keys)))
    # Inside the loop, from lineage draws made in advance (exact), and from one uniform
    # (moment-matched gamma, no atom at 0).
    fates = jax.random.exponential(jax.random.key(7), (n, 2, 18))
    uniforms = jax.random.uniform(jax.random.key(8), (n, 2))
    pair = jnp.full(2, cells), jnp.full(2, b), jnp.full(2, d)

    def inside(f, u, fresh):
        return _limit_in_loop(*pair, f, jnp.full(2, fresh), u)

    exact = np.asarray(jax.vmap(lambda f, u: inside(f, u, True))(fates, uniforms))
    _check_limit_law(exact.ravel())
    gamma = np.asarray(jax.vmap(lambda f, u: inside(f, u, False))(fates, uniforms))
    _check_limit_law(gamma.ravel(), with_atom=False)
    # b <= d (shrinking): no limit law, the population is kept as it is.
    kept = limit_law(jax.random.key(9), cells, jnp.asarray(0.3), jnp.asarray(0.4))
    assert float(kept) == LAW_CELLS


@pytest.mark.parametrize(("p0", "days"), [(8.0, 17.0), (30.0, 12.0)])
def test_branching_noise_keeps_the_exact_law_of_the_size_above_the_threshold(p0, days):
    # Threshold 20 cells (that of ctcdyn.mrd.default_engine()); clones of 8 cells (exact below
    # it, then a switch inside the loop) and of 30 cells (mean field from the start), b = 0.6,
    # d = 0.3: at t = days every surviving clone is far above the threshold (~1e3 cells) and
    # log size = r t + log W up to O(n^-1/2), so its law given survival is that of the time to
    # reach a large size. The exact engine against the hybrid: two-sample KS at alpha = 1e-3
    # (critical D = 0.062 for ~2000 each), and the extinction probabilities (d/b)^p0 (0.004 and
    # 1e-9) by a two-proportion z test.
    n = 2000
    model = _branching_model(p0)
    ts = jnp.array([days])
    exact = np.asarray(_replicates(model, ts, Jump(max_events=200_000), 0, n).primary[:, 0])
    hybrid = np.asarray(_replicates(model, ts, Hybrid(threshold=20.0), 1, n).primary[:, 0])
    q_exact, q_hybrid = np.mean(exact == 0), np.mean(hybrid == 0)
    pooled = 0.5 * (q_exact + q_hybrid)
    assert abs(q_exact - q_hybrid) <= 4 * math.sqrt(2 * pooled * (1 - pooled) / n) + 1e-12
    ks = stats.ks_2samp(np.log(exact[exact > 0]), np.log(hybrid[hybrid > 0]))
    assert ks.pvalue > 1e-3, ks
    # The test has power: without the branching noise (the plain switch) the law above the
    # threshold is too narrow and the same comparison rejects it.
    plain = Hybrid(threshold=20.0, branching_noise=False)
    narrow = np.asarray(_replicates(model, ts, plain, 1, n).primary[:, 0])
    assert stats.ks_2samp(np.log(exact[exact > 0]), np.log(narrow[narrow > 0])).pvalue < 1e-3
