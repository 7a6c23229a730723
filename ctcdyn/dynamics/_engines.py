"""Engines: the ways of solving one :class:`CTCModel` on a time grid.

An engine says *how*; the model says *what*. Every engine takes the same model and returns a
:class:`Trajectory`, so simulation, fitting, prediction, MRD and reports call one entry point,
:func:`solve`, and swap engines freely.

- :class:`ODE`: the full mean-field ODE (five compartments) with a stiff solver (diffrax
  Kvaerno5). The reference solution.
- :class:`FastClearance`: CTC compartments replaced by their exact periodic solution (see
  ``_circulation``); the slow compartments P, M, N are integrated with a non-stiff solver
  (Tsit5) and the daily-mean seeding rate. Orders of magnitude cheaper; the default.
- :class:`Jump`, :class:`Hybrid`, :class:`SDE`: stochastic engines (their own modules).
"""

from __future__ import annotations

import abc
from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._circadian import clock_hour
from ._circulation import circulation_path, daily_mean_circulation, periodic_circulation
from ._integrate import integrate_piecewise, integrate_piecewise_dense
from ._model import CTCModel, State, Trajectory
from ._treatments import TreatmentKind


class AbstractEngine(eqx.Module):
    """A way of solving a :class:`CTCModel` on a time grid."""

    stochastic: ClassVar[bool] = False

    @abc.abstractmethod
    def run(
        self, model: CTCModel, ts: Float[Array, " times"], key: PRNGKeyArray | None
    ) -> Trajectory:
        """Solve ``model`` from t = 0 and return its state at ``ts``."""


def _surgery(model: CTCModel):
    def apply(y):
        return eqx.tree_at(lambda s: s.primary, y, y.primary * model.treatments.residual_fraction)

    return apply


class _FullField(eqx.Module):
    """The full ODE vector field as a PyTree (not a closure).

    diffrax's ``diffeqsolve`` is itself jitted; a fresh lambda closing over the model is a new
    static object on every call and forces a recompilation (seconds) on each eager ``solve``.
    Holding the model as a leaf keeps its parameters dynamic, so the compiled solve is reused.
    """

    model: CTCModel

    def __call__(self, t, y, args):
        return self.model.vector_field(t, y)


class ODE(AbstractEngine):
    """The full ODE with a stiff, adaptive solver; switches handled exactly.

    Attributes:
        rtol, atol: tolerances of the PID step-size controller.
        max_steps: steps allowed per segment; a solve that needs more is flagged ``ok=False``.
        max_doses: boluses per treatment registered as switches.
    """

    rtol: float = 1e-7
    atol: float = 1e-9
    max_steps: int = 200_000
    max_doses: int = 256

    def run(self, model, ts, key=None):
        singles0, clusters0 = periodic_circulation(
            model, 0.0, jnp.asarray(model.primary0) + model.metastatic0, clock_hour(0.0)
        )
        y0 = State(
            primary=jnp.asarray(model.primary0, ts.dtype),
            metastatic=jnp.asarray(model.metastatic0, ts.dtype),
            singles=jnp.asarray(singles0, ts.dtype),
            clusters=jnp.asarray(clusters0, ts.dtype),
            lesions=jnp.asarray(model.lesions0, ts.dtype),
        )
        ys, ok = integrate_piecewise(
            _FullField(model),
            y0,
            ts,
            solver=diffrax.Kvaerno5(),
            rtol=self.rtol,
            atol=self.atol,
            max_steps=self.max_steps,
            jump_ts=model.treatments.switch_times(self.max_doses),
            jump_time=jnp.asarray(model.treatments.surgery_time, ts.dtype),
            apply_jump=_surgery(model),
        )
        return Trajectory(ts=ts, state=ys, ok=ok)


class _Slow(eqx.Module):
    primary: Array
    metastatic: Array
    lesions: Array


def slow_vector_field(model: CTCModel, t, y: _Slow) -> _Slow:
    """P, M, N with the circulation at its daily-mean periodic solution."""
    kill = model.treatments.kill_rate(t)
    singles, clusters = daily_mean_circulation(model, t, y.primary + y.metastatic)
    seeding = model.seeding_rate(singles, clusters)
    return _Slow(
        primary=model.primary_growth.rate(y.primary) - kill * y.primary,
        metastatic=model.metastatic_growth.rate(y.metastatic) - kill * y.metastatic + seeding,
        lesions=seeding,
    )


class _SlowField(eqx.Module):
    """:func:`slow_vector_field` as a PyTree (see :class:`_FullField` for why not a lambda)."""

    model: CTCModel

    def __call__(self, t, y, args):
        return slow_vector_field(self.model, t, y)


