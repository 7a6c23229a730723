r"""Relapse after curative surgery: the first metastasis to reach a detectable size.

DESIGN.md section 5, mechanistic link, for patients without visible disease (baseline = the day of
surgery). Every metastasis grows from one cell as a linear birth-death process with birth rate
:math:`b = g + d` and death rate :math:`d + \kappa(t)` (g the patient's net
``metastatic_growth_rate``, d the spec's ``death_rate``, :math:`\kappa` the cytotoxic kill in
force, :math:`K(t) = \int_0^t \kappa`). For a lineage founded at s, with
:math:`\rho(s, t) = g (t - s) - (K(t) - K(s))`, the survival to t and the size given survival
are exactly known (Kendall 1948, Ann. Math. Stat. 19:1): the lineage is alive at t with
probability

.. math::

    \pi(s, t) = \Big(e^{-\rho(s,t)} + b \int_s^t e^{-\rho(s,u)} du\Big)^{-1}

(:math:`g / (b - d e^{-g (t-s)}) \to g/b` without treatment) and, alive, has a geometric size of
mean :math:`e^{\rho(s,t)} / \pi(s,t)`. For a detection size X of many cells the geometric tail
is exponential, so the probability that the lesion holds at least X cells at t is

.. math::

    G(s, t) = \pi(s, t) \exp\!\big(-X \pi(s, t) e^{-\rho(s, t)}\big),

which, untreated and at ages where it is not negligible (:math:`e^{g(t-s)} \gg 1`), is the
Gumbel-shaped growth-time law :math:`(g/b) \exp(-(X g / b) e^{-g (t - s)})`. Lesions arise
independently: each of the :math:`M_0` occult cells at surgery (``metastatic_burden0``), and
new ones seeded by circulating cells at the rate :math:`n'(s) = a(s) (P(s) + M(s))` of the
dynamics. The number of lesions of size :math:`\ge X` at t is then Poisson with mean

.. math::

    \Lambda(t) = M_0 G(0, t) + \int_0^t n'(s) G(s, t) \, ds,

and relapse-free survival is

.. math::

    S_R(t) = \exp\!\Big(-\max_{u \le t} \Lambda(u) - h_R t\Big),

with :math:`h_R` (``other_relapse_rate``) relapse by a route the model does not track
(locoregional recurrence); it keeps every recorded relapse possible, so the log-likelihood is
finite. Untreated, :math:`\Lambda` only grows; the running maximum makes :math:`S_R` fall
monotonically under a kill that shrinks lesions (then it is an upper bound of the first-passage
survival). As :math:`t \to \infty` without seeding, :math:`S_R e^{h_R t} \to e^{-M_0 g/b}`: the
patients in whom no lineage survives are cured (docs/prognosis.md, "Relapse after surgery").

Numerics: on a time grid :math:`t_0 = 0 < \dots < t_{T-1}`, :math:`\rho` is exact at the grid
points, :math:`\int e^{-\rho}` is exact for :math:`\rho` linear between them (always, without
treatment), the :math:`M_0` term is exact, and the seeding integral is the trapezoid rule.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..dynamics import CTCModel, Exponential, TreatmentKind, Treatments, daily_mean_circulation

#: Exponents are capped here (e^80 ~ 1e35) so that a strong kill cannot overflow.
_MAX_EXPONENT = 80.0


@dataclasses.dataclass(frozen=True)
class RelapseModel:
    """The relapse law of a spec: detection size, other-route rate, and what it assumes.

    Attributes:
        detection_burden: X, cells in one lesion at which imaging sees it.
        other_relapse_rate: h_R, relapse by a route the lesion model does not track (1/day).
        exponential: whether the spec's metastases grow exponentially (the lineage model needs
            constant per-cell rates).
    """

    detection_burden: float
    other_relapse_rate: float
    exponential: bool = True

    @classmethod
    def from_spec(cls, spec) -> RelapseModel | None:
        """The spec's relapse law; None when it declares no ``detection_burden``."""

        def fixed(name: str) -> float | None:
            p = spec.parameters.get(name)
            return None if p is None else p.typical() * p.to_internal

        detect = fixed("detection_burden")
        if detect is None:
            return None
        return cls(
            detection_burden=detect,
            other_relapse_rate=fixed("other_relapse_rate") or 0.0,
            exponential=spec.metastatic_growth == "exponential",
        )

    def fittable(self) -> list[str]:
        """Why relapse cannot enter a likelihood (empty when it can)."""
        problems = []
        if not self.exponential:
            problems.append("relapse needs metastatic_growth = 'exponential' (a lineage model)")
        if self.other_relapse_rate <= 0:
            problems.append("relapse needs other_relapse_rate > 0 in the spec to be fitted")
        return problems

    # -- the law on a time grid --------------------------------------------------------------

    def expected_lesions(
        self,
        times: Float[ArrayLike, " times"],
        growth_rate: Float[ArrayLike, ""],
        death_rate: Float[ArrayLike, ""],
        metastatic0: Float[ArrayLike, ""],
        seeding: Float[ArrayLike, " times"],
        kill: Float[ArrayLike, " times"] | None = None,
    ) -> Float[Array, " times"]:
        """Lambda(t): expected lesions of at least X cells at each of ``times``.

        Args:
            times: sorted days from surgery, starting at 0.
            growth_rate: g, net growth of a lesion's cells (1/day).
            death_rate: d, their death rate without treatment (1/day).
            metastatic0: M_0, occult cells at t = 0, each a potential lesion.
            seeding: n'(t), new lesions per day at ``times``.
            kill: K(t), the cytotoxic kill integral at ``times`` (None: no treatment).
        """
        t = jnp.asarray(times)
        g = jnp.asarray(growth_rate, t.dtype)
        birth = g + jnp.asarray(death_rate, t.dtype)
        big_k = jnp.zeros_like(t) if kill is None else jnp.asarray(kill, t.dtype)
        r = g * t - big_k  # rho(0, t)
        later = t[:, None] >= t[None, :]  # [i, j]: t_i >= t_j (age i, founding j)
        rho = jnp.where(later, r[:, None] - r[None, :], 0.0)

        # int_{t_j}^{t_i} e^{-rho(t_j, u)} du for rho linear on each panel: panel k contributes
        # e^{-rho(t_j, t_k)} h_k (1 - e^{-dr_k}) / dr_k
        h = jnp.diff(t)
        dr = jnp.diff(r)
        panel = h * _exprel(-dr)
        k_ge_j = t[None, :-1] >= t[:, None]  # [j, k]
        decay = jnp.exp(jnp.minimum(-(r[None, :-1] - r[:, None]), _MAX_EXPONENT))
        terms = jnp.where(k_ge_j, decay * panel[None, :], 0.0)
        partial = jnp.concatenate([jnp.zeros_like(t)[:, None], jnp.cumsum(terms, axis=1)], axis=1)
        integral = jnp.where(later, partial.T, 0.0)  # [i, j]: panels j..i-1

        inverse = jnp.exp(jnp.minimum(-rho, _MAX_EXPONENT)) + birth * integral
        log_pi = -jnp.log(inverse)
        log_tail = math.log(self.detection_burden) + log_pi - rho
        g_ij = jnp.where(
            later, jnp.exp(log_pi - jnp.exp(jnp.minimum(log_tail, _MAX_EXPONENT))), 0.0
        )

        # trapezoid weights of int_0^{t_i} ds on nodes j <= i
        left = jnp.concatenate([jnp.zeros((1,), t.dtype), h])  # t_j - t_{j-1}
        right = jnp.concatenate([h, jnp.zeros((1,), t.dtype)])  # t_{j+1} - t_j
        index = jnp.arange(t.shape[0])
        weights = jnp.where(
            index[None, :] < index[:, None],
            0.5 * (left + right)[None, :],
            jnp.where(index[None, :] == index[:, None], 0.5 * left[None, :], 0.0),
        )
        seeded = (weights * g_ij) @ jnp.asarray(seeding, t.dtype)
        return jnp.asarray(metastatic0, t.dtype) * g_ij[:, 0] + seeded

    def log_survival(
        self,
        times: Float[ArrayLike, " times"],
        growth_rate: Float[ArrayLike, ""],
        death_rate: Float[ArrayLike, ""],
        metastatic0: Float[ArrayLike, ""],
        seeding: Float[ArrayLike, " times"],
        kill: Float[ArrayLike, " times"] | None = None,
    ) -> Float[Array, " times"]:
        """log S_R at ``times`` (arguments as :meth:`expected_lesions`)."""
        lam = self.expected_lesions(times, growth_rate, death_rate, metastatic0, seeding, kill)
        record = jax.lax.cummax(lam, axis=0)
        return -record - self.other_relapse_rate * jnp.asarray(times)

    def log_survival_of(
        self, model: CTCModel, times: Float[ArrayLike, " times"], burden: Float[ArrayLike, " times"]
    ) -> Float[Array, " times"]:
        """log S_R at ``times`` for one patient's model and its burden P + M there.

        The lesion rates come from the model's metastatic growth law (``rate_per_day``,
        ``death_rate``), M_0 from ``metastatic0``, the seeding from the daily-mean circulation
        (as the fast-clearance engines' lesion count N) and the kill from its treatments
        (:func:`kill_integral`).
        """
        growth = model.metastatic_growth
        if not isinstance(growth, Exponential):
            raise TypeError(
                "the relapse law needs exponential growth of the metastases (constant per-cell "
                f"rates); got {type(growth).__name__}"
            )
        t = jnp.asarray(times)
        seeding = seeding_rate(model, t, burden)
        return self.log_survival(
            t,
            growth.rate_per_day,
            growth.death_rate,
            model.metastatic0,
            seeding,
            kill_integral(model.treatments, t),
        )

    # -- simulation ---------------------------------------------------------------------------

    def draw_days(
        self,
        key: PRNGKeyArray | None,
        times: Float[ArrayLike, " times"],
        log_survival: Float[ArrayLike, "patients times"],
    ) -> tuple[Array, Array]:
        """Each patient's relapse day by inverting S_R with one uniform U (``key`` None: U = 1/2,
        the median), and whether it happens by the last of ``times`` (else the day is that last
        time and the event 0).

        The continuous relapse time (``-log S_R`` interpolated linearly between ``times``) is
        rounded up to a whole day: a relapse on day t happened in (t - 1, t].
        """
        t = jnp.asarray(times)
        hazard = -jnp.asarray(log_survival)
        n = hazard.shape[0]
        if key is None:
            target = jnp.full((n,), math.log(2.0), t.dtype)
        else:
            target = jax.random.exponential(key, (n,), dtype=t.dtype)  # -log U
        return jax.vmap(lambda c, e: _crossing(t, c, e))(hazard, target)


