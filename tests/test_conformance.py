"""One table of engines x models through the same jit / grad / vmap checks.

Deterministic engines: ``DETERMINISTIC`` (engine x growth law x treatment kind). Stochastic
engines (Jump, Hybrid, SDE, being written elsewhere) go in ``STOCHASTIC`` and get their own check,
which takes a key; it is skipped until ``ctcdyn.dynamics._jump`` exists.

Cost: each new model structure (growth law class) x engine compiles the solve anew (5-25 s on
the 2-core CI machine), so the default suite runs the Gompertz structure shared by the other
test files and marks the other growth laws ``slow``; treatment kinds are values, not
structure, and all run by default.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _factories import GROWTH_LAWS, TREATMENTS, grid, model

from ctcdyn.dynamics import ODE, SDE, FastClearance, Hybrid, Jump, solve

TS = grid(np.linspace(0.0, 40.0, 49))

ENGINES = {"ODE": ODE, "FastClearance": FastClearance}

#: (id, engine factory, model factory): every deterministic engine x model variant.
DETERMINISTIC = [
    pytest.param(
        f"{e}-{g}-{t}",
        ENGINES[e],
        (lambda g=g, t=t: model(g, t)),
        id=f"{e}-{g}-{t}",
        marks=() if g == "gompertz" else pytest.mark.slow,
    )
    for e in ENGINES
    for g in sorted(GROWTH_LAWS)
    for t in TREATMENTS
]


def _small_model():
    """Residual disease: 50 primary cells, the stochastic engines' home ground."""
    return dataclasses.replace(model("gompertz", "none"), primary0=50.0, metastatic0=0.0)


# ---- STOCHASTIC ENGINES: append (id, engine factory, model factory) entries here. ----------
STOCHASTIC: list = [
    ("Jump", lambda: Jump(max_events=20_000), _small_model),
    ("Hybrid", lambda: Hybrid(threshold=1e3), _small_model),
    ("SDE", lambda: SDE(growth_noise=0.05, shedding_noise=0.5, dt=0.25), _small_model),
]
# ----------------------------------------------------------------------------------------------

_jit_solve = eqx.filter_jit(solve)
_vmap_solve = eqx.filter_jit(eqx.filter_vmap(solve, in_axes=(0, None, None)))


def _with(m, theta):
    """The model with (shedding rate, growth rate, half-life of singles) = theta."""
    return eqx.tree_at(
        lambda x: (x.shedding_single, x.primary_growth.rate_per_day, x.half_life_single),
        m,
        (theta[0], theta[1], theta[2]),
    )


def _log_singles(theta, m, engine):
    return jnp.log(solve(_with(m, theta), TS, engine).singles[-1])


_grad = eqx.filter_jit(jax.grad(_log_singles))


def _theta(m):
    return jnp.array([m.shedding_single, m.primary_growth.rate_per_day, m.half_life_single])


@pytest.mark.parametrize(("name", "engine", "make"), DETERMINISTIC)
def test_jit_matches_eager(name, engine, make):
    m, e = make(), engine()
    eager, jitted = solve(m, TS, e), _jit_solve(m, TS, e)
    assert eager.ok and jitted.ok
    # Same operations, fused differently by XLA: rounding-level differences (amplified by the
    # adaptive step control at most to ~rtol); 1e-9 relative is far below any modelling effect.
    for a, b in zip(jax.tree.leaves(eager.state), jax.tree.leaves(jitted.state), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-300)


@pytest.mark.parametrize(("name", "engine", "make"), DETERMINISTIC)
def test_grad_matches_central_difference(name, engine, make):
    m, e = make(), engine()
    theta = _theta(m)
    grad = np.asarray(_grad(theta, m, e))
    assert np.all(np.isfinite(grad))
    # Central difference with relative step 1e-4: truncation ~ step^2 ~ 1e-8 relative; the
    # adaptive step sequence can change between the two runs, moving f by ~rtol (1e-6), hence
    # ~rtol / step = 1e-2 / |theta| in the derivative. Compared on the log scale (d f / d ln theta):
    # atol 2e-2 absolute covers that, rtol 1e-3 the smooth part.
    fd = []
    for i in range(3):
        h = 1e-4 * float(theta[i])
        up = float(_log_singles(theta.at[i].add(h), m, e))
        down = float(_log_singles(theta.at[i].add(-h), m, e))
        fd.append((up - down) / (2 * h))
    np.testing.assert_allclose(
        grad * np.asarray(theta), np.asarray(fd) * np.asarray(theta), rtol=1e-3, atol=2e-2
    )


@pytest.mark.parametrize(("name", "engine", "make"), DETERMINISTIC)
def test_vmap_matches_loop(name, engine, make):
    base, e = make(), engine()
    scales = [0.5, 1.0, 2.0]
    models = [_with(base, _theta(base) * jnp.array([s, 1.0 + 0.1 * s, s])) for s in scales]
    batch = jax.tree.map(lambda *x: jnp.stack(x), *models)
    batched = _vmap_solve(batch, TS, e)
    for i, mi in enumerate(models):
        single = solve(mi, TS, e)
        for a, b in zip(jax.tree.leaves(single.state), jax.tree.leaves(batched.state), strict=True):
            # Explicit solvers: a batched while-loop steps each member as alone (masked), so
            # rounding-level agreement. Kvaerno5's Newton iterations stop when the whole batch
            # has converged, so a member can take extra iterations: differences at the Newton
            # tolerance, tied to rtol (1e-7) and seen through dense output (measured 3.8e-7).
            rtol = 1e-5 if isinstance(e, ODE) else 1e-9
            np.testing.assert_allclose(a, b[i], rtol=rtol, atol=1e-300)


def _stochastic_entries():
    if importlib.util.find_spec("ctcdyn.dynamics._jump") is None:
        return [pytest.param(None, None, None, marks=pytest.mark.skip("no ctcdyn.dynamics._jump"))]
    return STOCHASTIC or [pytest.param(None, None, None, marks=pytest.mark.skip("none listed"))]


@pytest.mark.parametrize(("name", "engine", "make"), _stochastic_entries())
def test_stochastic_engine_is_reproducible_and_needs_a_key(name, engine, make):
    m, e = make(), engine()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="key"):
        solve(m, TS, e)
    a, b = solve(m, TS, e, key=key), _jit_solve(m, TS, e, key=key)
    for x, y in zip(jax.tree.leaves(a.state), jax.tree.leaves(b.state), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-9)
    keys = jax.random.split(key, 3)
    batched = eqx.filter_vmap(lambda k: solve(m, TS, e, key=k))(keys)
    for i in range(3):
        single = solve(m, TS, e, key=keys[i])
        for x, y in zip(jax.tree.leaves(single.state), jax.tree.leaves(batched.state), strict=True):
            np.testing.assert_allclose(x, y[i], rtol=1e-9)
