r"""Exact stochastic simulation (Gillespie with thinning) of the CTC model for small populations.

Every compartment is an integer count (stored as float): P primary cells, M metastatic cells,
S single CTCs and C clusters in circulation, N lesions founded. The events and their
propensities (per day) are those of the mean-field model of ``_model.py``, read one cell or
one CTC at a time:

=====================  ==========================================  =======================
event                  propensity                                  change
=====================  ==========================================  =======================
primary birth          b_P(P) P                                    P + 1
primary death          (d_P(P) + kill(t)) P                        P - 1
metastatic birth       b_M(M) M                                    M + 1
metastatic death       (d_M(M) + kill(t)) M                        M - 1
single shed            sigma_s (P + M) c(t) u(t)                   S + 1
cluster shed           sigma_c (P + M) c(t) u(t)                   C + 1
single cleared         k_s S (1 - eps_s)                           S - 1
single founds lesion   k_s S eps_s                                 S - 1, M + 1, N + 1
cluster cleared        k_c C (1 - eps_c)                           C - 1
cluster founds lesion  k_c C eps_c                                 C - 1, M + 1, N + 1
cluster dissociates    delta(t) C                                  C - 1, S + round(z)
=====================  ==========================================  =======================

with (b, d) from :meth:`AbstractGrowth.birth_death` and kill, u, delta from
:class:`Treatments`. The mean of this jump process obeys the ODE of ``_model.py`` exactly for
linear growth laws (and to leading order otherwise).

Time-varying propensities are handled by thinning (Lewis & Shedler 1979; Ogata 1981): each
time-dependent factor is bounded over all t,

- circadian c(t) <= c(peak hour) = 1 / I0e(kappa),
- shedding inhibition u(t) <= 1,
- kill(t) <= sum effect * e_max and delta(t) <= sum effect * e_max, with the largest exposure
  e_max = k_d tau / (1 - exp(-k_d tau)) of a dosed treatment (just after a bolus at steady
  state) and 1 for a continuous one,

candidate times are drawn from the bounding rate, and a candidate at time t is accepted as event
j with probability a_j(t) / bound. Surgery is a scheduled event: P -> Binomial(P, residual
fraction) at ``surgery_time``. The state is piecewise constant, and is saved at each of ``ts``.

Source: Gillespie, J. Comput. Phys. 22:403 (1976); thinning as in Anderson, J. Chem. Phys.
127:214107 (2007), section on time-dependent propensities.
"""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._circadian import clock_hour
from ._circulation import periodic_circulation
from ._engines import AbstractEngine
from ._model import CTCModel, State, Trajectory
from ._treatments import TreatmentKind, Treatments


def max_exposure(treatments: Treatments) -> Float[Array, " treatments"]:
    """Upper bound of the exposure e(t) of each treatment over all t (dimensionless).

    A continuous treatment has e <= 1; a dosed one peaks just after a bolus at steady state,
    e_max = k_d tau / (1 - exp(-k_d tau)) (see ``_treatments.py``).
    """
    tau = jnp.asarray(treatments.dose_interval)
    dosed = tau > 0
    k_d = math.log(2.0) / jnp.asarray(treatments.drug_half_life)
    x = k_d * jnp.where(dosed, tau, 1.0)
    return jnp.where(dosed, x / -jnp.expm1(-x), 1.0)


def _effect_bound(treatments: Treatments, kind: TreatmentKind) -> Float[Array, ""]:
    each = jnp.maximum(jnp.asarray(treatments.effect), 0.0) * max_exposure(treatments)
    return jnp.sum(jnp.where(jnp.asarray(treatments.kind) == int(kind), each, 0.0))


def kill_bound(treatments: Treatments) -> Float[Array, ""]:
    """Upper bound of ``kill_rate(t)`` over all t (1/day); resistance only lowers it."""
    return _effect_bound(treatments, TreatmentKind.CYTOTOXIC)


def dissociation_bound(treatments: Treatments) -> Float[Array, ""]:
    """Upper bound of ``dissociation_rate(t)`` over all t (1/day)."""
    return _effect_bound(treatments, TreatmentKind.CLUSTER_DISSOCIATION)


def circadian_bound(model: CTCModel) -> Float[Array, ""]:
    """Upper bound of c(t) u(t) over all t: the circadian factor at its peak hour (u <= 1)."""
    return model.circadian.factor(model.circadian.peak_hour)


# Columns: P, M, S, C, N. Rows: the events of the module docstring, then "rejected candidate".
_N_EVENTS = 11