class FastClearance(AbstractEngine):
    """Quasi-steady circulation (exact periodic solution) on top of the slow compartments.

    CTC half-lives (minutes to hours) are far shorter than tumour time scales (weeks), so S and
    C follow their source; see ``ctcdyn.dynamics._circulation`` for the solution and its error
    bound. The slow compartments use the daily-mean seeding rate (the circadian rhythm averages
    out of a quantity integrated over days), so the solver takes steps of days, not minutes.

    The slow solve records its steps and evaluates the solver's interpolant on the whole grid
    afterwards (:func:`~ctcdyn.dynamics._integrate.integrate_piecewise_dense`), ~5-20x faster
    on a daily grid than saving inside the solver's loop, with the same values to rounding. It
    falls back to saving inside the loop (``integrate_piecewise``) for a whole batch when any
    patient has dosed treatments (boluses are switches the dense path does not register) or
    needs more than ``dense_steps`` steps in a segment. Grids shorter than ``dense_min_times``
    (a patient's draws, a fit's likelihood, a report's curve) always save inside the loop:
    there the run-time saving is small and compiling both paths costs ~1.5x the compile time
    (docs/benchmarks.md).

    Attributes:
        rtol, atol: tolerances of the non-stiff solver for P, M, N.
        max_steps, max_doses: as for :class:`ODE`.
        dense_steps: step buffer of the dense path (memory ~0.5 kB per step and patient);
            0 always saves inside the solver's loop (the path before the dense one).
        dense_min_times: the shortest grid (number of times) solved by the dense path.
        clock_basis: evaluate the circadian harmonics as one matrix product over a clock-hour
            basis shared by the cohort (see ``circulation_path``); False sums them per time.
            ``FastClearance(dense_steps=0, clock_basis=False)`` is the engine as it was before
            both speed-ups (the benchmark's baseline).
    """

    rtol: float = 1e-6
    atol: float = 1e-6
    max_steps: int = 20_000
    max_doses: int = 256
    dense_steps: int = 128
    dense_min_times: int = 256
    clock_basis: bool = True

    def run(self, model, ts, key=None):
        ys, ok = self.slow(model, ts)
        return with_circulation(model, ts, ys, ok, clock_basis=self.clock_basis)

    def slow(self, model: CTCModel, ts: Float[Array, " times"]) -> tuple[_Slow, Array]:
        """P, M and N at ``ts`` under the daily-mean seeding (Tsit5)."""
        if not self.uses_dense_path(ts):
            return self._saved(model, ts)
        tr = model.treatments
        active = jnp.asarray(tr.kind) != int(TreatmentKind.NONE)
        dosed = jnp.any(active & (jnp.asarray(tr.dose_interval) > 0))

        def skip(_):
            nothing = jnp.zeros_like(ts)
            return _Slow(nothing, nothing, nothing), jnp.array(False), jnp.array(False)

        # unvmap_any: one branch for a whole vmapped cohort (a batched predicate would turn
        # the cond into a select that runs both).
        ys, ok, complete = jax.lax.cond(
            eqx.internal.unvmap_any(dosed), skip, lambda _: self._dense(model, ts), None
        )
        return jax.lax.cond(
            eqx.internal.unvmap_any(~complete),
            lambda _: self._saved(model, ts),
            lambda _: (ys, ok),
            None,
        )

    def uses_dense_path(self, ts: Float[Array, " times"]) -> bool:
        """Whether a grid like ``ts`` goes to the dense path (decided from its length, at trace
        time; a batch may still fall back, see the class docstring)."""
        return self.dense_steps > 0 and jnp.shape(ts)[-1] >= self.dense_min_times

    def _initial(self, model: CTCModel, ts: Array) -> _Slow:
        return _Slow(
            primary=jnp.asarray(model.primary0, ts.dtype),
            metastatic=jnp.asarray(model.metastatic0, ts.dtype),
            lesions=jnp.asarray(model.lesions0, ts.dtype),
        )

    def _dense(self, model: CTCModel, ts: Array) -> tuple[_Slow, Array, Array]:
        """The dense path; only starts and ends are switches (no boluses: see :meth:`slow`)."""
        return integrate_piecewise_dense(
            _SlowField(model),
            self._initial(model, ts),
            ts,
            rtol=self.rtol,
            atol=self.atol,
            max_steps=self.dense_steps,
            jump_ts=model.treatments.switch_times(0),
            jump_time=jnp.asarray(model.treatments.surgery_time, ts.dtype),
            apply_jump=_surgery(model),
        )

    def _saved(self, model: CTCModel, ts: Array) -> tuple[_Slow, Array]:
        """Saving at ``ts`` inside the solver's loop, every switch registered."""
        return integrate_piecewise(
            _SlowField(model),
            self._initial(model, ts),
            ts,
            solver=diffrax.Tsit5(),
            rtol=self.rtol,
            atol=self.atol,
            max_steps=self.max_steps,
            jump_ts=model.treatments.switch_times(self.max_doses),
            jump_time=jnp.asarray(model.treatments.surgery_time, ts.dtype),
            apply_jump=_surgery(model),
        )