def _crossing(t: Array, cumulative: Array, target: Array) -> tuple[Array, Array]:
    """First time where ``cumulative`` (non-decreasing) reaches ``target``, rounded up to a
    day, and 1; or (t[-1], 0) when it does not by the end."""
    hit = cumulative[-1] >= target
    i = jnp.clip(jnp.searchsorted(cumulative, target, side="left"), 1, t.shape[0] - 1)
    c0, c1 = cumulative[i - 1], cumulative[i]
    share = jnp.clip((target - c0) / jnp.where(c1 > c0, c1 - c0, 1.0), 0.0, 1.0)
    exact = t[i - 1] + share * (t[i] - t[i - 1])
    day = jnp.maximum(jnp.ceil(exact), 1.0)
    return jnp.where(hit, jnp.minimum(day, t[-1]), t[-1]), hit.astype(jnp.int32)


def seeding_rate(
    model: CTCModel, times: Float[ArrayLike, " times"], burden: Float[ArrayLike, " times"]
) -> Float[Array, " times"]:
    """n'(t) = a(t) (P + M): new lesions per day under the daily-mean circulation."""

    def per_cell(t):
        singles, clusters = daily_mean_circulation(model, t, 1.0)
        return model.seeding_rate(singles, clusters)

    return jax.vmap(per_cell)(jnp.asarray(times)) * jnp.asarray(burden)