def _changes(model: CTCModel, dtype) -> Float[Array, "events+1 5"]:
    z = jnp.round(jnp.asarray(model.cluster_size, dtype))
    zero, one = jnp.zeros((), dtype), jnp.ones((), dtype)
    rows = [
        [one, zero, zero, zero, zero],  # primary birth
        [-one, zero, zero, zero, zero],  # primary death
        [zero, one, zero, zero, zero],  # metastatic birth
        [zero, -one, zero, zero, zero],  # metastatic death
        [zero, zero, one, zero, zero],  # single shed
        [zero, zero, zero, one, zero],  # cluster shed
        [zero, zero, -one, zero, zero],  # single cleared
        [zero, one, -one, zero, one],  # single founds a lesion
        [zero, zero, zero, -one, zero],  # cluster cleared
        [zero, one, zero, -one, one],  # cluster founds a lesion
        [zero, zero, z, -one, zero],  # cluster dissociates
        [zero, zero, zero, zero, zero],  # rejected candidate (thinning)
    ]
    return jnp.stack([jnp.stack(row) for row in rows])


def _propensities(model: CTCModel, y: Array, t, kill, shed, delta) -> Float[Array, " events"]:
    """Event rates (1/day) in state y = (P, M, S, C, N) given the time-dependent factors.

    ``kill``, ``delta`` are the kill and dissociation rates and ``shed`` the source factor
    c(t) u(t); pass their bounds to get the bounding propensities used for thinning.
    """
    p, m, s, c = y[0], y[1], y[2], y[3]
    b_p, d_p = model.primary_growth.birth_death(p)
    b_m, d_m = model.metastatic_growth.birth_death(m)
    k_s, k_c = model.clearance_single, model.clearance_cluster
    eps_s, eps_c = model.efficiency_single, model.efficiency_cluster
    burden_shed = (p + m) * shed
    rates = jnp.stack(
        [
            b_p * p,
            (d_p + kill) * p,
            b_m * m,
            (d_m + kill) * m,
            model.shedding_single * burden_shed,
            model.shedding_cluster * burden_shed,
            k_s * s * (1.0 - eps_s),
            k_s * s * eps_s,
            k_c * c * (1.0 - eps_c),
            k_c * c * eps_c,
            delta * c,
        ]
    )
    return jnp.maximum(rates.astype(y.dtype), 0.0)


class _Carry(eqx.Module):
    t: Array
    y: Array  # (P, M, S, C, N)
    index: Array  # next save index
    saved: Array  # (times, 5), NaN until saved
    count: Array  # loop iterations used (candidates, including rejected ones, and stops)
    key: Array


def _save(carry: _Carry, ts: Array, limit: Array) -> tuple[Array, Array]:
    """Record y for every save time in [index, limit) at or before the current time."""
    j = jnp.arange(ts.shape[0])
    hit = (j >= carry.index) & (j < limit) & (ts <= carry.t)
    saved = jnp.where(hit[:, None], carry.y[None, :], carry.saved)
    return saved, carry.index + jnp.sum(hit, dtype=carry.index.dtype)


def _simulate(
    model: CTCModel,
    carry: _Carry,
    ts: Array,
    limit: Array,
    t_end: Array | float,
    max_events: int,
) -> _Carry:
    """Advance until ts[:limit] are saved and t >= t_end (or the event budget is spent)."""
    dtype = carry.y.dtype
    changes = _changes(model, dtype)
    kill_max = kill_bound(model.treatments)
    delta_max = dissociation_bound(model.treatments)
    shed_max = circadian_bound(model)

    def cond(c: _Carry):
        return ((c.index < limit) | (c.t < t_end)) & (c.count < max_events)

    def body(c: _Carry) -> _Carry:
        key, k_time, k_event = jax.random.split(c.key, 3)
        bound = jnp.sum(_propensities(model, c.y, c.t, kill_max, shed_max, delta_max))
        wait = jax.random.exponential(k_time, dtype=dtype) / bound  # inf when bound = 0
        safe_index = jnp.minimum(c.index, ts.shape[0] - 1)
        next_stop = jnp.where(c.index < limit, ts[safe_index], t_end)
        candidate = c.t + wait
        stop = candidate >= next_stop

        # A candidate event at time `candidate`, accepted with probability a_j / bound.
        actual = _propensities(
            model,
            c.y,
            candidate,
            model.treatments.kill_rate(candidate),
            model.source(candidate, 1.0),
            model.treatments.dissociation_rate(candidate),
        )
        u = jax.random.uniform(k_event, dtype=dtype) * bound
        event = jnp.minimum(jnp.sum(jnp.cumsum(actual) <= u), _N_EVENTS)
        y_event = jnp.maximum(c.y + changes[event], 0.0)

        t_new = jnp.where(stop, jnp.maximum(next_stop, c.t), candidate)
        moved = eqx.tree_at(
            lambda x: (x.t, x.y, x.count, x.key),
            c,
            (t_new, jnp.where(stop, c.y, y_event), c.count + 1, key),
        )
        saved, index = _save(moved, ts, limit)
        return eqx.tree_at(lambda x: (x.saved, x.index), moved, (saved, index))

    return jax.lax.while_loop(cond, body, carry)


