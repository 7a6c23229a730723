r"""Hybrid engine: exact branching while a population is small, mean-field growth above.

Scheme (one ``lax.while_loop``; every quantity per day):

1. **Small populations exact.** While the primary P (or the metastatic burden M) is below
   ``threshold`` cells it is an integer birth-death process with per-cell rates
   (b(n), d(n) + kill(t)) from :meth:`AbstractGrowth.birth_death` and
   :meth:`Treatments.kill_rate`, simulated event by event (Gillespie with thinning against
   the bound of kill(t) over all t, as in :mod:`._jump`). Extinction is absorbing.
2. **The switch keeps the branching noise** (``branching_noise=True``, the default). A
   supercritical linear birth-death process started from n cells grows as
   Z(t) ~ W e^{(b - d) t}, and most of the randomness of W accrues while Z is still small:
   Var(W / n) = (b + d) / ((b - d) n), e.g. 18 / 100 at 100 cells for b = 0.112, d = 0.1
   (a log-size sd of ~0.4, weeks of timing at that growth rate). A deterministic continuation
   would drop it. So a population that reaches the threshold (or starts, or is left by
   surgery, at or above it) is replaced by a draw of W from the **exact limit law**
   (Kendall 1948; Durrett 2015, ch. 1): each of the n lineages survives with
   p = 1 - d/b and then contributes an Exp(mean 1/p), i.e. W = Gamma(K, scale 1/p) with
   K ~ Binomial(n, p), and W = 0 (extinction) with probability (d/b)^n. The rates are the
   local ones at the switch (logistic and Gompertz laws: b(n), d(n) at the threshold; therapy:
   kill(t) at the switch time); where b <= d + kill there is no limit law and the population
   is kept. The mean field then continues from W, which is the population's *eventual* size
   scaled back to the switch: for constant rates the law of the size once large, hence of
   the time to reach any large size, is exact, whatever the threshold; what the mean field
   gets wrong is only the path in the first generations after the switch (a population of
   size W < threshold that is still growing stays mean field). Inside the loop the first
   switch of each population uses lineage draws L_i ~ Exp(1) made before the loop: lineage i
   survives when L_i > -log p, and W = sum_i (L_i + log p)_+ / p (exact, by memorylessness);
   later switches (after falling back under therapy), and every switch inside the loop when
   the threshold is above 56 cells, draw the gamma law of the same mean and variance
   (Wilson-Hilferty), without the atom at 0.
   With ``branching_noise=False`` the switch is plain (no noise above the threshold).
3. **Large populations deterministic.** In the mean field the population follows
   dn/dt = g(n) - kill(t) n, integrated in log n with Heun's method (second order) in steps
   that stop at every save time, treatment switch (start, end, bolus), surgery and
   at most ``max_step`` days apart. A mean-field population that shrinks below the threshold
   (under therapy) becomes an integer again by unbiased stochastic rounding, floor(n + U).
4. **Seeding** is a Poisson process with the model's seeding rate at the daily-mean
   fast-clearance circulation,
   lambda(t) = eps_s k_s S_0(t) + eps_c k_c C_0(t) (:func:`daily_mean_circulation`).
   Over each step the number of new lesions is Poisson(int lambda dt) (trapezoid rule for the
   integral) and they are placed at the end of the step (timing error <= the step). While a
   population is exact, steps hold about one expected lesion; once all are deterministic,
   steps are not limited by seeding and a count above 10 per step is drawn from the normal
   approximation (mean and variance exact). Each adds
   a one-cell lesion: M += 1, N += 1; while M is exact the new cell enters its branching
   process, in the mean field it joins it (so the extinction of young lesions is resolved
   only while M is below the threshold).
5. **Circulation** at the save times: S, C ~ Poisson with the fast-clearance periodic mean
   given the burden (for an immigration-death M_t/M/inf queue the number in circulation is
   Poisson with the ODE mean, DESIGN.md section 3; valid when the burden changes little
   over a CTC half-life). Draws at different save times are independent, which is exact when
   the save times are many half-lives apart (half an hour for singles).
6. **Surgery** at ``surgery_time``: P -> Binomial(P, residual fraction) (drawn exactly, also
   for a deterministic P, unless the expected residual is itself above the threshold, when it
   is residual_fraction * P, then switched as in 2).

Approximations against :class:`Jump`: the path of a population in the first generations
after its switch (its eventual size is exact in law for constant rates; with therapy or a
size-dependent growth law the limit law is taken at the rates of the switch); CTCs are not
tracked individually (seeding is a Poisson process with the daily-mean intensity, so the
within-day timing of seeding by the circadian rhythm is averaged out); seeding events are
placed at the end of a step. Cost: for a cohort of residual-disease patients (1-100 cells
growing to 1e9) about (b + d) / (b - d) events per cell below the threshold plus one step per
save time or ``max_step`` days, at ~1 us per patient-iteration under ``vmap`` (every
iteration is elementwise work: no reductions, searches or samplers with loops inside the
loop). With the branching noise a threshold of 10-30 cells is enough for relapse-time
statistics (``ctcdyn.mrd.default_engine`` uses 20).

Sources: hybrid stochastic-deterministic schemes of Haseltine & Rawlings, J. Chem. Phys.
117:6959 (2002); branching-process view of residual disease in Michor, Iwasa & Nowak,
Nat. Rev. Cancer 4:197 (2004); the birth-death process and its limit law: Kendall, Ann. Math.
Statist. 19:1 (1948), Durrett, Branching Process Models of Cancer (Springer, 2015), ch. 1.
"""

