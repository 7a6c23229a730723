"""The full ODE engine: steady state, clearance after resection, and argument checks."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _factories import constant_model, grid, model, treatments

from ctcdyn.dynamics import ODE, Circadian, FastClearance, solve


def flat() -> Circadian:
    return Circadian(amplitude=jnp.float64(0.0), peak_hour=jnp.float64(4.0))


def test_steady_state_is_source_over_clearance():
    m = constant_model(circadian=flat())
    traj = solve(m, grid(np.linspace(0.0, 5.0, 49)), ODE())
    assert traj.ok
    a = float(m.primary0)
    # The exact steady state; the solver only adds rounding-level drift (its vector field is 0).
    np.testing.assert_allclose(traj.singles, m.shedding_single * a / m.clearance_single, rtol=1e-9)
    np.testing.assert_allclose(
        traj.clusters, m.shedding_cluster * a / m.clearance_cluster, rtol=1e-9
    )
    np.testing.assert_allclose(traj.primary, a, rtol=1e-12)
    field = m.vector_field(0.3, jax.tree.map(lambda x: x[0], traj.state))
    np.testing.assert_allclose(field.singles, 0.0, atol=1e-12 * float(traj.singles[0]))


def test_decay_after_complete_resection_at_the_configured_half_lives():
    t_s = 2.3  # 07:12, away from the grid of whole days
    m = model(
        treatment=treatments(surgery_time=t_s, residual_fraction=0.0),
        metastatic0=0.0,
        efficiency_single=0.0,
        efficiency_cluster=0.0,
    )
    hl_s, hl_c = float(m.half_life_single), float(m.half_life_cluster)
    j = np.arange(1, 9)
    ts = grid([0.0, t_s - 1e-3, t_s], t_s + j * hl_s, t_s + j * hl_c)
    traj = solve(m, ts, ODE())
    t = np.asarray(ts)
    i = int(np.searchsorted(t, t_s))
    s_s, c_s = float(traj.singles[i]), float(traj.clusters[i])
    after = t > t_s
    # S(t) = S(t_s) 2^{-(t - t_s)/half-life} exactly (no source once P = 0 and M = 0). Error:
    # dense output between Kvaerno5 steps, a few 1e-6 of the values within a step, which after
    # a switch are those at t_s (measured 3e-8 absolute on C(t_s) = 0.02): 1e-5 of S(t_s).
    np.testing.assert_allclose(
        traj.singles[after], s_s * 2.0 ** (-(t[after] - t_s) / hl_s), rtol=0, atol=1e-5 * s_s
    )
    np.testing.assert_allclose(
        traj.clusters[after], c_s * 2.0 ** (-(t[after] - t_s) / hl_c), rtol=0, atol=1e-5 * c_s
    )
    # The circulation does not jump at surgery (only P does): S(t_s) continues S(t_s^-).
    np.testing.assert_allclose(s_s, traj.singles[i - 1], rtol=0.05)  # 1.4 min of circadian drift
    # FastClearance treats the circulation as quasi-steady: S = 0 from t_s on. The difference is
    # the 3.5 h tail (7 half-lives of singles) that the ODE resolves; see test_fast_clearance.
    fast = solve(m, ts, FastClearance())
    assert jnp.all(fast.singles[t >= t_s] == 0.0) and jnp.all(fast.clusters[t >= t_s] == 0.0)


def test_bad_arguments_raise_clear_errors():
    m = model()
    with pytest.raises(ValueError, match="1-D"):
        solve(m, jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="non-decreasing"):
        solve(m, jnp.array([0.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match=">= 0"):
        solve(m, jnp.array([-1.0, 2.0]))
    with pytest.raises(ValueError, match="deterministic"):
        solve(m, jnp.array([0.0, 1.0]), ODE(), key=jax.random.key(0))
    with pytest.raises(ValueError, match="deterministic"):
        solve(m, jnp.array([0.0, 1.0]), key=jax.random.key(0))
    assert math.isfinite(float(solve(m, [0, 1]).singles[-1]))  # integers are promoted
