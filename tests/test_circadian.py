"""The circadian rhythm: mean 1, peak ratio e^kappa, Fourier harmonics, and the damped,
lagged periodic circulation it drives (checked against the full ODE)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _factories import constant_model, grid
from scipy.special import ive

from ctcdyn.dynamics import ODE, Circadian, clock_hour, periodic_circulation, solve
from ctcdyn.dynamics._circadian import N_HARMONICS

KAPPAS = [0.0, 0.3, 1.28, 2.0]
HOURS = jnp.linspace(0.0, 24.0, 4096, endpoint=False)


def bessel_harmonics(kappa: float, n_max: int) -> np.ndarray:
    """Exact cosine coefficients of exp(kappa cos x)/I0(kappa): b_0 = 1, b_n = 2 I_n/I_0."""
    n = np.arange(n_max + 1)
    return np.where(n == 0, 1.0, 2.0) * ive(n, kappa) / ive(0, kappa)


def test_clock_hour():
    np.testing.assert_allclose(clock_hour(jnp.array([0.0, 0.25, 1.5, 10.75])), [0, 6, 12, 18])


@pytest.mark.parametrize("kappa", [*KAPPAS, 5.0])
def test_mean_over_a_day_is_one(kappa):
    # The rectangle rule on a uniform periodic grid is spectrally accurate for a smooth periodic
    # function (error ~ 2 I_4096(kappa)/I_0, nil): only float64 rounding (~1e-15) is left.
    c = Circadian(amplitude=kappa, peak_hour=4.0).factor(HOURS)
    np.testing.assert_allclose(jnp.mean(c), 1.0, rtol=1e-13)
    assert jnp.all(c > 0)


@pytest.mark.parametrize("kappa", [*KAPPAS, 5.0])
@pytest.mark.parametrize("peak", [4.0, 22.5])
def test_peak_to_six_hours_later_is_e_kappa(kappa, peak):
    circ = Circadian(amplitude=kappa, peak_hour=peak)
    ratio = circ.factor(peak) / circ.factor(jnp.mod(peak + 6.0, 24.0))
    np.testing.assert_allclose(ratio, np.exp(kappa), rtol=1e-13)  # an identity: rounding only
    if kappa > 0:
        peak_index = round(peak / 24.0 * HOURS.size) % HOURS.size
        assert jnp.argmax(circ.factor(HOURS)) == peak_index


@pytest.mark.parametrize("kappa", KAPPAS)
def test_harmonics_are_bessel_ratios_and_rebuild_the_factor(kappa):
    circ = Circadian(amplitude=kappa, peak_hour=4.0)
    b = circ.harmonics()
    # The 64-point DFT aliases b_n with b_{64-n}: 2 I_54(2)/I_0(2) ~ 1e-80, so b is exact to
    # rounding.
    np.testing.assert_allclose(b, bessel_harmonics(kappa, N_HARMONICS), rtol=1e-12, atol=1e-15)
    rebuilt = jnp.cos(jnp.arange(N_HARMONICS + 1)[:, None] * circ.phase(HOURS)[None, :]).T @ b
    # What is left out is the tail sum_{n > H} |b_n| (documented below 1e-6 for kappa <= 2).
    tail = bessel_harmonics(kappa, 60)[N_HARMONICS + 1 :].sum()
    assert tail < 1e-6
    np.testing.assert_allclose(rebuilt, circ.factor(HOURS), rtol=0, atol=tail + 1e-14)


def periodic_reference(model, hours, half_life_single, half_life_cluster):
    """S and C at clock hours for a constant burden, written out from the transfer function:
    harmonic n is damped by k / sqrt(k^2 + (n w)^2) and lagged by atan(n w / k)."""
    kappa = float(model.circadian.amplitude)
    b = bessel_harmonics(kappa, 40)
    n = np.arange(b.size)[:, None]
    theta = 2 * np.pi * (np.asarray(hours)[None, :] - float(model.circadian.peak_hour)) / 24.0
    w = 2 * np.pi
    burden = float(model.primary0 + model.metastatic0)
    out = []
    for sigma, half in [
        (model.shedding_single, half_life_single),
        (model.shedding_cluster, half_life_cluster),
    ]:
        k = np.log(2) / half
        gain = k / np.sqrt(k**2 + (n * w) ** 2)
        lag = np.arctan(n * w / k)
        out.append(
            float(sigma) * burden / k * np.sum(b[:, None] * gain * np.cos(n * theta - lag), axis=0)
        )
    return out


def test_periodic_solution_matches_ode_at_many_clock_hours():
    # Half-lives of 4 h and 1 h so the damping (0.55 and 0.94 for the first harmonic) and the
    # lag (2.0 h and 0.9 h) are large enough to be tested.
    hl_s, hl_c = 4.0 / 24.0, 1.0 / 24.0
    m = constant_model(half_life_single=jnp.float64(hl_s), half_life_cluster=jnp.float64(hl_c))
    ts = grid(np.linspace(0.0, 4.0, 49))  # every 2 h for four days
    traj = solve(m, ts, ODE())
    assert traj.ok
    s_ref, c_ref = periodic_reference(m, clock_hour(ts), hl_s, hl_c)
    # The ODE starts on the (10-harmonic) periodic orbit and stays on it; the error is the
    # solver's. At its steps that is ~rtol = 1e-7, but save times fall between steps and are read
    # from Kvaerno5's cubic Hermite dense output, whose error (w h)^4/384 with steps of
    # w h ~ 0.2 rad (5th order, local error 1e-7) is a few 1e-6 (measured 3.3e-6 of the peak).
    # 1e-5 of the daily mean is that with margin; a wrong gain or lag (~1e-1) is far outside.
    scale_s, scale_c = np.mean(s_ref), np.mean(c_ref)
    np.testing.assert_allclose(traj.singles, s_ref, rtol=0, atol=1e-5 * scale_s)
    np.testing.assert_allclose(traj.clusters, c_ref, rtol=0, atol=1e-5 * scale_c)
    # And the package's own periodic solution is the same curve, up to the harmonics it drops:
    # each has gain <= 1, so the difference is at most tail * sigma A / k (~1e-10 relative).
    fast = jax.vmap(lambda t: periodic_circulation(m, t, m.primary0, clock_hour(t)))(ts)
    tail = bessel_harmonics(1.28, 60)[N_HARMONICS + 1 :].sum() + 1e-14
    np.testing.assert_allclose(fast[0], s_ref, rtol=0, atol=tail * scale_s)
    np.testing.assert_allclose(fast[1], c_ref, rtol=0, atol=tail * scale_c)
    # The lag is visible: singles peak after shedding does (04:00); read off a fine grid of the
    # periodic solution, the shift is that of the dominant first harmonic, atan(w/k)/w = 2.0 h,
    # pulled towards 0 by the weaker lag of higher harmonics (hence 1 h of slack).
    hours = jnp.linspace(0.0, 24.0, 24 * 60, endpoint=False)
    curve = jax.vmap(lambda h: periodic_circulation(m, 0.0, m.primary0, h)[0])(hours)
    lag_h = np.arctan(2 * np.pi / (np.log(2) / hl_s)) / (2 * np.pi) * 24.0
    peak = float(hours[jnp.argmax(curve)])
    assert lag_h - 1.0 < peak - 4.0 <= lag_h + 1e-9


@pytest.mark.parametrize("half_life_min", [8.0, 60.0, 150.0])
def test_rhythm_in_blood_is_the_shedding_rhythm_averaged_over_the_cells_lifetimes(half_life_min):
    """``Circadian.in_blood``: k times the integral of c over the past, weighted by e^(-k s)
    (a fine trapezoidal sum over 40 lifetimes); mean 1 over a day; c itself as k grows; and the
    package's periodic solution of single CTCs divided by its daily mean."""
    rhythm = Circadian(amplitude=1.28, peak_hour=4.0)
    k = np.log(2.0) / (half_life_min / 1440.0)  # per day
    hours = np.linspace(0.0, 24.0, 13)
    back = np.linspace(0.0, 40.0 / k, 200_001)  # days into the past
    weights = k * np.exp(-k * back)
    convolved = [
        np.trapezoid(weights * np.asarray(rhythm.factor(h - 24.0 * back)), back) for h in hours
    ]
    # the 10 harmonics drop a tail below 1e-6 (module constant); the quadrature is finer
    np.testing.assert_allclose(rhythm.in_blood(hours, k), convolved, rtol=0, atol=2e-6)
    day = np.linspace(0.0, 24.0, 480, endpoint=False)
    assert float(jnp.mean(rhythm.in_blood(day, k))) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(rhythm.in_blood(hours, 1e9), rhythm.factor(hours), atol=2e-6)
    m = constant_model(circadian=rhythm, half_life_single=jnp.asarray(half_life_min / 1440.0))
    singles = jax.vmap(lambda h: periodic_circulation(m, 0.0, m.primary0, h)[0])(day)
    np.testing.assert_allclose(singles / jnp.mean(singles), rhythm.in_blood(day, k), rtol=1e-10)