def kill_integral(
    treatments: Treatments, times: Float[ArrayLike, " times"]
) -> Float[Array, " times"]:
    r"""K(t) = \int_0^t kill, in closed form for continuous cytotoxic treatments.

    :math:`K(t) = \sum_j e_j (1 - e^{-r_j d_j(t)}) / r_j` with
    :math:`d_j(t) = \mathrm{clip}(t - t^{start}_j, 0, t^{end}_j - t^{start}_j)` (as the
    Analytic engine). Dosed treatments are taken at their mean exposure (1 over a dosing
    interval), so K is off by at most one interval's fluctuation.
    """
    t = jnp.asarray(times)
    cytotoxic = jnp.asarray(treatments.kind) == int(TreatmentKind.CYTOTOXIC)
    effect = jnp.where(cytotoxic, jnp.asarray(treatments.effect, t.dtype), 0.0)
    start = jnp.asarray(treatments.start, t.dtype)
    span = jnp.maximum(jnp.asarray(treatments.end, t.dtype) - start, 0.0)
    resistance = jnp.asarray(treatments.resistance, t.dtype)
    d = jnp.clip(t[:, None] - start[None, :], 0.0, span[None, :])
    return jnp.sum(effect[None, :] * d * _exprel(-resistance[None, :] * d), axis=1)


def _exprel(x: Array) -> Array:
    """(e^x - 1) / x, 1 at x = 0 (x capped at the largest exponent)."""
    x = jnp.minimum(x, _MAX_EXPONENT)
    small = jnp.abs(x) < 1e-6
    safe = jnp.where(small, 1.0, x)
    return jnp.where(small, 1.0 + 0.5 * x, jnp.expm1(safe) / safe)
