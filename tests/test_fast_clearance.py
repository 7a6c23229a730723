r"""The fast-clearance engine against its own formulas and against the full ODE.

Error bound (``_circulation``), per harmonic: with the source growing at rate g = d ln A/dt, the
true response of harmonic n is b_n A / (k + g + i n w) where the fast form uses
b_n A / (k + i n w), so |error_n| <= (g / k) |S_n|. Summed: |S_fast - S| <= (g/k) sum_n |S_n|,
i.e. g/k of the peak envelope (at the circadian trough this is more than g/k of S itself).
Clusters feed singles through dissociation, adding g / (k_c + delta) <= g / k_c.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _factories import N_TIMES, grid, model, treatments

from ctcdyn.dynamics import (
    ODE,
    Circadian,
    FastClearance,
    TreatmentKind,
    daily_mean_circulation,
    solve,
)
from ctcdyn.dynamics._circadian import N_HARMONICS


def circulation_harmonics(m, t, burden):
    """Complex amplitudes (S_n, C_n) of the periodic circulation, straight from the formula
    (module docstring of ctcdyn/dynamics/_circulation.py); an independent reference for the
    engine's real-arithmetic sums."""
    shed = burden * m.treatments.shedding_factor(t)
    delta = m.treatments.dissociation_rate(t)
    b = m.circadian.harmonics()
    iw = 1j * 2 * np.pi * jnp.arange(N_HARMONICS + 1)
    c_n = m.shedding_cluster * shed * b / (m.clearance_cluster + delta + iw)
    s_n = (m.shedding_single * shed * b + m.cluster_size * delta * c_n) / (m.clearance_single + iw)
    return s_n, c_n


#: Measured max relative errors are printed with `pytest -s` for the report.
TS = grid(np.linspace(0.0, 2.0, 25), np.linspace(2.5, 60.0, N_TIMES - 25))


def test_daily_mean_is_source_over_clearance_with_dissociation():
    m = model("gompertz", "dissociation")
    s0, c0 = daily_mean_circulation(m, 10.0, 1e9)
    delta = 50.0
    c_ref = m.shedding_cluster * 1e9 / (m.clearance_cluster + delta)
    s_ref = (m.shedding_single * 1e9 + m.cluster_size * delta * c_ref) / m.clearance_single
    np.testing.assert_allclose([s0, c0], [s_ref, c_ref], rtol=1e-14)


def _envelope_bound(m, traj):
    """Per-time absolute bounds on |S_fast - S_ode| and |C_fast - C_ode| (module docstring)."""
    ode = ODE()
    rates = jax.vmap(lambda t, y: m.vector_field(t, y))(traj.ts, traj.state)
    g = np.max(np.abs(np.asarray((rates.primary + rates.metastatic) / traj.state.burden)))
    s_n, c_n = jax.vmap(lambda t, a: circulation_harmonics(m, t, a))(traj.ts, traj.state.burden)
    k_s, k_c = float(m.clearance_single), float(m.clearance_cluster)
    # Solver error of the ODE on top: dense output, ~1e-5 relative (see test_circadian).
    env_s = np.sum(np.abs(np.asarray(s_n)), axis=1)
    env_c = np.sum(np.abs(np.asarray(c_n)), axis=1)
    return (
        g,
        g * (1 / k_s + 1 / k_c) * env_s + 10 * ode.rtol * 100 * env_s,
        (g / k_c * env_c + 1e-5 * env_c),
    )


