r"""The singles level: the one combination of a patient's parameters its counts pin down.

Opt-in (``CountModel(partial_centring=True)``): on the mbc benchmark cohorts it lowers the
gradients per effective sample of the slowest parameter (200 patients: 585, against 982 for the
non-centred default; docs/benchmarks.md, "eleventh session").

At fast clearance the mean single-CTC count of a draw is proportional to burden x shedding per
day x half-life x recovery x the rhythm's factor in blood at the draw's hour (the shedding
rhythm averaged over the cells' last hour or two, so damped and delayed by the half-life;
``Circadian.in_blood``), so on the log scale the counts identify the *sum* of those logs, not
the terms (DESIGN.md section 7). Write the patient-level terms that nothing else identifies
(burden, shedding of singles) as the unconstrained vector :math:`\theta_i \sim N(\mu, D)`,
:math:`D = \mathrm{diag}(s^2)`; the level is

.. math::

    \ell_i = 1^\top \theta_i + c_i,

where the shift :math:`c_i` holds the other terms: patient-level ones that the counts also
identify otherwise (the growth rate, which sets the division rate and the slope; kept in its
own non-centred coordinate) and population-level ones (half-life, recovery, the log of the
rhythm's factor in blood averaged over the patient's draws, weighted by their information).
Given the shift, :math:`\ell_i - m_i \sim N(0, s_\ell^2)` with :math:`m_i = 1^\top\mu + c_i` and
:math:`s_\ell^2 = 1^\top D 1`.

A fully non-centred model (:math:`\theta_i = \mu + s \odot z_i`) makes every z_i move when the
between-patient SDs move, while the data hold :math:`\ell_i` still: a funnel whose crossing
costs the sampler more gradients the more patients there are. :class:`SinglesLevel` samples
:math:`\ell_i` partially non-centred instead (Papaspiliopoulos, Roberts & Skold 2007, Statist.
Sci. 22:59), the other directions of :math:`\theta_i` non-centred as before:

.. math::

    \eta_i &= (I - u u^\top) z_i + u\, e_i, \quad u = D^{1/2} 1 / s_\ell,
        \quad \theta_i = \mu + D^{1/2} \eta_i, \\
    x_i &\sim N(w_i (m_i - m_0),\ s_\ell^{w_i}),
        \quad e_i = s_\ell^{-w_i} \bigl(x_i - w_i (m_i - m_0)\bigr),

so :math:`\ell_i - m_i = s_\ell e_i` and :math:`\eta_i \sim N(0, I)` exactly, whatever the
weight :math:`w_i \in [0, 1]`: 0 is non-centred, 1 centred (x_i is then the level itself,
less the constant :math:`m_0`, the level at the prior medians). The weight is the share of the
level's precision that patient i's counts carry, :math:`w_i = \tau_i / (\tau_i +
1/s_{\ell,0}^2)`, with :math:`\tau_i` the Fisher information of the log mean in its exact,
observed single counts (negative binomial: :math:`\sum_j y_j\phi/(y_j + \phi)` at the prior
median :math:`\phi`; Poisson: :math:`\sum_j y_j`) and :math:`s_{\ell,0}` from the spec's
between-patient SDs. A patient with many CTCs is sampled (nearly) centred, one with none
non-centred. The posterior is unchanged: only the coordinates the sampler moves in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import jax.numpy as jnp
from jaxtyping import Array

from ..dynamics._circadian import Circadian, clock_hour
from ..specs import CATALOGUE, Domain, ModelSpec
from ._data import PatientArrays

#: Name of the per-patient site of the level (dim ``patient``).
LEVEL_SITE = "singles_level"


@dataclasses.dataclass(frozen=True)
class SinglesLevel:
    """The terms of the log singles level of a spec.

    Attributes:
        patient: patient-level parameters whose logs add to the level (coefficient 1 each)
            and that nothing else in the counts identifies: the level is sampled in their span.
        shift: patient-level parameters whose logs add to the level but that the counts also
            identify otherwise (the growth rate, by the counts' slope): they keep their own
            non-centred coordinates and shift the level's centre patient by patient.
        population: sampled population-level parameters whose logs add to it.
        anchor: :math:`m_0`, the cohort's mean level at the prior medians (a constant; only
            differences from it are used).
        prior_sd: :math:`s_{\\ell,0}`, from the spec's ``between_patients``.
        concentration: negative-binomial concentration at its prior median (None: Poisson).
        circadian: whether the rhythm's amplitude and peak hour are sampled (population-level):
            the level of a draw includes the rhythm's factor in blood at its clock hour
            (``Circadian.in_blood``, which the half-life of singles damps and delays).
        half_life_single: the spec's half-life of singles (spec units), used for that damping
            when the half-life is not sampled.
        half_life_days: days per spec unit of the half-life.
    """

    patient: tuple[str, ...]
    shift: tuple[str, ...]
    population: tuple[str, ...]
    anchor: float
    prior_sd: float
    concentration: float | None
    circadian: bool
    half_life_single: float
    half_life_days: float

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> SinglesLevel | None:
        """The level's terms, or None when no patient-level parameter enters it.

        Terms: the burden (when exactly one of the primary and metastatic burdens is sampled;
        with both the level is the log of a sum, no sum of logs), the shedding of singles, the
        division rate when shedding is per division and there is no death rate (division rate
        = growth rate), the half-life of singles and the assay recovery.
        """
        p = spec.parameters
        sampled = set(spec.sampled)
        terms = ["half_life_single", "recovery"]
        shift = []
        burdens = [n for n in ("primary_burden0", "metastatic_burden0") if n in sampled]
        if len(burdens) == 1:
            terms += burdens
        if "shedding_single_per_division" in p:
            terms.append("shedding_single_per_division")
            death = p.get("death_rate")
            if death is None or (death.prior is None and death.typical() == 0.0):
                terms.append("growth_rate")
                shift.append("growth_rate")
        else:
            terms.append("shedding_single")
        terms = [n for n in terms if n in sampled]
        levels = {n: p[n].level for n in terms}
        patient = tuple(n for n in terms if levels[n] == "patient" and n not in shift)
        if not patient:
            return None
        for name in patient:
            assert CATALOGUE[name].domain is Domain.POSITIVE, name
        shifts = tuple(n for n in terms if levels[n] == "patient" and n in shift)
        population = tuple(n for n in terms if levels[n] != "patient")
        anchor = math.fsum(math.log(p[n].typical()) for n in terms)  # prior medians
        prior_sd = math.sqrt(math.fsum(p[n].between_patients ** 2 for n in patient))
        dispersion = p.get("dispersion")
        concentration = None
        if spec.count_family == "negbin":
            assert dispersion is not None
            concentration = dispersion.typical()
        rhythm = {"circadian_amplitude", "circadian_peak_hour"}
        circadian = rhythm <= sampled and all(p[n].level != "patient" for n in rhythm)
        half_life = p["half_life_single"]
        return cls(
            patient,
            shifts,
            population,
            anchor,
            prior_sd,
            concentration,
            circadian,
            half_life.typical(),
            half_life.to_internal,
        )

    def weights(self, data: PatientArrays) -> tuple[Array, Array]:
        """:math:`w_i`, the share of each patient's level precision carried by its counts; and
        each draw's share of its patient's information (patients, draws; 0 for draws with no
        exact count), which weighs the circadian factor of the draws' clock hours."""
        y = jnp.asarray(data.ctc)
        exact = jnp.asarray(data.ctc_mask) & (jnp.asarray(data.ctc_censor) == 0)
        phi = self.concentration
        info = jnp.where(exact, y if phi is None else y * phi / (y + phi), 0.0)
        tau = jnp.sum(info, axis=-1)
        share = info / jnp.where(tau > 0, tau, 1.0)[:, None]
        return tau / (tau + 1.0 / self.prior_sd**2), share

    def offset(
        self,
        location: Mapping[str, Array],
        unconstrained: Mapping[str, Array],
        values: Mapping[str, Array],
        share: Array,
        time: Array,
    ) -> Array:
        """:math:`m_i - m_0`: each patient's expected level given its shift terms, less the
        level at the prior medians (``location``: the unconstrained population median of each
        patient term; ``unconstrained``: each patient's shift terms, unconstrained;
        ``values``: the population terms; ``share`` and ``time``: the draws' shares of the
        information and their times, for the rhythm in blood at the draws' clock hours)."""
        total = (
            sum(location[n] for n in self.patient)
            + sum(unconstrained[n] for n in self.shift)
            + sum(jnp.log(values[n]) for n in self.population)
        )
        if self.circadian:
            rhythm = Circadian(
                amplitude=values["circadian_amplitude"], peak_hour=values["circadian_peak_hour"]
            )
            half_life = values.get("half_life_single", self.half_life_single)
            clearance = math.log(2.0) / (jnp.asarray(half_life) * self.half_life_days)  # 1/day
            log_factor = jnp.log(rhythm.in_blood(clock_hour(time), clearance))
            total = total + jnp.sum(share * log_factor, axis=-1)
        return jnp.asarray(total - self.anchor)
