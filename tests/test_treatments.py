"""Treatments: exposure, effects, surgery, sharp switches, conservation and chronotherapy."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _factories import constant_model, grid, model, treatments

from ctcdyn.dynamics import ODE, FastClearance, TreatmentKind, Treatments, solve

INHIBIT = TreatmentKind.SHEDDING_INHIBITOR


@pytest.mark.parametrize(("tau", "half_life"), [(1.0, 0.25), (7.0, 1.0), (0.5, 2.0)])
def test_dosed_exposure_has_mean_one_at_steady_state(tau, half_life):
    tr = treatments(
        INHIBIT,
        start=0.0,
        end=1000.0,
        effect=0.5,
        dose_interval=tau,
        dose_hour=9.0,
        drug_half_life=half_life,
    )
    n = math.ceil(60 * half_life / tau)  # q^n = 2^(-n tau / half_life) <= 2^-60: steady state
    first = float(tr._first_dose()[0])
    t = first + (n - 1) * tau + np.linspace(0.0, tau, 20001)
    e = jax.vmap(tr.exposure)(jnp.asarray(t[:-1]))[:, 0]
    # Left-rectangle rule on [t_n, t_n + tau) of a decaying exponential: relative error
    # ~ k_d h / 2 with h = tau / 20000, at most 1.4e-4 here; q^n < 1e-18.
    k_d = math.log(2) / half_life
    np.testing.assert_allclose(np.mean(e), 1.0, rtol=k_d * tau / 20000 + 1e-12)


def test_continuous_exposure_is_indicator_of_start_end():
    tr = treatments(INHIBIT, start=2.0, end=5.0, effect=0.5)
    t = jnp.array([0.0, 2.0 - 1e-12, 2.0, 3.5, 5.0 - 1e-12, 5.0, 9.0])
    np.testing.assert_array_equal(jax.vmap(tr.exposure)(t)[:, 0], [0, 0, 1, 1, 1, 0, 0])


def test_dose_times_clock_hour():
    tr = treatments(INHIBIT, start=2.5, end=5.5, effect=0.5, dose_interval=1.0, dose_hour=6.0)
    times = np.asarray(tr.dose_times(8)[0])
    np.testing.assert_allclose(times[:3], [3.25, 4.25, 5.25], rtol=1e-15)
    assert np.all(np.isinf(times[3:]))
    switches = np.asarray(tr.switch_times(8))
    assert np.all(np.diff(switches[np.isfinite(switches)]) >= 0)
    np.testing.assert_allclose(switches[np.isfinite(switches)], [2.5, 3.25, 4.25, 5.25, 5.5])


def test_kill_rate_decays_with_resistance():
    tr = treatments(TreatmentKind.CYTOTOXIC, start=1.0, end=50.0, effect=0.3, resistance=0.1)
    t = jnp.array([0.5, 1.0, 11.0, 21.0, 49.0, 50.0])
    kill = jax.vmap(tr.kill_rate)(t)
    expected = np.where((t >= 1) & (t < 50), 0.3 * np.exp(-0.1 * (np.asarray(t) - 1.0)), 0.0)
    np.testing.assert_allclose(kill, expected, rtol=1e-14)
    assert np.all(np.diff(np.asarray(kill)[1:5]) < 0)


@pytest.mark.parametrize("interval", [0.0, 1.0])
@pytest.mark.parametrize("effect", [0.0, 0.3, 0.99])
def test_shedding_factor_in_unit_interval(effect, interval):
    tr = treatments(
        INHIBIT,
        start=1.0,
        end=6.0,
        effect=effect,
        dose_interval=interval,
        dose_hour=4.0,
        drug_half_life=0.2,
    )
    u = jax.vmap(tr.shedding_factor)(jnp.linspace(0.0, 10.0, 2001))
    assert jnp.all(u > 0) and jnp.all(u <= 1)
    if interval == 0.0:  # continuous: exactly 1 - effect while on
        np.testing.assert_allclose(tr.shedding_factor(3.0), 1 - effect, rtol=1e-14)
    np.testing.assert_allclose(tr.shedding_factor(0.5), 1.0, rtol=0)


def test_dissociation_rate_is_effect_times_exposure():
    tr = treatments(
        TreatmentKind.CLUSTER_DISSOCIATION,
        start=1.0,
        end=3.0,
        effect=40.0,
        second=dict(kind=int(INHIBIT), effect=0.5),
    )
    np.testing.assert_allclose(tr.dissociation_rate(2.0), 40.0)  # the inhibitor adds nothing
    np.testing.assert_allclose(tr.dissociation_rate(3.5), 0.0)


# -- through the engines (all Gompertz-structured models on the shared 49-point grid) ----------


@pytest.mark.parametrize("engine", [ODE(), FastClearance()], ids=["ODE", "FastClearance"])
def test_surgery_multiplies_primary_by_residual_fraction_at_t_s(engine):
    t_s = 10.3
    m = model(treatment=treatments(surgery_time=t_s, residual_fraction=0.01))
    ts = grid(np.linspace(0.0, 20.0, 41), [t_s - 1e-9, t_s])
    traj = solve(m, ts, engine)
    i = int(np.searchsorted(np.asarray(ts), t_s))  # first index at t_s (after the jump)
    assert float(ts[i]) == t_s and float(ts[i - 1]) == t_s - 1e-9
    # P moves by r ln(K/P) P dt ~ 3e-11 relative in the 1e-9 d before t_s; the solver's
    # error is ~rtol, so the jump factor is exact to a few rtol.
    ratio = traj.primary[i] / traj.primary[i - 1]
    np.testing.assert_allclose(ratio, 0.01, rtol=10 * engine.rtol)
    # Metastases do not jump.
    np.testing.assert_allclose(traj.metastatic[i], traj.metastatic[i - 1], rtol=10 * engine.rtol)


def test_treatment_start_is_a_sharp_switch():
    # Constant burden on the periodic orbit, flat rhythm: S is constant, then a continuous
    # inhibitor halves the source at t_on and S relaxes with rate k_s to the new level.
    t_on, h = 1.3, 1e-4
    m = constant_model(
        circadian=type(model().circadian)(amplitude=jnp.float64(0.0), peak_hour=jnp.float64(4)),
        treatment=treatments(INHIBIT, start=t_on, end=100.0, effect=0.5),
    )
    k = float(m.clearance_single)
    ts = grid(
        [0.0, t_on - 2 * h, t_on - h, t_on, t_on + h, t_on + 2 * h],
        t_on + np.linspace(0.001, 0.2, 20),
    )
    traj = solve(m, ts, ODE())
    s0 = float(m.shedding_single * m.primary0 / k)
    t = np.asarray(ts)
    exact = np.where(t < t_on, s0, 0.5 * s0 + 0.5 * s0 * np.exp(-k * np.maximum(t - t_on, 0)))
    # Solver steps land on t_on (jump_ts); dense-output error at rtol 1e-7 steps is a few 1e-6.
    np.testing.assert_allclose(traj.singles, exact, rtol=1e-5)
    s = np.asarray(traj.singles)
    i = int(np.searchsorted(t, t_on))
    left = (s[i] - s[i - 1]) / h
    right = (s[i + 1] - s[i]) / h
    # Left derivative 0; right derivative -k (s0/2) up to the one-sided difference error
    # k h / 2 = 1.7e-3 relative (plus solver error 1e-5 * s0 / h = 0.1 s0... bounded below).
    jump = k * s0 / 2
    assert abs(left) < 0.05 * jump
    np.testing.assert_allclose(right, -jump, rtol=0.05)


def test_dissociation_conserves_cells_in_circulation():
    # Complete resection at t_s stops the source; with dissociation on afterwards,
    # S + z C can only fall by clearance: d/dt (S + z C) = -(k_s S + z k_c C). Choosing
    # eps_c = z eps_s makes dN/dt = eps_s (k_s S + z k_c C), so S + z C + N / eps_s is constant.
    t_s, eps = 2.0, 1e-4
    m = model(
        treatment=treatments(
            TreatmentKind.CLUSTER_DISSOCIATION,
            start=t_s,
            end=9.0,
            effect=200.0,
            surgery_time=t_s,
            residual_fraction=0.0,
        ),
        metastatic0=0.0,
        efficiency_single=eps,
        efficiency_cluster=4.0 * eps,
    )
    ts = grid(t_s + np.linspace(0.0, 0.3, 49))
    traj = solve(m, ts, ODE())
    z = float(m.cluster_size)
    total = traj.singles + z * traj.clusters + traj.lesions / eps
    # Each compartment is solved to rtol 1e-7 (N/eps is as large as S + zC, so its absolute
    # error is ~1e-7 of it too); 1e-6 of the initial total is a 10x margin. The seeded
    # metastases shed sigma_s * M ~ 1e-7 * 1e-4 cells/day back: negligible.
    np.testing.assert_allclose(total, total[0], rtol=1e-6)
    # and dissociation did act: clusters clear at k_c + delta, not k_c.
    # (over one grid step, 9 min: C falls e^-2, well above atol = 1e-9 of the solver; the rate
    # read off is then good to ~rtol / (k dt) = 5e-8, so 1e-5 is loose)
    dt = float(ts[1] - ts[0])
    k_eff = -np.log(float(traj.clusters[1] / traj.clusters[0])) / dt
    np.testing.assert_allclose(k_eff, float(m.clearance_cluster) + 200.0, rtol=1e-5)


def _shed_total(dose_hour: float) -> float:
    # Constant burden with the clinical rhythm (peak 04:00), a daily inhibitor with a 3 h half-
    # life; shedding is measured on the ODE: total shed singles = S(T) - S(0) + k_s int S, with
    # int S from N (eps_s = 1, eps_c = 0, metastases do not shed back: sigma * M << 1e-6).
    m = constant_model(
        treatment=treatments(
            INHIBIT,
            start=0.0,
            end=30.0,
            effect=0.8,
            dose_interval=1.0,
            dose_hour=dose_hour,
            drug_half_life=0.125,
        ),
        efficiency_single=1.0,
        efficiency_cluster=0.0,
    )
    ts = grid(np.linspace(0.0, 14.0, 49))
    traj = solve(m, ts, ODE())
    return float(traj.singles[-1] - traj.singles[0] + traj.lesions[-1]), m


def test_chronotherapy_inhibitor_at_the_peak_sheds_less():
    at_peak, m = _shed_total(4.0)
    off_peak, _ = _shed_total(16.0)
    assert at_peak < 0.9 * off_peak  # measured ~0.6 (strong rhythm, short-lived drug)
    # The ODE's total equals the quadrature of sigma_s A c(t) u(t): trapezoid on 1-min steps
    # that include every bolus time, each interval using one-sided limits at its ends (u jumps
    # at a bolus). Error ~ h^2 max|f''/f| / 12 ~ 3e-6 relative (f''/f ~ (k_d ln 5)^2 ~ 80/d^2);
    # the ODE's is ~rtol 1e-7.
    doses = np.asarray(m.treatments.dose_times(32)[0])
    t = np.unique(np.concatenate([np.linspace(0.0, 14.0, 14 * 1440 + 1), doses[doses < 14]]))
    rate = jax.vmap(lambda s: m.shedding_single * m.source(s, m.primary0))
    left, right = rate(jnp.asarray(t[:-1] + 1e-12)), rate(jnp.asarray(t[1:] - 1e-12))
    quadrature = float(jnp.sum(0.5 * (left + right) * jnp.diff(jnp.asarray(t))))
    np.testing.assert_allclose(at_peak, quadrature, rtol=1e-5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"end": [5.0]}, "ends before it starts"),
        ({"effect": [-0.1]}, "effects must be >= 0"),
        ({"kind": [int(TreatmentKind.SHEDDING_INHIBITOR)], "effect": [1.0]}, "must be < 1"),
        ({"drug_half_life": [0.0]}, "drug_half_life must be > 0"),
    ],
)
def test_impossible_treatments_are_refused(change, message):
    fields = dict(
        kind=[int(TreatmentKind.CYTOTOXIC)],
        start=[10.0],
        end=[20.0],
        effect=[0.5],
        resistance=[0.0],
        dose_interval=[0.0],
        dose_hour=[9.0],
        drug_half_life=[1.0],
    )
    fields.update(change)
    with pytest.raises(ValueError, match=message):
        Treatments(**{k: jnp.asarray(v) for k, v in fields.items()})