@pytest.mark.parametrize("treatment", ["none", "dissociation", "cytotoxic"])
def test_fast_clearance_agrees_with_ode_within_bound(treatment):
    m = model("gompertz", treatment)
    ode = solve(m, TS, ODE())
    fast = solve(m, TS, FastClearance())
    assert ode.ok and fast.ok
    t = np.asarray(TS)
    switches = np.asarray(m.treatments.switch_times(32))
    switches = switches[np.isfinite(switches)]
    # Away from switches: 20 half-lives of singles (2^-20 of a jump left: 1e-6).
    hl = float(m.half_life_single)
    away = np.all(np.abs(t[:, None] - switches[None, :]) > 20 * hl, axis=1) | (switches.size == 0)
    g, bound_s, bound_c = _envelope_bound(m, ode)
    err_s = np.abs(np.asarray(fast.singles - ode.singles))
    err_c = np.abs(np.asarray(fast.clusters - ode.clusters))
    rel_s = np.max(err_s[away] / np.asarray(ode.singles)[away])
    rel_c = np.max(err_c[away] / np.asarray(ode.clusters)[away])
    print(f"\n[{treatment}] g={g:.3g}/d max rel err singles {rel_s:.2e} clusters {rel_c:.2e}")
    assert np.all(err_s[away] <= bound_s[away])
    assert np.all(err_c[away] <= bound_c[away])
    # Slow compartments: same equations, only the seeding rate is a daily mean, which moves M by
    # ~N cells (M ~ 1e8); P, M agree to the solvers' dense-output accuracy (1e-5).
    np.testing.assert_allclose(fast.primary, ode.primary, rtol=1e-5)
    np.testing.assert_allclose(fast.metastatic, ode.metastatic, rtol=1e-5)
    # Lesions: the engine integrates the daily-mean seeding and adds the rhythm's periodic
    # antiderivative sum_n Re(lambda_n e^{in theta} / (i n w)). What is left (by parts, with the
    # source growing at rate g): the g/k error of every amplitude, (g/k_s)(N + W) with W the
    # wiggle's size, plus the drift of lambda_n under the antiderivative, 2 sum g|lambda_n|/(n w)^2.
    s_n, c_n = jax.vmap(lambda t, a: circulation_harmonics(m, t, a))(ode.ts, ode.state.burden)
    lam_n = np.abs(
        np.asarray(
            m.efficiency_single * m.clearance_single * s_n
            + m.efficiency_cluster * m.clearance_cluster * c_n
        )
    )
    n = np.arange(lam_n.shape[1])[1:]
    w = 2 * np.pi
    wiggle = 2 * np.sum(lam_n[:, 1:] / (n * w), axis=1)
    drift = 2 * g * np.sum(lam_n[:, 1:] / (n * w) ** 2, axis=1)
    lesions = np.asarray(ode.lesions)
    err_n = np.abs(np.asarray(fast.lesions - ode.lesions))
    rel_n = np.max(err_n[t > 5] / lesions[t > 5])
    print(f"[{treatment}] lesions max rel err after day 5 {rel_n:.2e}")
    k_s = float(m.clearance_single)
    assert np.all(err_n <= g / k_s * (lesions + wiggle) + drift + 1e-5 * lesions)


@pytest.mark.parametrize(
    ("treatment", "clock_basis"), [("none", True), ("none", False), ("dissociation", True)]
)
def test_circulation_path_equals_the_complex_formula(treatment, clock_basis):
    """The engine's real sums (one matrix product over the clock basis, or the loop per time)
    against the complex amplitudes, at many clock hours."""
    from ctcdyn.dynamics import clock_hour
    from ctcdyn.dynamics._circulation import circulation_path

    m = model("gompertz", treatment, circadian=Circadian(amplitude=1.28, peak_hour=5.3))
    ts = jnp.linspace(0.0, 10.0, 97)  # every 2.5 h, inside and outside the drug's interval
    burden = 1e9 * jnp.exp(0.02 * ts)
    singles, clusters, _ = circulation_path(m, ts, burden, clock_hour(ts), clock_basis=clock_basis)
    s_n, c_n = jax.vmap(lambda t, a: circulation_harmonics(m, t, a))(ts, burden)
    rotation = jnp.exp(
        1j * jnp.arange(N_HARMONICS + 1) * m.circadian.phase(clock_hour(ts))[:, None]
    )
    np.testing.assert_allclose(singles, jnp.real(jnp.sum(s_n * rotation, axis=1)), rtol=1e-12)
    np.testing.assert_allclose(clusters, jnp.real(jnp.sum(c_n * rotation, axis=1)), rtol=1e-12)