from __future__ import annotations

import math
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
    mean_field: Array  # (2,) bool: P, M follow the mean field
    fresh: Array  # (2,) bool: the lineage draws of P, M are still unused
    upcoming: Array  # index of the next treatment switch after t
    at_t: Array  # (seeding rate per cell, kill rate) at t
    index: Array  # next save index
    saved: Array  # (times, 3), NaN until saved
    count: Array  # loop iterations used
    key: Array


#: Lineages drawn in advance beyond ceil(threshold), for lesions seeded in the switching step.
_SPARE_CELLS = 8
#: The exact limit law is drawn cell by cell inside the loop up to this many cells; above it,
#: a switch inside the loop draws the moment-matched gamma law.
_MAX_CELLS = 64


def _fate_cells(threshold: float) -> int:
    """Static number of lineage draws kept per population (0: moment-matched gamma instead)."""
    cells = math.ceil(threshold) + _SPARE_CELLS
    return cells if cells <= _MAX_CELLS else 0


def _survival(birth: Array, death: Array) -> Array:
    """Probability 1 - d/b that one cell's lineage never dies out (0 unless b > d)."""
    return jnp.where(birth > death, (birth - death) / jnp.where(birth > 0, birth, 1.0), 0.0)


def limit_law(key: Array, cells: Array, birth: Array, death: Array) -> Array:
    """Draw the limit W = lim Z(t) e^{-(b - d) t} of a linear birth-death process from Z(0) cells.

    Exact law (Kendall 1948): each of the ``cells`` lineages survives with p = 1 - d/b and then
    contributes an exponential of mean 1/p, so W = Gamma(K, scale 1/p) with
    K ~ Binomial(cells, p); E W = cells, Var W = cells (b + d) / (b - d), and W = 0 (extinction)
    with probability (d/b)^cells. Where b <= d the population is returned unchanged.

    Args:
        key: PRNG key.
        cells: Z(0) (rounded to an integer).
        birth, death: per-cell rates (1/day), death including any therapy.
    """
    p = _survival(birth, death)
    safe = jnp.where(p > 0, p, 1.0)
    k_lineages, k_sizes = jax.random.split(key)
    n = jnp.round(cells)
    survivors = jax.random.binomial(k_lineages, n, safe, dtype=n.dtype)
    w = jax.random.gamma(k_sizes, jnp.maximum(survivors, 1.0), dtype=n.dtype) / safe
    return jnp.where(p > 0, jnp.where(survivors > 0, w, 0.0), cells)


