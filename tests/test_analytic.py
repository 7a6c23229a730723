"""The closed-form engine against the fast-clearance ODE solve it replaces in the likelihood.

Analytic solves the same model as FastClearance (exponential growth, continuous treatments)
without a solver: P and M in closed form, N by Gauss-Legendre quadrature. The reference is
FastClearance at rtol 1e-10; seeding efficiencies are raised far above biology so that the
seeding feedback into M is large enough for an error in it to show.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _factories import model, treatments

from ctcdyn.dynamics import Analytic, Exponential, FastClearance, TreatmentKind, solve

TS = jnp.asarray(np.concatenate([[0.0], np.sort(np.random.default_rng(1).uniform(0, 60, 15))]))

CASES = {
    "none": treatments(),
    "surgery+cytotoxic": treatments(
        TreatmentKind.CYTOTOXIC,
        start=12.0,
        end=45.0,
        effect=0.15,
        resistance=0.03,
        surgery_time=10.3,
        residual_fraction=0.02,
    ),
    "cytotoxic+inhibitor": treatments(
        TreatmentKind.CYTOTOXIC,
        start=0.0,
        end=30.0,
        effect=0.1,
        second=dict(kind=int(TreatmentKind.SHEDDING_INHIBITOR), start=5.5, end=20.0, effect=0.6),
    ),
    "dissociation": treatments(
        TreatmentKind.CLUSTER_DISSOCIATION, start=3.2, end=25.0, effect=50.0
    ),
}


def _model(case: str):
    return model(
        "exponential",
        CASES[case],
        primary_growth=Exponential(rate_per_day=0.02),
        metastatic_growth=Exponential(rate_per_day=0.035),
        shedding_single=1e-3,
        shedding_cluster=5e-5,
        efficiency_single=0.05,
        efficiency_cluster=0.2,
    )


_solve = eqx.filter_jit(solve)


@pytest.mark.parametrize("case", sorted(CASES))
def test_analytic_matches_fast_clearance(case):
    m = _model(case)
    exact = _solve(m, TS, Analytic())
    reference = _solve(m, TS, FastClearance(rtol=1e-10, atol=1e-12, max_steps=100_000))
    assert exact.ok and reference.ok
    for name in ("primary", "metastatic", "singles", "clusters"):
        np.testing.assert_allclose(
            getattr(exact, name), getattr(reference, name), rtol=1e-7, err_msg=name
        )
    # N by quadrature on panels between switches: measured <= 2e-11 relative
    np.testing.assert_allclose(exact.lesions, reference.lesions, rtol=1e-8, atol=1e-12)
    # the seeding feedback is visible at this efficiency (else the test would not test it)
    no_seeding = _solve(
        eqx.tree_at(
            lambda x: (x.efficiency_single, x.efficiency_cluster),
            m,
            (jnp.asarray(0.0), jnp.asarray(0.0)),
        ),
        TS,
        Analytic(),
    )
    assert (
        np.max(np.abs(np.asarray(exact.metastatic) / np.asarray(no_seeding.metastatic) - 1)) > 1e-3
    )


def test_analytic_gradient_matches_central_difference():
    m = _model("surgery+cytotoxic")

    def f(log_rate):
        mm = eqx.tree_at(lambda x: x.metastatic_growth.rate_per_day, m, jnp.exp(log_rate))
        return jnp.log(solve(mm, TS, Analytic()).singles[-1])

    x = math.log(0.035)
    grad = float(jax.grad(f)(x))
    h = 1e-5
    fd = (float(f(x + h)) - float(f(x - h))) / (2 * h)
    assert grad == pytest.approx(fd, rel=1e-6)


def test_analytic_refuses_boluses_and_other_growth_laws():
    dosed = model(
        "exponential",
        treatments(TreatmentKind.CYTOTOXIC, start=0.0, end=20.0, effect=0.1, dose_interval=7.0),
    )
    assert not bool(solve(dosed, TS, Analytic()).ok)
    with pytest.raises(TypeError, match="exponential"):
        solve(model("gompertz"), TS, Analytic())


@pytest.mark.parametrize("case", ["surgery+cytotoxic", "dissociation"])
def test_without_lesions_agrees_on_every_other_compartment(case):
    """``Analytic(lesions=False)`` (the likelihood's engine) skips only N: P, M, S, C and ``ok``
    are those of the full engine, and N is NaN, never a silent wrong number."""
    m = _model(case)
    full = _solve(m, TS, Analytic())
    lean = _solve(m, TS, Analytic(lesions=False))
    for name in ("primary", "metastatic", "singles", "clusters"):
        np.testing.assert_allclose(getattr(lean, name), getattr(full, name), rtol=1e-14)
    assert bool(lean.ok) and bool(full.ok)
    assert bool(jnp.all(jnp.isnan(lean.lesions)))


def test_an_absent_primary_stays_zero_at_any_growth_rate():
    """P0 = 0 with a growth rate whose factor overflows (e^{5.5 x 200}): P stays exactly 0 and
    the gradient of the burden is finite (it was 0 x inf = NaN, a trap for NUTS)."""
    ts = jnp.linspace(0.0, 200.0, 9)

    def burden(rate):
        m = eqx.tree_at(
            lambda x: (x.primary0, x.primary_growth),
            _model("none"),
            (jnp.asarray(0.0), Exponential(rate_per_day=rate)),
        )
        traj = solve(m, ts, Analytic(lesions=False))
        return jnp.sum(traj.primary + traj.metastatic), traj

    for rate in (0.02, 5.5):
        (value, traj), grad = jax.value_and_grad(burden, has_aux=True)(jnp.asarray(rate))
        assert bool(traj.ok)
        np.testing.assert_array_equal(traj.primary, 0.0)
        assert np.isfinite(value) and np.isfinite(grad)
