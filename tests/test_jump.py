"""Exact stochastic simulation (Jump): analytic laws of immigration-death and birth-death."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ctcdyn.dynamics import Circadian, Exponential, Treatments, example_model, solve
from ctcdyn.dynamics._jump import Jump, max_exposure

R = 2000  # replicates per statistical test


def _small_model(growth, primary0, *, shedding_single=0.0):
    """No clusters, no seeding, flat rhythm, no treatment: P and S only."""
    model = example_model()
    return eqx.tree_at(
        lambda m: (
            m.primary_growth,
            m.metastatic_growth,
            m.primary0,
            m.metastatic0,
            m.shedding_single,
            m.shedding_cluster,
            m.efficiency_single,
            m.efficiency_cluster,
            m.circadian,
        ),
        model,
        (growth, growth, primary0, 0.0, shedding_single, 0.0, 0.0, 0.0, Circadian(0.0)),
    )


def _replicates(model, ts, engine, seed, n=R):
    keys = jax.random.split(jax.random.key(seed), n)
    return jax.jit(jax.vmap(lambda k: solve(model, ts, engine, key=k)))(keys)


def test_constant_source_gives_poisson_circulation():
    # Immigration-death (M/M/inf): S(t) ~ Poisson(sigma_s P / k_s). Mean 5.
    model = _small_model(Exponential(0.0), 1000.0, shedding_single=5.0 * 33.27 / 1000.0)
    ts = jnp.array([0.25])  # 12 half-lives: the initial draw is forgotten
    traj = _replicates(model, ts, Jump(), seed=0, n=1000)
    assert bool(jnp.all(traj.ok))
    singles = np.asarray(traj.singles[:, -1])
    mu = float(solve(model, ts).singles[-1])  # FastClearance mean
    # Sample mean: SE sqrt(mu / R). Dispersion var/mean: for Poisson, Var(s^2) = (mu + 2 mu^2)/R,
    # so SD(var/mean) = sqrt((1/mu + 2) / n) = 0.047 here (n = 1000); 4 SD each (false alarm ~1e-4).
    assert abs(singles.mean() - mu) < 4 * math.sqrt(mu / 1000), (singles.mean(), mu)
    dispersion = singles.var(ddof=1) / singles.mean()
    assert abs(dispersion - 1.0) < 4 * math.sqrt((1 / mu + 2) / 1000), dispersion


def test_extinction_probability_of_one_cell():
    # Linear birth-death, b = 1, d = 0.5: extinct by t with q(t) = d (e^{rt} - 1) / (b e^{rt} - d),
    # which tends to d / b = 0.5 (0.4983 at t = 10).
    b, d, t = 1.0, 0.5, 10.0
    model = _small_model(Exponential(b - d, death_rate=d), 1.0)
    traj = _replicates(model, jnp.array([t]), Jump(), seed=1)
    assert bool(jnp.all(traj.ok))
    growth = math.exp((b - d) * t)
    q = d * (growth - 1) / (b * growth - d)
    assert abs(q - d / b) < 0.002
    extinct = float(jnp.mean(traj.primary[:, 0] == 0))
    assert abs(extinct - q) < 4 * math.sqrt(q * (1 - q) / R), (extinct, q)  # binomial, 4 SD


def test_mean_of_linear_birth_death():
    # E P(t) = P0 e^{rt}; Var P(t) = P0 (b + d)/(b - d) e^{rt} (e^{rt} - 1) (Bailey 1964, 8.4).
    b, d, p0, t = 1.0, 0.8, 10.0, 5.0
    model = _small_model(Exponential(b - d, death_rate=d), p0)
    traj = _replicates(model, jnp.array([0.0, t]), Jump(), seed=2)
    primary = np.asarray(traj.primary)
    assert np.all(primary[:, 0] == p0)
    growth = math.exp((b - d) * t)
    mean = p0 * growth
    var = p0 * (b + d) / (b - d) * growth * (growth - 1)
    assert abs(primary[:, 1].mean() - mean) < 4 * math.sqrt(var / R), (primary[:, 1].mean(), mean)
    assert abs(primary[:, 1].var() / var - 1) < 0.25  # SD of s^2/var ~ 0.06 (kurtosis ~ 6)


def test_surgery_is_binomial_thinning():
    model = _small_model(Exponential(0.0), 1000.0)
    treatments = eqx.tree_at(
        lambda tr: (tr.surgery_time, tr.residual_fraction), Treatments.none(), (0.5, 0.3)
    )
    model = eqx.tree_at(lambda m: m.treatments, model, treatments)
    traj = _replicates(model, jnp.array([0.25, 0.5, 1.0]), Jump(), seed=3, n=500)
    primary = np.asarray(traj.primary)
    assert np.all(primary[:, 0] == 1000)  # before
    np.testing.assert_array_equal(primary[:, 1], primary[:, 2])  # saved after the jump at t_s
    assert abs(primary[:, 1].mean() - 300) < 4 * math.sqrt(210 / 500)


def test_max_exposure_bounds_exposure():
    tr = Treatments(
        kind=jnp.array([1, 3]),
        start=jnp.array([0.0, 0.0]),
        end=jnp.array([30.0, 30.0]),
        effect=jnp.array([1.0, 2.0]),
        resistance=jnp.zeros(2),
        dose_interval=jnp.array([1.0, 0.0]),
        dose_hour=jnp.array([8.0, 0.0]),
        drug_half_life=jnp.array([0.25, 1.0]),
    )
    grid = jnp.linspace(0.0, 30.0, 20001)
    exposure = jax.vmap(tr.exposure)(grid)
    assert bool(jnp.all(exposure <= max_exposure(tr)[None, :] * (1 + 1e-12)))
    assert float(jnp.max(exposure[:, 0])) > 0.99 * float(max_exposure(tr)[0])


def test_vmap_over_models_and_keys_and_budget():
    model = _small_model(Exponential(0.1, death_rate=0.1), 20.0, shedding_single=0.5)
    batch = jax.vmap(lambda p0: eqx.tree_at(lambda m: m.primary0, model, p0))(
        jnp.array([5.0, 50.0])
    )
    keys = jax.random.split(jax.random.key(4), 2)
    ts = jnp.linspace(0.0, 2.0, 3)
    traj = jax.jit(jax.vmap(lambda m, k: solve(m, ts, Jump(max_events=5_000), key=k)))(batch, keys)
    assert traj.primary.shape == (2, 3) and bool(jnp.all(traj.ok))
    np.testing.assert_array_equal(traj.primary[:, 0], [5.0, 50.0])
    for name in ("primary", "metastatic", "singles", "clusters", "lesions"):
        values = np.asarray(getattr(traj, name))
        assert np.all(values >= 0) and np.all(values == np.round(values))
    short = solve(model, ts, Jump(max_events=3), key=jax.random.key(5))
    assert not bool(short.ok) and bool(jnp.isnan(short.primary[-1]))