def surgery_window(model: CTCModel, ts: Array) -> tuple[Array, Array, Array]:
    """Where a scheduled surgery splits a simulation on the save grid ``ts``.

    Returns (number of save times before surgery, the time to stop the first segment at:
    the surgery time if it lies within ``ts`` else -inf, whether it lies within ``ts``).
    Saves at t >= surgery_time come after it, as in the deterministic engines.
    """
    t_s = jnp.asarray(model.treatments.surgery_time, ts.dtype)
    before = jnp.searchsorted(ts, t_s, side="left").astype(jnp.int32)
    in_window = t_s <= ts[-1]
    return before, jnp.where(in_window, t_s, -jnp.inf), in_window


def initial_counts(model: CTCModel, key, dtype) -> Array:
    """Integer initial state (P, M, S, C, N) at t = 0.

    P0, M0 are rounded; S0, C0 are Poisson with the fast-clearance periodic mean at t = 0
    (the stationary law of the immigration-death process, DESIGN.md section 3).
    """
    p0 = jnp.round(jnp.asarray(model.primary0, dtype))
    m0 = jnp.round(jnp.asarray(model.metastatic0, dtype))
    singles, clusters = periodic_circulation(model, 0.0, p0 + m0, clock_hour(0.0))
    k_s, k_c = jax.random.split(key)
    s0 = jax.random.poisson(k_s, jnp.maximum(singles, 0.0)).astype(dtype)
    c0 = jax.random.poisson(k_c, jnp.maximum(clusters, 0.0)).astype(dtype)
    return jnp.stack([p0, m0, s0, c0, jnp.round(jnp.asarray(model.lesions0, dtype))])


class Jump(AbstractEngine):
    """Exact stochastic simulation (Gillespie with thinning); see the module docstring.

    The cost is one loop iteration per event (plus rejected candidates and save times), so
    this engine is for small populations: residual disease, young lesions, or tests. For
    growth to clinical sizes use :class:`~ctcdyn.dynamics._hybrid.Hybrid`.

    Attributes:
        max_events: static budget of loop iterations (events, rejected thinning candidates and
            stops). A run that needs more returns ``ok=False`` and NaN at the unsaved times.
    """

    stochastic: ClassVar[bool] = True
    max_events: int = 100_000

    def __check_init__(self):
        if self.max_events < 1:
            raise ValueError(f"max_events must be a positive int; got {self.max_events}.")

    def run(self, model, ts, key):
        dtype = ts.dtype
        k_init, k_loop, k_surgery = jax.random.split(key, 3)
        n_times = ts.shape[0]
        carry = _Carry(
            t=jnp.zeros((), dtype),
            y=initial_counts(model, k_init, dtype),
            index=jnp.zeros((), jnp.int32),
            saved=jnp.full((n_times, 5), jnp.nan, dtype),
            count=jnp.zeros((), jnp.int32),
            key=k_loop,
        )
        # Segment 1: the save times before surgery, then on to the surgery time if it lies in
        # the window. Segment 2: the rest (the surgery applies to saves at t >= surgery_time,
        # as in the deterministic engines).
        before, stop, in_window = surgery_window(model, ts)
        carry = _simulate(model, carry, ts, before, stop, self.max_events)
        p = carry.y[0]
        residual = jnp.clip(jnp.asarray(model.treatments.residual_fraction, dtype), 0.0, 1.0)
        kept = jax.random.binomial(k_surgery, p, residual, dtype=dtype)
        p_after = jnp.where(in_window, jnp.where(residual >= 1.0, p, kept), p)
        carry = eqx.tree_at(lambda c: c.y, carry, carry.y.at[0].set(p_after))
        carry = _simulate(
            model, carry, ts, jnp.asarray(n_times, jnp.int32), -jnp.inf, self.max_events
        )
        ok = carry.index >= n_times
        s = carry.saved
        state = State(
            primary=s[:, 0], metastatic=s[:, 1], singles=s[:, 2], clusters=s[:, 3], lesions=s[:, 4]
        )
        return Trajectory(ts=ts, state=state, ok=ok)
