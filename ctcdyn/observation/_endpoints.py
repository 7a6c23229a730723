r"""What scans and death records see of the tumour burden: the mechanistic endpoint model.

DESIGN.md section 5, mechanistic link, for patients with established disease. Given a patient's
burden trajectory :math:`B(t) = P(t) + M(t)` (from the same dynamics that simulation and fitting
use), two endpoints follow:

- **Death**: the patient dies when the burden first reaches her lethal burden
  :math:`L_i`, with :math:`\log L_i = \log L + s_L \varepsilon_i`, or of another cause at a
  constant rate :math:`h_D`;
- **Progression** (RECIST 1.1 in volume): the burden first reaches :math:`f_i` times its nadir
  so far, with :math:`\log f_i = \log f + s_P \varepsilon'_i`, or progression by a route the
  total burden does not track (a new lesion, clinical progression) at a rate :math:`h_P`.

The thresholds vary between patients (:math:`\varepsilon, \varepsilon'` standard logistic
scaled to SD 1, independent of each other and of the dynamics); they stand in for everything
that makes two patients with the same burden path die or progress at different times (the
organs involved, measurement error of the scans). Given the trajectory the events are then
independent and, with :math:`\sigma(x) = 1 / (1 + e^{-x})` and :math:`c = \sqrt{3} / \pi`,

.. math::

    S_D(t) = \sigma\!\left(\frac{\log L - \max_{u \le t} \log B(u)}{c\, s_L}\right)
        e^{-h_D t},
    \qquad
    S_P(t) = \sigma\!\left(\frac{\log f - \max_{u \le t} R(u)}{c\, s_P}\right) e^{-h_P t},

with :math:`R(u) = \log B(u) - \min_{v \le u} \log B(v)` the log burden over its nadir. The
logistic has the normal's SD and nearly its shape, but a log-survival that falls linearly, not
quadratically, once the record passes the threshold: a patient still alive or progression-free
then bounds growth with a wall whose curvature grows like the excess, not its square, which
NUTS can integrate (with normal thresholds the per-patient fits of the demo cohort diverged at
the wall; docs/prognosis.md, "Sampling"). A
threshold is crossed once, at a new maximum, so each survival function falls only while the
burden (or its rise over the nadir) sets a new record; the other-cause rates keep every
observed event possible under every parameter value (the log-likelihood is finite
everywhere, which NUTS needs).

Simulation (:func:`ctcdyn.simulate_cohort`) draws the thresholds and other-cause times from this
model; fitting (``ctcdyn fit --outcomes os,pfs``) adds the likelihood of the observed events to
the counts'. One approximation separates them: the simulator reads progression at scans
against the smallest burden *seen at a scan* (RECIST), the likelihood against the nadir of the
continuous path, which is never larger (docs/prognosis.md, "Mechanistic survival").
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from ._relapse import RelapseModel

#: Outcomes the mechanistic endpoint model knows (``ctcdyn fit --outcomes``); relapse after
#: surgery has its own law (:class:`~ctcdyn.observation.RelapseModel`).
OUTCOMES = ("os", "pfs", "relapse")


@dataclasses.dataclass(frozen=True)
class EndpointModel:
    """Thresholds and other-cause rates that turn a burden path into death and progression.

    Attributes:
        lethal_burden: median lethal burden L (cells); None: the spec has no death endpoint.
        lethal_spread: between-patient SD of log L_i.
        other_death_rate: death from other causes (1/day).
        progression_factor: median progression threshold f over the nadir; None: no
            progression endpoint.
        progression_spread: between-patient SD of log f_i.
        other_progression_rate: progression the total burden does not track (1/day).
        relapse: the relapse law after surgery; None: the spec declares no detection_burden.
    """

    lethal_burden: float | None
    lethal_spread: float
    other_death_rate: float
    progression_factor: float | None
    progression_spread: float
    other_progression_rate: float
    relapse: RelapseModel | None = None

    @classmethod
    def from_spec(cls, spec, scenario: str = "default") -> EndpointModel:
        """The endpoint model a spec declares (its fixed endpoint parameters and the
        scenario's ``progression_factor``)."""

        def fixed(name: str, default: float | None) -> float | None:
            p = spec.parameters.get(name)
            return default if p is None else p.typical() * p.to_internal

        plan = spec.scenario(scenario) if spec.scenarios else None
        return cls(
            lethal_burden=fixed("lethal_burden", None),
            lethal_spread=fixed("lethal_burden_spread", 0.0) or 0.0,
            other_death_rate=fixed("other_death_rate", 0.0) or 0.0,
            progression_factor=None if plan is None else plan.progression_factor,
            progression_spread=fixed("progression_spread", 0.0) or 0.0,
            other_progression_rate=fixed("other_progression_rate", 0.0) or 0.0,
            relapse=RelapseModel.from_spec(spec),
        )

    def has(self, outcome: str) -> bool:
        """Whether this model defines ``outcome`` ("os", "pfs" or "relapse")."""
        if outcome == "relapse":
            return self.relapse is not None
        if outcome == "os":
            return self.lethal_burden is not None
        if outcome == "pfs":
            return self.progression_factor is not None
        raise ValueError(f"unknown outcome {outcome!r}; known: {', '.join(OUTCOMES)}")

    def fittable(self, outcome: str) -> list[str]:
        """Why ``outcome`` cannot enter a likelihood (empty when it can).

        A likelihood needs a threshold spread or an other-cause rate: without both, an observed
        event away from a new maximum of the burden has probability 0.
        """
        if not self.has(outcome):
            need = {"os": "lethal_burden", "relapse": "detection_burden"}.get(
                outcome, "a scenario progression_factor"
            )
            return [f"the spec declares no {outcome} endpoint (needs {need})"]
        if outcome == "relapse":
            assert self.relapse is not None
            return self.relapse.fittable()
        spread, rate, names = (
            (self.lethal_spread, self.other_death_rate, "lethal_burden_spread, other_death_rate")
            if outcome == "os"
            else (
                self.progression_spread,
                self.other_progression_rate,
                "progression_spread, other_progression_rate",
            )
        )
        if spread <= 0 or rate <= 0:
            return [f"{outcome} needs both {names} > 0 in the spec to be fitted"]
        return []

    # -- simulation ------------------------------------------------------------------------

    def draw_patients(self, key: PRNGKeyArray, n: int) -> PatientThresholds:
        """Each patient's thresholds and other-cause event times (days)."""
        k_l, k_f, k_d, k_p = jax.random.split(key, 4)
        lethal = math.log(self.lethal_burden) if self.lethal_burden else math.inf
        factor = math.log(self.progression_factor) if self.progression_factor else math.inf

        def exponential(k, rate):
            e = jax.random.exponential(k, (n,))
            return e / rate if rate > 0 else jnp.full((n,), jnp.inf)

        return PatientThresholds(
            log_lethal=lethal + self.lethal_spread * _unit_logistic(k_l, n),
            log_factor=factor + self.progression_spread * _unit_logistic(k_f, n),
            other_death=exponential(k_d, self.other_death_rate),
            other_progression=exponential(k_p, self.other_progression_rate),
        )

    # -- survival functions given a burden path -----------------------------------------------

    def log_survival_death(self, record_log_burden: Array, t: ArrayLike) -> Array:
        """log S_D(t); ``record_log_burden`` is max over u <= t of log B(u)."""
        assert self.lethal_burden is not None
        return _log_tail(
            math.log(self.lethal_burden), record_log_burden, self.lethal_spread
        ) - self.other_death_rate * jnp.asarray(t)

    def log_survival_progression(self, record_log_rise: Array, t: ArrayLike) -> Array:
        """log S_P(t); ``record_log_rise`` is max over u <= t of log B(u) - nadir so far."""
        assert self.progression_factor is not None
        return _log_tail(
            math.log(self.progression_factor), record_log_rise, self.progression_spread
        ) - self.other_progression_rate * jnp.asarray(t)

    def conditional_survival(
        self,
        outcome: str,
        times: Array,
        log_burden: Array,
        *,
        progression_free_to: float = 0.0,
        alive_to: float = 0.0,
    ) -> Array:
        """P(no event by each of ``times`` | what is known), along the last axis.

        Args:
            outcome: "os" (death) or "pfs" (progression or death).
            times: sorted days from baseline, starting at 0 (the running records start there).
            log_burden: log B at ``times``; leading axes (e.g. posterior draws) are kept.
            progression_free_to: last day known free of progression (pfs).
            alive_to: last day known alive.

        Times before what is known get probability 1.
        """
        record, rise = burden_records(log_burden)
        times = jnp.asarray(times)

        def at(values: Array, day: float) -> Array:  # the record on the last grid time <= day
            index = jnp.clip(jnp.searchsorted(times, day, side="right") - 1, 0, times.size - 1)
            return jnp.take(values, index, axis=-1)[..., None]

        log_s = self.log_survival_death(record, times) - self.log_survival_death(
            at(record, alive_to), alive_to
        )
        log_s = jnp.where(times >= alive_to, log_s, 0.0)
        if outcome == "pfs":
            log_p = self.log_survival_progression(rise, times) - self.log_survival_progression(
                at(rise, progression_free_to), progression_free_to
            )
            log_s = log_s + jnp.where(times >= progression_free_to, log_p, 0.0)
        elif outcome != "os":
            raise ValueError(f"unknown outcome {outcome!r}; known: {', '.join(OUTCOMES)}")
        return jnp.exp(jnp.minimum(log_s, 0.0))


@dataclasses.dataclass(frozen=True)
class PatientThresholds:
    """Simulated per-patient thresholds (log scale) and other-cause event times (days)."""

    log_lethal: ArrayLike
    log_factor: ArrayLike
    other_death: ArrayLike
    other_progression: ArrayLike


#: SD of the standard logistic distribution, pi / sqrt(3).
_LOGISTIC_SD = math.pi / math.sqrt(3.0)


def _unit_logistic(key: PRNGKeyArray, n: int) -> Array:
    """n draws of the logistic distribution with location 0 and SD 1."""
    return jax.random.logistic(key, (n,)) / _LOGISTIC_SD


def _log_tail(log_threshold: float, record: Array, spread: float) -> Array:
    """log P(threshold > record) for a logistic threshold on the log scale (median
    ``log_threshold``, SD ``spread``)."""
    if spread <= 0:
        return jnp.where(record < log_threshold, 0.0, -jnp.inf)
    return jax.nn.log_sigmoid((log_threshold - record) * (_LOGISTIC_SD / spread))


def log_burden(burden: ArrayLike) -> Array:
    """log B, floored at the smallest normal number of its dtype.

    The endpoints read the mean-field burden exactly as the simulator does: a path that falls
    below one cell and grows back is a rise over its nadir, not a cure (the deterministic
    dynamics have no extinction). Only a burden that underflows to 0 is floored, so the log
    and its gradient stay finite.
    """
    burden = jnp.asarray(burden)
    return jnp.log(jnp.maximum(burden, jnp.finfo(burden.dtype).tiny))


def burden_records(log_burden: Array) -> tuple[Array, Array]:
    """Running maximum of log B and of its rise over the nadir, along the last (time) axis.

    ``log_burden`` must be on sorted times starting at the baseline (the nadir is taken from
    the first entry on).
    """
    nadir = jax.lax.cummin(log_burden, axis=log_burden.ndim - 1)
    axis = log_burden.ndim - 1
    return jax.lax.cummax(log_burden, axis=axis), jax.lax.cummax(log_burden - nadir, axis=axis)


def log_interval(log_s_lower: Array, log_s_upper: Array) -> Array:
    """log(S(a) - S(b)) from log S(a) >= log S(b): the probability of an event in (a, b]."""
    d = jnp.minimum(log_s_upper - log_s_lower, 0.0)
    safe = jnp.minimum(d, -1e-300)
    # log(1 - e^d), each branch fed only inputs where it is accurate and finite, so that the
    # branch jnp.where discards has a finite gradient too (else 0 x inf = NaN)
    half = -math.log(2.0)
    near = jnp.log(-jnp.expm1(jnp.maximum(safe, half)))
    far = jnp.log1p(-jnp.exp(jnp.minimum(safe, half)))
    log1mexp = jnp.where(safe > half, near, far)
    return log_s_lower + jnp.where(d < 0, log1mexp, -jnp.inf)