def _limit_in_loop(
    cells: Array, birth: Array, death: Array, fates: Array, fresh: Array, u: Array
) -> Array:
    """:func:`limit_law` inside the loop, per population, without a sampler's loops.

    First switch (``fresh``), from lineage draws made before the loop: with L_i ~ Exp(1),
    lineage i survives when L_i > l = -log p (probability p) and, by memorylessness, L_i - l
    is then Exp(1), so W = sum_{i < cells} (L_i - l)_+ / p has exactly the limit law, for
    whatever p holds at the switch (cells beyond the draws count with their mean, 1).
    Later switches, and every switch when no draws are kept (large thresholds): W / cells is
    the gamma law of the same mean and variance (shape alpha = cells (b - d) / (b + d)), from
    the normal quantile of ``u`` by the Wilson-Hilferty cube; its atom at 0, (d/b)^cells, is
    left out.
    """
    p = _survival(birth, death)
    safe = jnp.where(p > 0, p, 1.0)
    alpha = jnp.where(p > 0, cells * (birth - death) / (birth + death), 1.0)
    cube = 1.0 - 1.0 / (9.0 * alpha) + ndtri(u) / (3.0 * jnp.sqrt(alpha))
    w = cells * jnp.maximum(cube, 0.0) ** 3
    if fates.shape[-1]:
        log_p = jnp.log(safe)
        exact = jnp.maximum(cells - fates.shape[-1], 0.0) * safe
        for i in range(fates.shape[-1]):  # unrolled: elementwise work that XLA fuses
            exact = exact + jnp.where(cells > i, jnp.maximum(fates[:, i] + log_p, 0.0), 0.0)
        w = jnp.where(fresh, exact / safe, w)
    return jnp.where(p > 0, w, cells)


def _rates(model: CTCModel, pm: Array, t) -> tuple[Array, Array]:
    """Per-cell birth and death rates (therapy included) of P and M at sizes ``pm``, time t."""
    b_p, d_p = model.primary_growth.birth_death(pm[0])
    b_m, d_m = model.metastatic_growth.birth_death(pm[1])
    birth = jnp.stack([b_p, b_m]).astype(pm.dtype)
    death = jnp.stack([d_p, d_m]).astype(pm.dtype)
    return birth, death + model.treatments.kill_rate(t)


