"""SDE engine: the deterministic limit, geometric growth noise and the OU shedding multiplier."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctcdyn.dynamics import (
    Circadian,
    Exponential,
    clock_hour,
    example_model,
    periodic_circulation,
    solve,
)
from ctcdyn.dynamics._sde import SDE

R = 2000


def test_zero_noise_converges_to_fast_clearance():
    model = example_model()
    ts = jnp.linspace(0.0, 100.0, 5)
    reference = solve(model, ts)
    errors = []
    for dt in (0.2, 0.1):
        traj = solve(model, ts, SDE(dt=dt), key=jax.random.key(0))
        assert bool(traj.ok)
        errors.append(float(jnp.max(jnp.abs(traj.metastatic / reference.metastatic - 1))))
    # Euler: global error O(dt); measured 3.2e-3 at dt = 0.2.
    assert errors[1] < 5e-3
    assert 1.6 < errors[0] / errors[1] < 2.4, errors


@pytest.fixture(scope="module")
def noisy():
    r, sigma, s, theta = 0.05, 0.2, 0.5, 0.5
    model = eqx.tree_at(
        lambda m: (m.primary_growth, m.metastatic_growth, m.primary0, m.metastatic0, m.circadian),
        example_model(),
        (Exponential(r), Exponential(r), 1e3, 0.0, Circadian(0.0)),
    )
    model = eqx.tree_at(lambda m: (m.efficiency_single, m.efficiency_cluster), model, (0.0, 0.0))
    engine = SDE(growth_noise=sigma, shedding_noise=s, shedding_reversion=theta, dt=0.1)
    ts = jnp.array([20.0])
    keys = jax.random.split(jax.random.key(1), R)
    traj = jax.jit(jax.vmap(lambda k: solve(model, ts, engine, key=k)))(keys)
    return model, engine, traj, (r, sigma, s, theta)


def test_geometric_growth_noise(noisy):
    _, _, traj, (r, sigma, _, _) = noisy
    t = 20.0
    p = np.asarray(traj.primary[:, 0])
    mean = 1e3 * math.exp(r * t)
    # SE of the mean: mean sqrt(e^{sigma^2 t} - 1) / sqrt(R) (lognormal), 4 SE.
    assert abs(p.mean() / mean - 1) < 4 * math.sqrt(math.expm1(sigma**2 * t) / R)
    # Var log P = sigma^2 t; SE of a sample variance sigma^2 t sqrt(2 / R); 4 SE.
    assert abs(np.log(p).var() - sigma**2 * t) < 4 * sigma**2 * t * math.sqrt(2 / R)


def test_ou_shedding_multiplier(noisy):
    model, engine, traj, (_, _, s, theta) = noisy
    t = 20.0
    base, _ = jax.vmap(lambda b: periodic_circulation(model, t, b, clock_hour(t)))(
        traj.primary[:, 0] + traj.metastatic[:, 0]
    )
    factor = np.asarray(traj.singles[:, 0] / base)
    var = s**2 / (2 * theta)
    assert engine.stationary_variance == pytest.approx(var)
    assert abs(np.log(factor).var() - var) < 4 * var * math.sqrt(2 / R)
    assert abs(factor.mean() - 1) < 4 * math.sqrt(math.expm1(var) / R)  # stationary mean 1


def test_vmap_over_models():
    model = example_model()
    batch = jax.vmap(lambda p0: eqx.tree_at(lambda m: m.primary0, model, p0))(jnp.array([1e8, 1e9]))
    keys = jax.random.split(jax.random.key(3), 2)
    ts = jnp.linspace(0.0, 5.0, 3)
    engine = SDE(growth_noise=0.05, dt=0.1)
    traj = jax.jit(jax.vmap(lambda m, k: solve(m, ts, engine, key=k)))(batch, keys)
    assert traj.primary.shape == (2, 3) and bool(jnp.all(traj.ok))
    np.testing.assert_allclose(traj.primary[:, 0], [1e8, 1e9])
