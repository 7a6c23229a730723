"""Piecewise integration with diffrax: switches in the vector field and the surgery jump.

Treatment starts, ends and boluses make the vector field discontinuous; they are passed to the
step-size controller as ``jump_ts`` so the solver steps exactly onto them and restarts there
(no smearing). Surgery changes the *state* (P -> residual_fraction * P); the solve is split into
two segments, before and after it, and the jump is applied in between.
"""

from __future__ import annotations

from collections.abc import Callable

import diffrax
import jax
import jax.numpy as jnp
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
