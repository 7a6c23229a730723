"""Hybrid engine: agrees in law with the exact engine when small, the mean field when large."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from ctcdyn.dynamics import Circadian, Exponential, example_model, solve
from ctcdyn.dynamics._hybrid import Hybrid
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
    traj = solve(model, ts, Hybrid(), key=jax.random.key(2))
    assert bool(traj.ok)
    np.testing.assert_allclose(
        traj.primary, reference.primary, rtol=2e-5
    )  # Heun h=1 d vs Tsit5 1e-6
    np.testing.assert_allclose(traj.metastatic, reference.metastatic, rtol=1e-4)
    # Lesions: Poisson counts around the mean-field N (a few per month at this burden).
    assert np.all(np.diff(np.asarray(traj.lesions)) >= 0)
    # Circulation: Poisson draws around the fast-clearance mean (~3 singles).
    assert np.all(np.asarray(traj.singles) == np.round(np.asarray(traj.singles)))


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
