"""Piecewise integration with diffrax: switches in the vector field and the surgery jump.

Treatment starts, ends and boluses make the vector field discontinuous; they are passed to the
step-size controller as ``jump_ts`` so the solver steps exactly onto them and restarts there
(no smearing). Surgery changes the *state* (P -> residual_fraction * P); the solve is split into
two segments, before and after it, and the jump is applied in between.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree


def integrate_piecewise(
    vector_field: Callable[..., PyTree],
    y0: PyTree,
    ts: Float[Array, " times"],
    *,
    solver: diffrax.AbstractSolver,
    rtol: float,
    atol: float,
    max_steps: int,
    jump_ts: Float[Array, " switches"],
    jump_time: Float[Array, ""],
    apply_jump: Callable[[PyTree], PyTree],
    terms: diffrax.AbstractTerm | None = None,
    step_size: float | None = None,
) -> tuple[PyTree, Array]:
    """Solve from t = 0 to ts[-1], saving at ts, with a state jump at ``jump_time``.

    Returns the saved states (leaves with a leading time axis) and a boolean ``ok`` that is
    False when a segment failed (e.g. hit ``max_steps``); failures never raise.

    Optional (the defaults give the adaptive ODE solve): ``terms`` replaces
    ``ODETerm(vector_field)`` (e.g. drift and diffusion of an SDE), and ``step_size`` (days)
    replaces the PID controller by constant steps of that size (``rtol``, ``atol`` and
    ``jump_ts`` are then unused: diffrax clips only adaptive controllers, and a switch inside a
    fixed step costs O(step) like the fixed-step method itself; the surgery split still holds).
    """
    t0 = jnp.zeros((), ts.dtype)
    t1 = ts[-1]
    cut = jnp.clip(jump_time, t0, t1)
    # Switches outside the window are moved onto its end, where they are harmless.
    jumps = jnp.clip(jnp.where(jnp.isfinite(jump_ts), jump_ts, t1), t0, t1)
    controller: diffrax.AbstractStepSizeController = (
        diffrax.ClipStepSizeController(diffrax.PIDController(rtol=rtol, atol=atol), jump_ts=jumps)
        if step_size is None
        else diffrax.ConstantStepSize()
    )
    term = diffrax.ODETerm(vector_field) if terms is None else terms

    def segment(y_start, a, b):
        # A zero-length segment (no surgery in the window) is widened by a hair and ignored.
        b_eff = jnp.maximum(b, a + 1e-9 * (1.0 + jnp.abs(a)))
        sol = diffrax.diffeqsolve(
            term,
            solver,
            a,
            b_eff,
            step_size,
            y_start,
            saveat=diffrax.SaveAt(ts=jnp.clip(ts, a, b_eff), t1=True),
            stepsize_controller=controller,
            max_steps=max_steps,
            throw=False,
        )
        return sol

    def split(ys):
        saved = jax.tree.map(lambda leaf: leaf[:-1], ys)
        final = jax.tree.map(lambda leaf: leaf[-1], ys)
        return saved, final

    first = segment(y0, t0, cut)
    before, at_cut = split(first.ys)
    second = segment(apply_jump(at_cut), cut, t1)
    after, _ = split(second.ys)

    after_jump = ts >= jump_time
    ys = jax.tree.map(
        lambda b, a: jnp.where(after_jump.reshape((-1,) + (1,) * (b.ndim - 1)), a, b), before, after
    )
    ok = (first.result == diffrax.RESULTS.successful) & (
        second.result == diffrax.RESULTS.successful
    )
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(ys)]))
    return ys, ok & finite


# --- Dense output: solve once, evaluate the solver's own interpolant on the whole grid ---------
#
# ``SaveAt(ts=...)`` interpolates every save time inside diffrax's step loop; vmapped over a
# cohort with a daily grid (1826 times over 5 years, ~40 steps) that inner loop costs ~20x the
# solve itself. Here the solve records its steps (``SaveAt(dense=True)`` in a buffer of
# ``max_steps``), each step's Tsit5 interpolant is rewritten once as a quartic in the local time
# s = (t - t_j) / h_j, and the grid is evaluated afterwards with one gather and a Horner scheme
# per time: the same interpolant diffrax evaluates for ``SaveAt(ts)``, so the values agree to
# rounding.


def _tsit5_power_basis() -> np.ndarray:
    """(7, 4) matrix: Tsit5's dense-output weights b_i(s) (i = 1..7) in the basis s, s^2, s^3,
    s^4 (b_i(0) = 0). The factored forms are diffrax's ``_Tsit5Interpolation`` (Tsitouras 2011,
    Comput. Math. Appl. 62:770), expanded once in float64."""
    poly = np.polynomial.polynomial

    def product(scale: float, *factors: list[float]) -> np.ndarray:
        out = np.array([scale])
        for factor in factors:
            out = poly.polymul(out, factor)
        return out

    s, s2 = [0.0, 1.0], [0.0, 0.0, 1.0]
    weights = [
        product(
            -1.0530884977290216,
            s,
            [-1.3299890189751412, 1.0],
            [0.7139816917074209, -1.4364028541716351, 1.0],
        ),
        product(0.1017, s2, [1.2949852507374631, -2.1966568338249754, 1.0]),
        product(2.490627285651252793, s2, [1.57803468208092486, -2.38535645472061657, 1.0]),
        product(
            -16.54810288924490272, [-1.21712927295533244, 1.0], [-0.61620406037800089, 1.0], s2
        ),
        product(
            47.37952196281928122, [-1.203071208372362603, 1.0], [-0.658047292653547382, 1.0], s2
        ),
        product(-34.87065786149660974, [-1.2, 1.0], [-0.666666666666666667, 1.0], s2),
        product(2.5, [-1.0, 1.0], [-0.6, 1.0], s2),
    ]
    basis = np.zeros((7, 5))
    for i, weight in enumerate(weights):
        basis[i, : weight.size] = weight
    return basis[:, 1:]


_TSIT5_BASIS = _tsit5_power_basis()


class _Steps(NamedTuple):
    """A segment's accepted steps as a table: start time, 1 / length and, per state leaf, the
    coefficients c_0..c_4 of y(s) = sum_p c_p s^p (rows past the last step are zero)."""

    start: Array  # (steps,)
    inverse_length: Array  # (steps,)
    coefficients: list[Array]  # per leaf: (steps, 5)
    ends: Array  # (steps,) step end times, inf past the last step
    n_steps: Array  # number of accepted steps


def _step_table(sol: diffrax.Solution) -> _Steps:
    interpolation = sol.interpolation
    assert isinstance(interpolation, diffrax.DenseInterpolation)
    bounds = interpolation.ts
    start, ends = bounds[:-1], bounds[1:]
    valid = jnp.isfinite(ends)
    length = jnp.where(valid, ends - start, 1.0)
    infos = interpolation.infos
    basis = jnp.asarray(_TSIT5_BASIS, bounds.dtype)
    coefficients = []
    for y0, k in zip(jax.tree.leaves(infos["y0"]), jax.tree.leaves(infos["k"]), strict=True):
        higher = jnp.einsum("si,ip->sp", k, basis)
        table = jnp.concatenate([y0[:, None], higher], axis=1)
        coefficients.append(jnp.where(valid[:, None], table, 0.0))
    return _Steps(
        start=jnp.where(valid, start, 0.0),
        inverse_length=jnp.where(valid, 1.0 / length, 0.0),
        coefficients=coefficients,
        ends=jnp.where(valid, ends, jnp.inf),
        n_steps=jnp.sum(valid),
    )


def _step_of(ts: Array, steps: _Steps) -> Array:
    """Index of the step containing each time (sorted ``ts``): the number of step ends before
    it, counted by a histogram of where the ends fall in ``ts`` and a cumulative sum (a binary
    search per time would cost log(steps) gathers)."""
    where = jnp.searchsorted(ts, steps.ends, side="right")
    histogram = jnp.zeros(ts.shape[0] + 1, jnp.int32).at[where].add(1)
    before = jnp.cumsum(histogram)[:-1]
    return jnp.clip(before, 0, jnp.maximum(steps.n_steps - 1, 0))


def integrate_piecewise_dense(
    vector_field: Callable[..., PyTree],
    y0: PyTree,
    ts: Float[Array, " times"],
    *,
    rtol: float,
    atol: float,
    max_steps: int,
    jump_ts: Float[Array, " switches"],
    jump_time: Float[Array, ""],
    apply_jump: Callable[[PyTree], PyTree],
) -> tuple[PyTree, Array, Array]:
    """:func:`integrate_piecewise` with Tsit5, evaluated on ``ts`` from the dense output.

    Same segments, controller and interpolant as ``integrate_piecewise(..., solver=Tsit5())``
    (the values agree to rounding), but ``max_steps`` is also the size of the step buffer
    (memory ~ 30 floats per step and state leaf), so keep it small.

    Returns the states at ``ts``, ``ok`` (as for :func:`integrate_piecewise`) and ``complete``:
    False where a segment did not finish (e.g. it needed more than ``max_steps`` steps); the
    caller then falls back to :func:`integrate_piecewise`.
    """
    t0 = jnp.zeros((), ts.dtype)
    t1 = ts[-1]
    cut = jnp.clip(jump_time, t0, t1)
    jumps = jnp.clip(jnp.where(jnp.isfinite(jump_ts), jump_ts, t1), t0, t1)
    controller = diffrax.ClipStepSizeController(
        diffrax.PIDController(rtol=rtol, atol=atol), jump_ts=jumps
    )
    term = diffrax.ODETerm(vector_field)

    def segment(y_start, a, b):
        b_eff = jnp.maximum(b, a + 1e-9 * (1.0 + jnp.abs(a)))
        return diffrax.diffeqsolve(
            term,
            diffrax.Tsit5(),
            a,
            b_eff,
            None,
            y_start,
            saveat=diffrax.SaveAt(t1=True, dense=True),
            stepsize_controller=controller,
            max_steps=max_steps,
            throw=False,
        )

    first = segment(y0, t0, cut)
    before = _step_table(first)
    at_cut = jax.tree.map(lambda leaf: leaf[-1], first.ys)

    def second_segment(y_cut):
        sol = segment(apply_jump(y_cut), cut, t1)
        return _step_table(sol), sol.result == diffrax.RESULTS.successful

    def no_second_segment(y_cut):
        shapes = jax.eval_shape(second_segment, y_cut)
        empty = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
        return empty[0]._replace(ends=jnp.full_like(empty[0].ends, jnp.inf)), jnp.array(True)

    # Without a jump inside the window (no surgery, the common case) the second segment is
    # empty: skip its solve for the whole batch (unvmap_any: one branch, not a select).
    after, second_ok = jax.lax.cond(
        eqx.internal.unvmap_any(jump_time <= t1), second_segment, no_second_segment, at_cut
    )

    # One table for both segments: a time after the jump reads the second segment's rows.
    after_jump = ts >= jump_time
    row = jnp.where(after_jump, max_steps + _step_of(ts, after), _step_of(ts, before))
    start = jnp.concatenate([before.start, after.start])[row]
    s = (ts - start) * jnp.concatenate([before.inverse_length, after.inverse_length])[row]
    leaves = []
    for c_before, c_after in zip(before.coefficients, after.coefficients, strict=True):
        c = [jnp.concatenate([c_before[:, p], c_after[:, p]])[row] for p in range(5)]
        leaves.append(c[0] + s * (c[1] + s * (c[2] + s * (c[3] + s * c[4]))))
    ys = jax.tree.unflatten(jax.tree.structure(y0), leaves)
    complete = (first.result == diffrax.RESULTS.successful) & second_ok
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))
    return ys, complete & finite, complete
