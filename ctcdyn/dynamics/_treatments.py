r"""Treatment events: surgery, cytotoxic therapy, shedding inhibition, cluster dissociation.

All treatments of one patient live in one :class:`Treatments` PyTree of fixed-length arrays
(one entry per treatment, padded with ``kind = NONE``), so cohorts vmap without recompiling.

Each drug treatment acts on ``[start, end)`` through an **exposure** e(t) with mean 1:

- continuous (``dose_interval = 0``): e = 1 on ``[start, end)``, 0 elsewhere;
- dosed (``dose_interval = tau > 0``): boluses at the clock hour ``dose_hour`` every tau days,
  the first at or after ``start``, the last before ``end``; the drug is eliminated with half-life
  ``drug_half_life`` (k_d = ln 2 / half-life). With n doses given by t, the last at t_n,

  .. math:: e(t) = k_d \tau \, e^{-k_d (t - t_n)} \, (1 - q^n) / (1 - q),\quad q = e^{-k_d\tau},

  normalised so that its mean over a dosing interval at steady state is 1. The same dose at
  another clock hour therefore has the same average exposure and differs only in its timing
  relative to the circadian shedding peak: that is what chronotherapy compares.

Effects (all per day):

- ``CYTOTOXIC``: extra death rate kill(t) = effect * e(t) * exp(-resistance (t - start)),
  acquired resistance letting the kill rate decay at rate ``resistance``;
- ``SHEDDING_INHIBITOR``: shedding multiplier u(t) = (1 - effect) ** e(t), effect in [0, 1);
- ``CLUSTER_DISSOCIATION``: clusters break into singles at rate delta(t) = effect * e(t).

Surgery (at most one per patient) multiplies the primary tumour by ``residual_fraction`` at
``surgery_time`` (``inf`` for none). It is a jump of the state, not of the vector field, and the
solvers stop and restart there.
"""

from __future__ import annotations

import enum
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from .._units import HOURS_PER_DAY


class TreatmentKind(enum.IntEnum):
    """Codes stored in :attr:`Treatments.kind`."""

    NONE = 0
    CYTOTOXIC = 1
    SHEDDING_INHIBITOR = 2
    CLUSTER_DISSOCIATION = 3