def with_circulation(
    model: CTCModel, ts: Array, ys: _Slow, ok: Array, *, clock_basis: bool = True
) -> Trajectory:
    """The fast-clearance trajectory from the slow compartments: S and C at their periodic
    solution, and the rhythm's periodic part of the seeding added to M and N."""
    # The slow solve integrates the daily-mean seeding; add the rhythm's periodic part,
    # zero at t = 0 (see _circulation.py). W(0) is evaluated in the same call (one extra
    # time appended); at ts = 0 the difference is set to its exact value 0 (fused kernels
    # may round the two evaluations differently, leaving ~1e-19 instead of 0).
    zero = jnp.zeros((1,), ts.dtype)
    burden0 = jnp.reshape(jnp.asarray(model.primary0, ts.dtype) + model.metastatic0, (1,))
    times = jnp.concatenate([ts, zero])
    singles, clusters, wiggle = circulation_path(
        model,
        times,
        jnp.concatenate([ys.primary + ys.metastatic, burden0.astype(ys.primary.dtype)]),
        clock_hour(times),
        clock_basis=clock_basis,
    )
    singles, clusters = singles[:-1], clusters[:-1]
    seeded = jnp.where(ts > 0, wiggle[:-1] - wiggle[-1], 0.0)
    state = State(ys.primary, ys.metastatic + seeded, singles, clusters, ys.lesions + seeded)
    return Trajectory(ts=ts, state=state, ok=ok)


def solve(
    model: CTCModel,
    ts: Float[ArrayLike, " times"],
    engine: AbstractEngine | None = None,
    *,
    key: PRNGKeyArray | None = None,
) -> Trajectory:
    """Solve ``model`` from t = 0 (midnight of the baseline day) and return it at ``ts``.

    Args:
        model: the patient's :class:`CTCModel` (batch it with ``jax.vmap`` for a cohort).
        ts: non-decreasing save times in days, ``ts[0] >= 0``.
        engine: how to solve it; :class:`FastClearance` by default.
        key: PRNG key, required by stochastic engines and refused by deterministic ones.

    Returns:
        A :class:`Trajectory`; ``trajectory.ok`` is False where a solve failed.

    Example:
        >>> import jax.numpy as jnp, ctcdyn
        >>> model = ctcdyn.example_model()
        >>> traj = ctcdyn.solve(model, jnp.linspace(0.0, 30.0, 4))
        >>> traj.singles.shape
        (4,)
    """
    engine = FastClearance() if engine is None else engine
    ts = jnp.asarray(ts)  # type: ignore[assignment]
    if ts.ndim != 1 or ts.shape[0] == 0:
        raise ValueError(
            f"ts must be a non-empty 1-D array of times in days; got shape {ts.shape}."
        )
    if not isinstance(ts, jax.core.Tracer):
        # Concrete times: refuse bad grids here, with a plain ValueError (under jit the
        # equivalent check below raises at run time instead).
        values = np.asarray(ts)
        if values[0] < 0 or np.any(np.diff(values) < 0):
            raise ValueError(
                f"ts must be >= 0 and non-decreasing (days from baseline); got {values}. "
                "Sort the times, e.g. jnp.sort(ts)."
            )
    if not jnp.issubdtype(ts.dtype, jnp.floating):
        ts = ts.astype(jnp.result_type(float))
    if engine.stochastic and key is None:
        raise ValueError(
            f"{type(engine).__name__} is stochastic: pass key=jax.random.key(seed) to solve()."
        )
    if not engine.stochastic and key is not None:
        raise ValueError(f"{type(engine).__name__} is deterministic and takes no key; drop key=.")
    # Python-float parameters would be static under diffrax's internal jit (a recompilation
    # for every new value); as arrays they are traced, and eager solves reuse one compilation.
    model = jax.tree.map(jnp.asarray, model)
    grid: Array = eqx.error_if(
        ts, (ts[0] < 0) | jnp.any(jnp.diff(ts) < 0), "ts must be >= 0 and non-decreasing"
    )
    return engine.run(model, grid, key)
