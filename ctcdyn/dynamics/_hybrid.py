r"""Hybrid engine: exact branching while a population is small, mean-field growth above.

Scheme (one ``lax.while_loop``; every quantity per day):

1. **Small populations exact.** While the primary P (or the metastatic burden M) is below
   ``threshold`` cells it is an integer birth-death process with per-cell rates
   (b(n), d(n) + kill(t)) from :meth:`AbstractGrowth.birth_death` and
   :meth:`Treatments.kill_rate`, simulated event by event (Gillespie with thinning against
   the bound of kill(t) over all t, as in :mod:`._jump`). Extinction is absorbing.
2. **Large populations deterministic.** At or above ``threshold`` the population follows
   dn/dt = g(n) - kill(t) n, integrated in log n with Heun's method (second order) in steps
   that stop at every save time, treatment switch (start, end, bolus), surgery and
   at most ``max_step`` days apart. No noise is added: above ~1e3 cells the demographic noise
   of a branching process changes log n by O(sqrt((b + d) / ((b - d) n))), which is negligible.
   A deterministic population that falls below the threshold (under therapy) becomes an
   integer again by unbiased stochastic rounding, floor(n + U).
3. **Seeding** is a Poisson process with the model's seeding rate at the daily-mean
   fast-clearance circulation,
   lambda(t) = eps_s k_s S_0(t) + eps_c k_c C_0(t) (:func:`daily_mean_circulation`).
   Over each step the number of new lesions is Poisson(int lambda dt) (trapezoid rule for the
   integral) and they are placed at the end of the step (timing error <= the step). While a
   population is exact, steps hold about one expected lesion; once all are deterministic,
   steps are not limited by seeding and a count above 10 per step is drawn from the normal
   approximation (mean and variance exact). Each adds
   a one-cell lesion: M += 1, N += 1; while M is small the new cell enters its branching
   process, above the threshold it joins the mean field (so the extinction of young lesions is
   resolved only while M is below the threshold).
4. **Circulation** at the save times: S, C ~ Poisson with the fast-clearance periodic mean
   given the burden (for an immigration-death M_t/M/inf queue the number in circulation is
   Poisson with the ODE mean, DESIGN.md section 3; valid when the burden changes little
   over a CTC half-life). Draws at different save times are independent, which is exact when
   the save times are many half-lives apart (half an hour for singles).
5. **Surgery** at ``surgery_time``: P -> Binomial(P, residual fraction) (drawn exactly, also
   for a deterministic P, unless the expected residual is itself above the threshold, when it
   is residual_fraction * P).

Approximations against :class:`Jump`: no demographic noise above the threshold; CTCs are not
tracked individually (seeding is a Poisson process with the daily-mean intensity, so the
within-day timing of seeding by the circadian rhythm is averaged out); seeding events are
placed at the end of a step. For a cohort of residual-disease patients (1-100 cells growing
to 1e9) the cost is about (b + d) / (b - d) * threshold events plus one step per
``max_step`` days: use ``threshold=1e3`` (or lower) when speed matters; the extinction
probability is then exact to (d/b)^1000.

Source: hybrid stochastic-deterministic schemes of Haseltine & Rawlings, J. Chem. Phys.
117:6959 (2002); branching-process view of residual disease in Michor, Iwasa & Nowak,
Nat. Rev. Cancer 4:197 (2004).
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.special import ndtri
from jaxtyping import Array

from ._circadian import Circadian, clock_hour
from ._circulation import circulation_path, daily_mean_circulation
from ._engines import AbstractEngine
from ._jump import kill_bound, surgery_window
from ._model import CTCModel, State, Trajectory


class _Carry(eqx.Module):
    t: Array
    y: Array  # (P, M, N)
    index: Array  # next save index
    saved: Array  # (times, 3), NaN until saved
    count: Array  # loop iterations used
    key: Array


def _seeding_per_cell(model: CTCModel, t) -> Array:
    """lambda(t) per tumour cell (1/day) at the daily-mean circulation.

    The daily mean uses only the zeroth circadian harmonic, b_0 = 1 for every rhythm, so a flat
    rhythm gives the same value without recomputing the harmonics inside the loop.
    """
    flat = eqx.tree_at(lambda m: m.circadian, model, Circadian(amplitude=0.0))
    singles, clusters = daily_mean_circulation(flat, t, 1.0)
    return model.seeding_rate(singles, clusters)


#: Terms of the Poisson inversion; P(X > 24) < 1e-18 for a mean <= 1 and < 1e-10 for 3.
_POISSON_TERMS = 24
#: Above this expected count per step, seeding uses the normal approximation.
_MANY_SEEDS = 10.0


def _poisson_inversion(u: Array, mean: Array) -> Array:
    """Poisson(mean) by inversion of one uniform u, for the small means of one step.

    The steps are limited to about one expected lesion, where the truncation at
    ``_POISSON_TERMS`` is far below double-precision resolution; it is much cheaper under
    ``vmap`` than ``jax.random.poisson`` (whose rejection loops run for every lane).
    """
    k = jnp.arange(_POISSON_TERMS, dtype=mean.dtype)
    log_pmf = k * jnp.log(jnp.maximum(mean, 1e-300)) - mean - jax.scipy.special.gammaln(k + 1)
    cdf = jnp.cumsum(jnp.where(mean > 0, jnp.exp(log_pmf), k == 0))
    return jnp.sum(cdf < u).astype(mean.dtype)


def _net_rates(model: CTCModel, y) -> Array:
    """Per-capita net growth g(n)/n (1/day) of P and M, before therapy."""
    p, m = y[0], y[1]
    safe_p, safe_m = jnp.maximum(p, 1.0), jnp.maximum(m, 1.0)
    return jnp.stack(
        [
            model.primary_growth.per_capita_rate(safe_p),
            model.metastatic_growth.per_capita_rate(safe_m),
        ]
    ).astype(y.dtype)


def _simulate(
    engine: Hybrid,
    model: CTCModel,
    carry: _Carry,
    ts: Array,
    switches: Array,
    limit: Array,
    t_end: Array | float,
) -> _Carry:
    dtype = carry.y.dtype
    kill_max = kill_bound(model.treatments)
    threshold = jnp.asarray(engine.threshold, dtype)

    def cond(c: _Carry):
        return ((c.index < limit) | (c.t < t_end)) & (c.count < engine.max_events)

    def body(c: _Carry) -> _Carry:
        key, k_draw = jax.random.split(c.key)
        u = jax.random.uniform(k_draw, (5,), dtype, minval=jnp.finfo(dtype).tiny)
        pm = c.y[:2]
        small = (pm > 0) & (pm < threshold)
        large = pm >= threshold

        # Bounding rates of the small populations' births and deaths (constant between events).
        b_p, d_p = model.primary_growth.birth_death(pm[0])
        b_m, d_m = model.metastatic_growth.birth_death(pm[1])
        birth = jnp.stack([b_p, b_m]).astype(dtype)
        death = jnp.stack([d_p, d_m]).astype(dtype)
        bound = jnp.sum(jnp.where(small, (birth + death + kill_max) * pm, 0.0))
        candidate = c.t - jnp.log(u[0]) / bound

        safe_index = jnp.minimum(c.index, ts.shape[0] - 1)
        next_stop = jnp.where(c.index < limit, ts[safe_index], t_end)
        upcoming = jnp.searchsorted(switches, c.t, side="right")
        next_switch = jnp.where(
            upcoming < switches.shape[0],
            switches[jnp.minimum(upcoming, switches.shape[0] - 1)],
            jnp.inf,
        )
        # While a population is exact, at most about one expected lesion per step (each new
        # one-cell lesion enters its branching process, and the cheap sampler applies). Once
        # every non-empty population is deterministic, steps are not limited by seeding.
        seeding_now = _seeding_per_cell(model, c.t) * jnp.sum(pm)
        deterministic = jnp.all(large | (pm == 0))
        longest = jnp.where(
            deterministic, engine.max_step, jnp.minimum(engine.max_step, 1.0 / seeding_now)
        )
        t_new = jnp.minimum(
            jnp.minimum(candidate, next_stop), jnp.minimum(c.t + longest, next_switch)
        )
        t_new = jnp.maximum(t_new, c.t)
        h = t_new - c.t

        # Deterministic populations: Heun's method in log n.
        kill_now, kill_new = model.treatments.kill_rate(c.t), model.treatments.kill_rate(t_new)
        k1 = _net_rates(model, pm) - kill_now
        predicted = jnp.where(large, pm * jnp.exp(h * k1), pm)
        mean_rate = 0.5 * (k1 + _net_rates(model, predicted) - kill_new)
        pm_det = jnp.where(large, pm * jnp.exp(h * mean_rate), pm)

        # Seeding over the step: Poisson with the trapezoid integral of lambda (exact count
        # given the integral; the new lesions are placed at the end of the step).
        area = 0.5 * h * (seeding_now + _seeding_per_cell(model, t_new) * jnp.sum(pm_det))
        area = jnp.maximum(area, 0.0)
        # Many lesions in one step (deterministic regime): normal approximation to the Poisson
        # count, relative error O(area^-1/2) in its shape and exact in mean and variance.
        many = jnp.maximum(jnp.round(area + jnp.sqrt(area) * ndtri(u[1])), 0.0)
        seeds = jnp.where(area > _MANY_SEEDS, many, _poisson_inversion(u[1], area))

        # Otherwise, one birth or death of a small population, accepted by thinning.
        is_event = candidate <= t_new
        actual = jnp.where(
            small[:, None], jnp.stack([birth * pm, (death + kill_new) * pm], axis=-1), 0.0
        )
        actual = jnp.maximum(actual, 0.0).ravel()  # (P birth, P death, M birth, M death)
        which = jnp.sum(jnp.cumsum(actual) <= u[2] * bound)
        step = jnp.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [0.0, 0.0]], dtype)
        jump = jnp.where(is_event, step[which], 0.0)

        # Deterministic populations that fell below the threshold become integers again.
        fell = large & (pm_det < threshold)
        pm_new = jnp.where(fell, jnp.floor(pm_det + u[3:5]), pm_det) + jump
        y_new = jnp.stack([pm_new[0], pm_new[1] + seeds, c.y[2] + seeds])
        y_new = jnp.maximum(y_new, 0.0)

        j = jnp.arange(ts.shape[0])
        hit = (j >= c.index) & (j < limit) & (ts <= t_new)
        saved = jnp.where(hit[:, None], y_new[None, :], c.saved)
        index = c.index + jnp.sum(hit, dtype=c.index.dtype)
        return _Carry(
            t=t_new,
            y=y_new,
            index=index,
            saved=saved,
            count=c.count + 1,
            key=key,
        )

    return jax.lax.while_loop(cond, body, carry)


class Hybrid(AbstractEngine):
    """Exact branching below ``threshold`` cells, deterministic growth above; see the module.

    Attributes:
        threshold: population size (cells) at which P or M switches from the exact
            birth-death process to mean-field growth. 1e3 is ample for extinction and
            establishment-time statistics and ten times cheaper than the default.
        max_step: longest deterministic step (days); Heun's local error is O(max_step^3).
        max_events: static budget of loop iterations (events, thinning rejections and steps);
            a run that needs more returns ``ok=False`` and NaN at the unsaved times.
        max_doses: boluses per treatment registered as step boundaries.
    """

    stochastic: ClassVar[bool] = True
    threshold: float = 1e4
    max_step: float = 1.0
    max_events: int = 1_000_000
    max_doses: int = 256

    def __check_init__(self):
        if not self.threshold >= 1:
            raise ValueError(f"threshold must be >= 1 cell; got {self.threshold}.")
        if not self.max_step > 0:
            raise ValueError(f"max_step must be > 0 days; got {self.max_step}.")
        if self.max_events < 1:
            raise ValueError(f"max_events must be a positive int; got {self.max_events}.")

    def run(self, model, ts, key):
        dtype = ts.dtype
        k_loop, k_surgery, k_init, k_circ = jax.random.split(key, 4)
        n_times = ts.shape[0]
        threshold = jnp.asarray(self.threshold, dtype)

        def start(n, k):
            # Below the threshold the initial burden is an integer (unbiased rounding).
            n = jnp.asarray(n, dtype)
            integer = jnp.floor(n + jax.random.uniform(k, dtype=dtype))
            return jnp.where(n < threshold, integer, n)

        k_p, k_m = jax.random.split(k_init)
        y0 = jnp.stack(
            [
                start(model.primary0, k_p),
                start(model.metastatic0, k_m),
                jnp.asarray(model.lesions0, dtype),
            ]
        )
        switches = jnp.sort(model.treatments.switch_times(self.max_doses)).astype(dtype)
        carry = _Carry(
            t=jnp.zeros((), dtype),
            y=y0,
            index=jnp.zeros((), jnp.int32),
            saved=jnp.full((n_times, 3), jnp.nan, dtype),
            count=jnp.zeros((), jnp.int32),
            key=k_loop,
        )
        before, stop, in_window = surgery_window(model, ts)
        carry = _simulate(self, model, carry, ts, switches, before, stop)
        p = carry.y[0]
        residual = jnp.clip(jnp.asarray(model.treatments.residual_fraction, dtype), 0.0, 1.0)
        expected = p * residual
        kept = jax.random.binomial(k_surgery, jnp.round(p), residual, dtype=dtype)
        cut = jnp.where(expected >= threshold, expected, kept)
        p_after = jnp.where(in_window & (residual < 1.0), cut, p)
        carry = eqx.tree_at(lambda c: c.y, carry, carry.y.at[0].set(p_after))
        carry = _simulate(
            self, model, carry, ts, switches, jnp.asarray(n_times, jnp.int32), -jnp.inf
        )

        saved = carry.saved
        primary, metastatic, lesions = saved[:, 0], saved[:, 1], saved[:, 2]
        mean_s, mean_c, _ = circulation_path(
            model, ts, jnp.nan_to_num(primary + metastatic), clock_hour(ts)
        )
        k_s, k_c = jax.random.split(k_circ)
        singles = jax.random.poisson(k_s, jnp.maximum(mean_s, 0.0)).astype(dtype)
        clusters = jax.random.poisson(k_c, jnp.maximum(mean_c, 0.0)).astype(dtype)
        ok = carry.index >= n_times
        nan = jnp.isnan(primary)
        state = State(
            primary=primary,
            metastatic=metastatic,
            singles=jnp.where(nan, jnp.nan, singles),
            clusters=jnp.where(nan, jnp.nan, clusters),
            lesions=lesions,
        )
        return Trajectory(ts=ts, state=state, ok=ok)
