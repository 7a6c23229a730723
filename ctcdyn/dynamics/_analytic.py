r"""The fast-clearance model solved in closed form: exponential growth, continuous treatments.

With exponential growth laws (rates g_P, g_M) the slow compartments of
:class:`~ctcdyn.FastClearance` are linear:

.. math::

    P' = (g_P - \kappa) P, \quad
    M' = (g_M - \kappa) M + a (P + M), \quad
    N' = a (P + M),

where kappa(t) is the cytotoxic kill rate and a(t) the daily-mean seeding rate per tumour cell
(:func:`~ctcdyn.daily_mean_circulation` and :meth:`~ctcdyn.CTCModel.seeding_rate` at unit
burden). For continuous treatments a(t) is constant between switches (starts, ends, surgery),
and the kill integral has the closed form

.. math:: K(t) = \sum_j e_j \, (1 - e^{-r_j d_j(t)}) / r_j, \quad
          d_j(t) = \mathrm{clip}(t - t^{start}_j, 0, t^{end}_j - t^{start}_j)

(r_j the resistance rate; d_j at r_j = 0). Then, with R(t) the surgical residual factor
(1 before surgery), A(t) = int_0^t a and c = g_P - g_M,

.. math::

    P(t) &= P_0 R(t) e^{g_P t - K(t)}, \\
    M(t) &= e^{g_M t - K(t) + A(t)} \Big(M_0 + \int_0^t a(u) R(u) P_0 e^{c u - A(u)} du\Big),

because the kill acts on P and M alike and cancels from the integrand, which is then an
exponential on each piece: the integral is a finite sum of closed forms. This is exact, not an
approximation of the fast-clearance model. Only the lesion count N(t) = int_0^t a (P + M) has no
closed form when resistance makes K non-linear; it uses 16-point Gauss-Legendre quadrature on
each interval between save times and switches (N does not enter the likelihood of counts).

Dosed treatments (boluses) are outside this form: a model with any ``dose_interval > 0``
returns ``ok = False`` (use :class:`~ctcdyn.FastClearance`). The cost is a few hundred
floating-point operations per save time: no adaptive loop, so gradients are cheap; this is the
engine inside the likelihood whenever the spec allows it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._circulation import daily_mean_circulation
from ._engines import FastClearance, _Slow
from ._growth import Exponential
from ._model import CTCModel
from ._treatments import TreatmentKind

_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(16)
#: Largest exponent evaluated: growth factors beyond e^300 (1e130) are capped, so that an absent
#: compartment (P0 = 0) stays exactly 0 at any growth rate instead of 0 x inf = NaN, and its
#: gradient stays 0 instead of NaN. No burden of cells comes near it.
_MAX_EXPONENT = 300.0


def _exp(x: Array) -> Array:
    return jnp.exp(jnp.minimum(x, _MAX_EXPONENT))


def _exprel(x: Array, d: Array) -> Array:
    """(e^{x d} - 1) / x, and d at x = 0 (stable for small |x d|; e^{x d} capped)."""
    small = jnp.abs(x * d) < 1e-8
    x_safe = jnp.where(small, 1.0, x)
    big = jnp.expm1(jnp.minimum(x_safe * d, _MAX_EXPONENT)) / x_safe
    return jnp.where(small, d * (1.0 + 0.5 * x * d), big)


class Analytic(FastClearance):
    """:class:`FastClearance` with P, M and N in closed form (see the module docstring).

    Requires :class:`~ctcdyn.Exponential` growth for the primary and the metastases (a
    ``TypeError`` otherwise) and continuous treatments (``ok`` is False where a model has
    boluses). Agrees with :class:`FastClearance` to its solver tolerance.

    Attributes:
        lesions: whether to compute the lesion count N (quadrature: ~90% of the cost of a
            likelihood gradient). With ``lesions=False`` the trajectory's ``lesions`` are NaN
            and ``ok`` checks P and M only; the likelihood of counts, which never reads N,
            uses this.
    """

    lesions: bool = True

    def slow(self, model: CTCModel, ts: Float[Array, " times"]) -> tuple[_Slow, Array]:
        if not (
            isinstance(model.primary_growth, Exponential)
            and isinstance(model.metastatic_growth, Exponential)
        ):
            raise TypeError(
                "the Analytic engine needs exponential growth of the primary and the "
                f"metastases; got {type(model.primary_growth).__name__} and "
                f"{type(model.metastatic_growth).__name__}. Use FastClearance."
            )
        tr = model.treatments
        dtype = ts.dtype
        g_p = jnp.asarray(model.primary_growth.rate_per_day, dtype)
        g_m = jnp.asarray(model.metastatic_growth.rate_per_day, dtype)
        p0 = jnp.asarray(model.primary0, dtype)
        m0 = jnp.asarray(model.metastatic0, dtype)
        kind = jnp.asarray(tr.kind)
        active = kind != int(TreatmentKind.NONE)
        start, end = jnp.asarray(tr.start, dtype), jnp.asarray(tr.end, dtype)
        surgery = jnp.asarray(tr.surgery_time, dtype)
        residual = jnp.asarray(tr.residual_fraction, dtype)

        # Pieces on which a(t) is constant: between sorted switches, capped past the last time.
        horizon = ts[-1] + 1.0
        switches = jnp.concatenate(
            [jnp.where(active, start, horizon), jnp.where(active, end, horizon), surgery[None]]
        )
        bounds = jnp.sort(jnp.clip(switches, 0.0, horizon))
        lower = jnp.concatenate([jnp.zeros((1,), dtype), bounds])
        upper = jnp.concatenate([bounds, horizon[None]])
        length = upper - lower
        middle = 0.5 * (lower + upper)

        def seeding_per_cell(t):
            singles, clusters = daily_mean_circulation(model, t, 1.0)
            return model.seeding_rate(singles, clusters)

        a = jax.vmap(seeding_per_cell)(middle)
        factor = jnp.where(middle >= surgery, residual, 1.0)  # R on each piece
        a_before = jnp.concatenate([jnp.zeros((1,), dtype), jnp.cumsum(a * length)[:-1]])
        c = g_p - g_m

        cytotoxic = kind == int(TreatmentKind.CYTOTOXIC)
        effect = jnp.where(cytotoxic, jnp.asarray(tr.effect, dtype), 0.0)
        resistance = jnp.asarray(tr.resistance, dtype)

        def at(t):
            d_treat = jnp.clip(t - start, 0.0, jnp.maximum(end - start, 0.0))
            kill = jnp.sum(effect * _exprel(-resistance, d_treat))
            d = jnp.clip(t - lower, 0.0, length)
            big_a = jnp.sum(a * d)
            inflow = jnp.sum(a * factor * p0 * _exp(c * lower - a_before) * _exprel(c - a, d))
            r_t = jnp.where(t >= surgery, residual, 1.0)
            primary = p0 * r_t * _exp(g_p * t - kill)
            metastatic = _exp(g_m * t - kill + big_a) * (m0 + inflow)
            return primary, metastatic

        primary, metastatic = jax.vmap(at)(ts)
        dosed = jnp.any(active & (jnp.asarray(tr.dose_interval) > 0))
        finite = jnp.all(jnp.isfinite(primary) & jnp.isfinite(metastatic))
        if not self.lesions:
            unknown = jnp.full_like(primary, jnp.nan)
            return _Slow(primary=primary, metastatic=metastatic, lesions=unknown), finite & ~dosed

        # N: Gauss-Legendre between consecutive points of the save times merged with the
        # switches (the integrand jumps at switches and surgery; each panel is smooth).
        points = jnp.sort(jnp.concatenate([ts, jnp.minimum(bounds, ts[-1])]))
        left = jnp.concatenate([jnp.zeros((1,), dtype), points[:-1]])
        half = 0.5 * (points - left)
        nodes = (left + half)[:, None] + half[:, None] * jnp.asarray(_NODES, dtype)[None, :]

        def rate_at(u):
            p, m = at(u)
            piece = jnp.clip(jnp.searchsorted(upper, u, side="right"), 0, a.shape[0] - 1)
            return a[piece] * (p + m)

        rates = jax.vmap(jax.vmap(rate_at))(nodes)
        cumulative = jnp.cumsum(half * (rates @ jnp.asarray(_WEIGHTS, dtype)))
        at_ts = jnp.searchsorted(points, ts, side="right") - 1
        lesions = jnp.asarray(model.lesions0, dtype) + cumulative[at_ts]

        ys = _Slow(primary=primary, metastatic=metastatic, lesions=lesions)
        return ys, finite & jnp.all(jnp.isfinite(lesions)) & ~dosed