#: The engine as it was before the dense path and the clock basis: saving inside the loop.
SAVED = FastClearance(dense_steps=0, clock_basis=False)
DENSE = FastClearance(dense_min_times=0)  # the dense path on the short test grids too


def test_the_dense_path_is_chosen_by_grid_length():
    """Long (daily) grids take the dense path; short ones, where compiling it would cost more
    than it saves, and ``dense_steps=0`` save inside the solver's loop."""
    engine = FastClearance()
    assert engine.uses_dense_path(jnp.zeros(5 * 365))
    assert not engine.uses_dense_path(jnp.zeros(N_TIMES))
    assert not FastClearance(dense_steps=0).uses_dense_path(jnp.zeros(5 * 365))
    assert DENSE.uses_dense_path(jnp.zeros(N_TIMES))


def _stack(*models):
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *models)


def _assert_same_state(a, b, rtol):
    for name in ("primary", "metastatic", "singles", "clusters", "lesions"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=rtol, err_msg=name)


def test_dense_path_equals_saving_inside_the_loop():
    """The dense path evaluates the same Tsit5 interpolant at the same steps as SaveAt(ts), so
    the two agree to rounding: one vmapped batch with an untreated patient, one operated at day
    10.3 (between save times) during a continuous cytotoxic course (switches on and off), and
    one operated exactly at a save time while clusters are dissociated."""
    operated = treatments(
        TreatmentKind.CYTOTOXIC,
        start=5.0,
        end=40.0,
        effect=0.1,
        resistance=0.02,
        surgery_time=10.3,
        residual_fraction=0.01,
    )
    at_save_time = treatments(
        TreatmentKind.CLUSTER_DISSOCIATION,
        start=3.2,
        end=25.0,
        effect=50.0,
        surgery_time=20.0,
        residual_fraction=0.1,
    )
    cohort = _stack(model("gompertz"), model("gompertz", operated), model("gompertz", at_save_time))
    ts = grid(np.linspace(0.0, 2.0, 9), [20.0], np.linspace(3.0, 300.0, N_TIMES - 10))
    engine = DENSE
    # The dense path itself (not its fallback) finishes for every patient ...
    ys, ok, complete = jax.vmap(lambda m: engine._dense(m, ts))(cohort)
    assert np.all(complete) and np.all(ok)
    saved, saved_ok = jax.vmap(lambda m: SAVED.slow(m, ts))(cohort)
    assert np.all(saved_ok)
    for name in ("primary", "metastatic", "lesions"):
        np.testing.assert_allclose(getattr(ys, name), getattr(saved, name), rtol=1e-10)
    # ... and the whole engine agrees with the engine as it was.
    fast = jax.vmap(lambda m: solve(m, ts, engine))(cohort)
    before = jax.vmap(lambda m: solve(m, ts, SAVED))(cohort)
    assert np.all(fast.ok) and np.all(before.ok)
    _assert_same_state(fast.state, before.state, rtol=1e-10)
    after = int(np.argmax(np.asarray(ts) > 10.3))  # first save time after the surgery
    assert float(fast.primary[1, after]) < 0.05 * float(fast.primary[0, after])


@pytest.mark.parametrize("case", ["dosed", "small buffer"])
def test_dense_path_falls_back_to_saving_inside_the_loop(case):
    """Boluses (not registered as switches by the dense path) and a step buffer too small for
    the horizon both send the batch to the saving path, with the same result."""
    m = model("gompertz", "cytotoxic" if case == "dosed" else "none")
    engine = FastClearance(dense_steps=4, dense_min_times=0) if case == "small buffer" else DENSE
    ts = grid(np.linspace(0.0, 60.0, N_TIMES))
    if case == "small buffer":
        assert not engine._dense(m, ts)[2]  # the fallback is exercised, not skipped
    fast, before = solve(m, ts, engine), solve(m, ts, SAVED)
    assert fast.ok and before.ok
    _assert_same_state(fast.state, before.state, rtol=1e-10)