def _enter_mean_field(engine: Hybrid, model: CTCModel, carry: _Carry, key: Array) -> _Carry:
    """Populations at or above the threshold outside the loop (start, surgery) switch to the
    mean field, replaced by a draw of their limit law when ``branching_noise``."""
    pm = carry.y[:2]
    rising = ~carry.mean_field & (pm >= engine.threshold)
    if engine.branching_noise:
        birth, death = _rates(model, pm, carry.t)
        keys = jax.random.split(key, 2)
        limit = jnp.stack([limit_law(keys[j], pm[j], birth[j], death[j]) for j in range(2)])
        pm = jnp.where(rising, limit, pm)
    mean_field = (carry.mean_field | rising) & (pm > 0)
    return eqx.tree_at(lambda c: (c.y, c.mean_field), carry, (carry.y.at[:2].set(pm), mean_field))


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
    ``_POISSON_TERMS`` is far below double-precision resolution. Sequential search, unrolled
    (p_k = p_{k-1} mean / k): one exponential and elementwise work that XLA fuses, much
    cheaper under ``vmap`` than ``jax.random.poisson`` (whose rejection loops run for every
    lane) or a vector of terms and its reductions.
    """
    term = jnp.exp(-mean)
    cdf = term
    count = jnp.zeros_like(mean)
    for k in range(1, _POISSON_TERMS):
        count = count + (cdf < u)
        term = term * mean / k
        cdf = cdf + term
    return count + (cdf < u)


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
    fates: Array,
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
        # One key per iteration from the iteration count (unique over both segments).
        k_draw = jax.random.fold_in(c.key, c.count)
        u = jax.random.uniform(k_draw, (5,), dtype, minval=jnp.finfo(dtype).tiny)
        pm = c.y[:2]
        large = c.mean_field
        small = ~large & (pm > 0)

        # Bounding rates of the small populations' births and deaths (constant between events).
        b_p, d_p = model.primary_growth.birth_death(pm[0])
        b_m, d_m = model.metastatic_growth.birth_death(pm[1])
        birth = jnp.stack([b_p, b_m]).astype(dtype)
        death = jnp.stack([d_p, d_m]).astype(dtype)
        bound = jnp.sum(jnp.where(small, (birth + death + kill_max) * pm, 0.0))
        candidate = c.t - jnp.log(u[0]) / bound

        safe_index = jnp.minimum(c.index, ts.shape[0] - 1)
        next_stop = jnp.where(c.index < limit, ts[safe_index], t_end)
        next_switch = jnp.where(
            c.upcoming < switches.shape[0],
            switches[jnp.minimum(c.upcoming, switches.shape[0] - 1)],
            jnp.inf,
        )
        # While a population is exact, at most about one expected lesion per step (each new
        # one-cell lesion enters its branching process, and the cheap sampler applies). Once
        # every non-empty population is deterministic, steps are not limited by seeding.
        seeding_now = c.at_t[0] * jnp.sum(pm)
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
        kill_now, kill_new = c.at_t[1], model.treatments.kill_rate(t_new)
        k1 = _net_rates(model, pm) - kill_now
        predicted = jnp.where(large, pm * jnp.exp(h * k1), pm)
        mean_rate = 0.5 * (k1 + _net_rates(model, predicted) - kill_new)
        pm_det = jnp.where(large, pm * jnp.exp(h * mean_rate), pm)

        # Seeding over the step: Poisson with the trapezoid integral of lambda (exact count
        # given the integral; the new lesions are placed at the end of the step).
        seeding_per_cell = _seeding_per_cell(model, t_new)
        area = 0.5 * h * (seeding_now + seeding_per_cell * jnp.sum(pm_det))
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
        level, total, which = u[2] * bound, jnp.zeros((), dtype), jnp.zeros((), jnp.int32)
        for rate in actual:  # the first event whose cumulative rate exceeds the level
            total = total + rate
            which = which + (total <= level)
        step = jnp.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [0.0, 0.0]], dtype)
        jump = jnp.where(is_event, step[which], 0.0)

        # Deterministic populations shrinking below the threshold become integers again.
        fell = large & (pm_det < threshold) & (mean_rate < 0)
        pm_new = jnp.where(fell, jnp.floor(pm_det + u[3:5]), pm_det) + jump
        pm_new = jnp.maximum(pm_new.at[1].add(seeds), 0.0)

        # Exact populations reaching the threshold (a birth, or lesions seeded) switch to the
        # mean field, drawing the rest of their branching noise at once.
        rising = ~large & ~fell & (pm_new >= threshold)
        if engine.branching_noise:
            # Local rates of the step (those of one cell fewer than at the switch).
            limit_size = _limit_in_loop(pm_new, birth, death + kill_new, fates, c.fresh, u[3:5])
            pm_new = jnp.where(rising, limit_size, pm_new)
        mean_field = ((large & ~fell) | rising) & (pm_new > 0)
        fresh = c.fresh & ~rising
        y_new = jnp.stack([pm_new[0], pm_new[1], c.y[2] + seeds])

        # At most one save per step: every step stops at the next save time.
        hit = (c.index < limit) & (ts[safe_index] <= t_new)
        row = (jnp.arange(ts.shape[0]) == c.index) & hit
        saved = jnp.where(row[:, None], y_new[None, :], c.saved)
        index = c.index + hit.astype(c.index.dtype)
        return _Carry(
            t=t_new,
            y=y_new,
            mean_field=mean_field,
            fresh=fresh,
            upcoming=c.upcoming + (t_new >= next_switch).astype(c.upcoming.dtype),
            at_t=jnp.stack([seeding_per_cell, kill_new]).astype(dtype),
            index=index,
            saved=saved,
            count=c.count + 1,
            key=c.key,
        )

    # Quantities of time t that the loop carries from one step to the next.
    carry = eqx.tree_at(
        lambda c: (c.upcoming, c.at_t),
        carry,
        (
            jnp.searchsorted(switches, carry.t, side="right").astype(jnp.int32),
            jnp.stack(
                [_seeding_per_cell(model, carry.t), model.treatments.kill_rate(carry.t)]
            ).astype(dtype),
        ),
    )
    return jax.lax.while_loop(cond, body, carry)


class Hybrid(AbstractEngine):
    """Exact branching below ``threshold`` cells, deterministic growth above; see the module.

    Attributes:
        threshold: population size (cells) at which P or M switches from the exact
            birth-death process to mean-field growth.
        branching_noise: on switching, replace the population by a draw of its
            birth-death process's limit law (:func:`limit_law`, mean: the population), so
            the demographic noise still to come above the threshold is kept; ``False`` is
            the plain switch.
        max_step: longest deterministic step (days); Heun's local error is O(max_step^3).
        max_events: static budget of loop iterations (events, thinning rejections and steps);
            a run that needs more returns ``ok=False`` and NaN at the unsaved times.
        max_doses: boluses per treatment registered as step boundaries.
    """

    stochastic: ClassVar[bool] = True
    threshold: float = 1e4
    branching_noise: bool = True
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
        k_loop, k_surgery, k_init, k_circ, k_enter, k_fates = jax.random.split(key, 6)
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
        cells = _fate_cells(self.threshold) if self.branching_noise else 0
        carry = _Carry(
            t=jnp.zeros((), dtype),
            y=y0,
            mean_field=jnp.zeros(2, bool),
            fresh=jnp.ones(2, bool),
            upcoming=jnp.zeros((), jnp.int32),
            at_t=jnp.zeros(2, dtype),
            index=jnp.zeros((), jnp.int32),
            saved=jnp.full((n_times, 3), jnp.nan, dtype),
            count=jnp.zeros((), jnp.int32),
            key=k_loop,
        )
        k_start, k_after = jax.random.split(k_enter)
        carry = _enter_mean_field(self, model, carry, k_start)
        before, stop, in_window = surgery_window(model, ts)
        fates = jax.random.exponential(k_fates, (2, cells), dtype)
        carry = _simulate(self, model, carry, fates, ts, switches, before, stop)
        p = carry.y[0]
        residual = jnp.clip(jnp.asarray(model.treatments.residual_fraction, dtype), 0.0, 1.0)
        expected = p * residual
        kept = jax.random.binomial(k_surgery, jnp.round(p), residual, dtype=dtype)
        cut = jnp.where(expected >= threshold, expected, kept)
        operated = in_window & (residual < 1.0)
        # The residual cells start new lineages: exact below the threshold, else a new switch.
        carry = eqx.tree_at(
            lambda c: (c.y, c.mean_field),
            carry,
            (
                carry.y.at[0].set(jnp.where(operated, cut, p)),
                carry.mean_field.at[0].set(carry.mean_field[0] & ~operated),
            ),
        )
        carry = _enter_mean_field(self, model, carry, k_after)
        carry = _simulate(
            self, model, carry, fates, ts, switches, jnp.asarray(n_times, jnp.int32), -jnp.inf
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