class Treatments(eqx.Module):
    """One patient's treatments (arrays of equal length, one entry per treatment).

    Attributes:
        kind: :class:`TreatmentKind` codes.
        start, end: interval of administration (days from baseline).
        effect: strength (see the module docstring for each kind's unit).
        resistance: decay rate of a cytotoxic kill rate (1/day); 0 for none.
        dose_interval: days between boluses; 0 for a continuous effect.
        dose_hour: clock hour of each bolus (h).
        drug_half_life: elimination half-life of the drug (days).
        surgery_time: day of surgery, ``inf`` for none.
        residual_fraction: share of the primary tumour left by surgery (0 = complete resection).
    """

    kind: Int[ArrayLike, " treatments"]
    start: Float[ArrayLike, " treatments"]
    end: Float[ArrayLike, " treatments"]
    effect: Float[ArrayLike, " treatments"]
    resistance: Float[ArrayLike, " treatments"]
    dose_interval: Float[ArrayLike, " treatments"]
    dose_hour: Float[ArrayLike, " treatments"]
    drug_half_life: Float[ArrayLike, " treatments"]
    surgery_time: Float[ArrayLike, ""] = math.inf
    residual_fraction: Float[ArrayLike, ""] = 1.0

    def __check_init__(self) -> None:
        """Refuse impossible treatments when the values are concrete (skipped under tracing)."""
        leaves = (self.kind, self.start, self.end, self.effect, self.drug_half_life)
        if any(isinstance(x, jax.core.Tracer) for x in leaves):
            return
        kind, start, end = np.asarray(self.kind), np.asarray(self.start), np.asarray(self.end)
        effect = np.asarray(self.effect)
        active = kind != int(TreatmentKind.NONE)
        if np.any(active & (end < start)):
            raise ValueError("Treatments: a treatment ends before it starts (end < start).")
        if np.any(active & (effect < 0)):
            raise ValueError("Treatments: effects must be >= 0.")
        inhibitor = kind == int(TreatmentKind.SHEDDING_INHIBITOR)
        if np.any(inhibitor & (effect >= 1)):
            raise ValueError(
                "Treatments: a shedding inhibitor's effect is the fraction of shedding blocked "
                "and must be < 1 (1 would stop shedding entirely: u = 0, log u = -inf)."
            )
        if np.any(np.asarray(self.drug_half_life) <= 0):
            raise ValueError("Treatments: drug_half_life must be > 0 (days).")

    @classmethod
    def none(cls, n: int = 1) -> Treatments:
        """No treatment (n padded slots)."""
        zeros = jnp.zeros(n)
        return cls(
            kind=jnp.zeros(n, dtype=jnp.int32),
            start=zeros,
            end=zeros,
            effect=zeros,
            resistance=zeros,
            dose_interval=zeros,
            dose_hour=zeros,
            drug_half_life=jnp.ones(n),
        )

    # -- exposure -------------------------------------------------------------------------

    def _first_dose(self) -> Array:
        start = jnp.asarray(self.start)
        offset = jnp.mod(jnp.asarray(self.dose_hour) / HOURS_PER_DAY - jnp.mod(start, 1.0), 1.0)
        return start + offset

    def _n_doses(self) -> Array:
        """Number of boluses given in [start, end) (0 for continuous treatments)."""
        tau = jnp.asarray(self.dose_interval)
        dosed = tau > 0
        span = jnp.asarray(self.end) - self._first_dose()
        count = jnp.ceil(span / jnp.where(dosed, tau, 1.0))
        return jnp.where(dosed, jnp.maximum(count, 0.0), 0.0)

    def dose_times(self, max_doses: int) -> Float[Array, "treatments doses"]:
        """Bolus times, ``inf`` beyond the last dose (and for continuous treatments)."""
        j = jnp.arange(max_doses)
        times = self._first_dose()[:, None] + j[None, :] * jnp.asarray(self.dose_interval)[:, None]
        return jnp.where(j[None, :] < self._n_doses()[:, None], times, jnp.inf)

    def exposure(self, t: Float[ArrayLike, ""]) -> Float[Array, " treatments"]:
        """e(t) for every treatment (mean 1 over a dosing interval at steady state)."""
        t = jnp.asarray(t)
        start, end = jnp.asarray(self.start), jnp.asarray(self.end)
        continuous = jnp.where((t >= start) & (t < end), 1.0, 0.0)

        tau = jnp.asarray(self.dose_interval)
        dosed = tau > 0
        tau_safe = jnp.where(dosed, tau, 1.0)
        k_d = math.log(2.0) / jnp.asarray(self.drug_half_life)
        first = self._first_dose()
        given = jnp.clip(jnp.floor((t - first) / tau_safe) + 1.0, 0.0, self._n_doses())
        last = first + jnp.maximum(given - 1.0, 0.0) * tau_safe
        q = jnp.exp(-k_d * tau_safe)
        accumulated = -jnp.expm1(given * jnp.log(q)) / -jnp.expm1(-k_d * tau_safe)
        pulsed = k_d * tau_safe * jnp.exp(-k_d * jnp.maximum(t - last, 0.0)) * accumulated
        pulsed = jnp.where(given > 0, pulsed, 0.0)
        return jnp.where(dosed, pulsed, continuous)

    # -- effects --------------------------------------------------------------------------

    def _is(self, kind: TreatmentKind) -> Array:
        return jnp.asarray(self.kind) == int(kind)

    def kill_rate(self, t: Float[ArrayLike, ""]) -> Float[Array, ""]:
        """Extra death rate of tumour cells from cytotoxic therapy (1/day)."""
        since = jnp.maximum(jnp.asarray(t) - jnp.asarray(self.start), 0.0)
        decay = jnp.exp(-jnp.asarray(self.resistance) * since)
        each = jnp.asarray(self.effect) * self.exposure(t) * decay
        return jnp.sum(jnp.where(self._is(TreatmentKind.CYTOTOXIC), each, 0.0))

    def shedding_factor(self, t: Float[ArrayLike, ""]) -> Float[Array, ""]:
        """u(t): multiplier of shedding from inhibitors, in (0, 1]."""
        log_u = self.exposure(t) * jnp.log1p(-jnp.asarray(self.effect))
        return jnp.exp(jnp.sum(jnp.where(self._is(TreatmentKind.SHEDDING_INHIBITOR), log_u, 0.0)))

    def dissociation_rate(self, t: Float[ArrayLike, ""]) -> Float[Array, ""]:
        """delta(t): rate at which clusters break into single cells (1/day)."""
        each = jnp.asarray(self.effect) * self.exposure(t)
        return jnp.sum(jnp.where(self._is(TreatmentKind.CLUSTER_DISSOCIATION), each, 0.0))

    def switch_times(self, max_doses: int) -> Float[Array, " switches"]:
        """Every time where the vector field jumps: starts, ends and boluses (``inf`` padded)."""
        active = ~self._is(TreatmentKind.NONE)
        bounds = jnp.where(active[:, None], jnp.stack([self.start, self.end], axis=-1), jnp.inf)
        doses = jnp.where(active[:, None], self.dose_times(max_doses), jnp.inf)
        return jnp.sort(jnp.concatenate([bounds.ravel(), doses.ravel()]))
