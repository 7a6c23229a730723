r"""The NumPyro model of serial CTC counts: parameters -> dynamics -> blood draws -> likelihood.

The model is thin (DESIGN.md section 7): it samples parameters, calls the same dynamics
(:func:`ctcdyn.solve`, fast-clearance engine) and observation model that simulation uses, and
adds the count likelihood. For each parameter of the spec:

- **patient-level** (``level = "patient"``), non-centred on the unconstrained scale T (log for
  positive parameters, logit for probabilities; ``ctcdyn.simulate._parameters``):

  .. math::

      T(\theta_i) = T(m) + s \, z_i, \qquad z_i \sim \mathrm{Normal}(0, 1),

  with the population median m ~ the spec's prior (site ``NAME_median``) and the between-patient
  SD s ~ LogNormal(log ``between_patients``, 0.5) (site ``NAME_sd``); ``NAME`` holds the
  patient values (dim ``patient``) and matches ``truth.csv`` of ``ctcdyn simulate``;
- **population-level**: one value with the spec's prior (site ``NAME``);
- **fixed**: the spec's value.

With ``partial_centring`` (opt-in, cohort model) the one combination of a patient's parameters
that its single-CTC counts pin down (burden x shedding x half-life; :mod:`._level`) is sampled
partially centred, with a weight from the patient's counts (site ``singles_level``); the other
directions stay non-centred. The parameters' distribution is the one above; only the sampler's
coordinates differ.

With a fixed :class:`Population` (per-patient fits) m, s and the population-level values are
constants and each patient's posterior is independent of the others'.

A patient whose solve fails (``Trajectory.ok`` False) gets log density -inf: the proposal is
rejected instead of poisoning the run (DESIGN.md section 10).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jaxtyping import Array, PRNGKeyArray

from ..dynamics import Analytic, FastClearance, Trajectory, solve
from ..observation import (
    DrawCounts,
    EndpointModel,
    Family,
    count_log_prob,
    expected_counts,
    get_assay,
    log_burden,
    sample_counts,
)
from ..simulate._parameters import from_unconstrained, to_unconstrained
from ..specs import ModelSpec, TreatmentDesign, build_model, internal_values
from ._data import PatientArrays
from ._level import LEVEL_SITE, SinglesLevel
from ._outcomes import outcome_log_likelihood, relapse_log_likelihood

#: sd of log(between-patient SD) around the spec's ``between_patients`` (weakly informative:
#: a factor e^(2 x 0.5) = 2.7 either way holds 95% of the prior).
SD_PRIOR_SD_LOG = 0.5


@dataclasses.dataclass(frozen=True)
class Population:
    """A fixed population distribution: what per-patient fits condition on.

    Attributes:
        medians: population median of each patient-level parameter (spec units).
        sds: between-patient SD of each patient-level parameter (unconstrained scale).
        values: each population-level parameter (spec units).
        source: where the numbers came from (recorded in the run's manifest).
    """

    medians: Mapping[str, float]
    sds: Mapping[str, float]
    values: Mapping[str, float]
    source: str

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> Population:
        """Prior medians and the spec's ``between_patients`` (a new patient, no cohort data)."""
        medians, sds, values = {}, {}, {}
        for name in spec.sampled:
            p = spec.parameters[name]
            if p.level == "patient":
                medians[name], sds[name] = p.typical(), p.between_patients
            else:
                values[name] = p.typical()
        return cls(medians, sds, values, source=f"spec {spec.name} (prior medians)")

    @classmethod
    def from_posterior(cls, spec: ModelSpec, posterior, source: str) -> Population:
        """Posterior medians of a cohort fit's population parameters (``posterior`` is the
        DataTree's posterior group, or any mapping of name -> samples)."""
        med = lambda name: float(np.median(np.asarray(posterior[name])))  # noqa: E731
        medians, sds, values = {}, {}, {}
        for name in spec.sampled:
            if spec.parameters[name].level == "patient":
                medians[name], sds[name] = med(f"{name}_median"), med(f"{name}_sd")
            else:
                values[name] = med(name)
        return cls(medians, sds, values, source=source)

    def to_dict(self) -> dict:
        return {
            "medians": dict(self.medians),
            "sds": dict(self.sds),
            "values": dict(self.values),
            "source": self.source,
        }


def fit_engine(spec: ModelSpec, design: TreatmentDesign) -> FastClearance:
    """The engine inside the likelihood.

    :class:`~ctcdyn.Analytic` (the fast-clearance model in closed form; gradients ~100x cheaper
    than through an adaptive solve, DESIGN.md section 10) when both growth laws are exponential
    and no treatment is given in boluses; otherwise :class:`~ctcdyn.FastClearance` with
    tolerances for inference (rtol 1e-5 is far below the relative noise of any count: a
    Poisson count of 10^4 has 1%), saving inside the solver's loop.
    """
    exponential = spec.primary_growth == "exponential" and spec.metastatic_growth == "exponential"
    max_doses = design.max_doses()
    if exponential and max_doses == 1 and not (np.asarray(design.dose_interval) > 0).any():
        # The counts never read the lesion count. clock_basis=True: each patient's harmonics
        # as one small matrix product with the basis of its draws' clock hours (data). The
        # per-time loop over 11 harmonics, which XLA split into ~20 kernels each recomputing
        # the Chebyshev recurrence, cost half of every gradient (benchmarks/
        # likelihood_gradient.py; docs/benchmarks.md).
        return Analytic(lesions=False, clock_basis=True)
    # dense_steps=0: a likelihood reads a few draw times, where saving inside the solver's loop
    # is cheap (the dense path pays off on long daily grids); the clock basis as above.
    return FastClearance(
        rtol=1e-5,
        atol=1e-6,
        max_steps=4096,
        max_doses=max_doses,
        dense_steps=0,
        clock_basis=True,
    )


@dataclasses.dataclass(frozen=True, eq=False)
class CountModel:
    """The NumPyro model of a cohort's counts under ``spec`` (call it with :class:`PatientArrays`).

    Attributes:
        spec: the model spec (parameters, priors, growth laws, count family).
        engine: dynamics engine of the likelihood (:func:`fit_engine`).
        population: None for the hierarchical cohort model; a :class:`Population` for
            independent per-patient fits.
        censored: whether any count is censored (False skips the costly tail probabilities).
        outcomes: clinical endpoints fitted with the counts ("os", "pfs", "relapse"), through
            the spec's :class:`~ctcdyn.observation.EndpointModel`; the data must carry them
            (``PatientArrays.outcomes``).
        partial_centring: sample each patient's singles level partially centred
            (:mod:`._level`; cohort model only). Opt-in: it speeds up the between-patient SDs
            but slows the population parameters in the level (half-life, circadian rhythm) more,
            on the mbc cohorts of benchmarks/fit_vs_stan.py (``--partial-centring``;
            docs/benchmarks.md). Off: every patient effect non-centred.
    """

    spec: ModelSpec
    engine: FastClearance
    population: Population | None = None
    censored: bool = True
    outcomes: tuple[str, ...] = ()
    partial_centring: bool = False

    def _key(self) -> tuple:
        # The class is part of the key: a subclass (a variant of the likelihood) must not share
        # the compiled samplers of its base model.
        return (
            type(self),
            repr(self.spec),
            self.engine,
            repr(self.population),
            self.censored,
            self.outcomes,
            self.partial_centring,
        )

    @property
    def endpoints(self) -> EndpointModel:
        """The spec's endpoint model (thresholds and other-cause rates)."""
        return EndpointModel.from_spec(self.spec)

    def __eq__(self, other: object) -> bool:
        # Equal models share compiled samplers and likelihoods (jit caches key on this).
        return isinstance(other, CountModel) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    # -- parameters -------------------------------------------------------------------------

    @property
    def singles_level(self) -> SinglesLevel | None:
        """The partially centred singles level of the cohort model (:mod:`._level`); None for
        per-patient fits (no between-patient SDs to sample, no funnel) or with
        ``partial_centring`` off."""
        if self.population is not None or not self.partial_centring:
            return None
        return SinglesLevel.from_spec(self.spec)

    def sample_parameters(
        self, n_patients: int, data: PatientArrays | None = None
    ) -> dict[str, Array]:
        """NumPyro sites of every sampled parameter; returns their values (spec units).

        ``data``: the counts that set the weight of each patient's singles level
        (:mod:`._level`); None (prior draws) samples the level non-centred. Either way the
        parameters' distribution is the same.
        """
        values: dict[str, Array] = {}
        location: dict[str, Array] = {}
        sd: dict[str, Array] = {}
        pop = self.population
        patient = self.site_names()[1]
        for name in self.spec.sampled:
            p = self.spec.parameters[name]
            assert p.prior is not None
            if p.level == "patient":
                if pop is None:
                    median = numpyro.sample(f"{name}_median", p.prior.to_numpyro())
                    sd[name] = numpyro.sample(
                        f"{name}_sd",
                        dist.LogNormal(math.log(p.between_patients), SD_PRIOR_SD_LOG),
                    )
                else:
                    median, sd[name] = pop.medians[name], jnp.asarray(pop.sds[name])
                location[name] = to_unconstrained(name, median)
            elif pop is None:
                values[name] = numpyro.sample(name, p.prior.to_numpyro())
            else:
                values[name] = jnp.asarray(pop.values[name])
        with numpyro.plate("patient", n_patients):
            eta = {name: numpyro.sample(f"{name}_z", dist.Normal(0.0, 1.0)) for name in patient}
            level = self.singles_level
            if level is not None:
                eta = _centre_level(level, eta, location, sd, values, n_patients, data)
        for name in patient:
            values[name] = numpyro.deterministic(
                name, from_unconstrained(name, location[name] + sd[name] * eta[name])
            )
        return values

    # -- dynamics and observation -----------------------------------------------------------

    def trajectory(
        self, data: PatientArrays, values: Mapping[str, Array], times: Array | None = None
    ) -> Trajectory:
        """The dynamics of every patient at its draw times, or at ``times`` (patients, T), sorted
        per patient (leading axis: patients), solved by the likelihood's engine (lesion counts
        are NaN under ``Analytic(lesions=False)``)."""
        treatments = data.design.treatments(self.spec, values)
        model = build_model(self.spec, values, treatments)
        ts = data.time if times is None else times
        return jax.vmap(lambda m, t: solve(m, t, self.engine), in_axes=(_patient_axes(model), 0))(
            model, ts
        )

    def outcome_log_likelihood(
        self, data: PatientArrays, values: Mapping[str, Array]
    ) -> dict[str, Array]:
        """Log-likelihood of each patient's recorded endpoints, {outcome: (patients,)}.

        Empty when the model fits no outcomes; a failed solve gives -inf for its patient.
        """
        if not self.outcomes:
            return {}
        recorded = data.outcomes
        assert recorded is not None, "the data carry no outcomes (fit_data(..., outcomes=))"
        out: dict[str, Array] = {}
        if set(self.outcomes) - {"relapse"}:
            traj = self.trajectory(data, values, jnp.asarray(recorded.times))
            burden = traj.primary + traj.metastatic
            ll = outcome_log_likelihood(self.endpoints, self.outcomes, recorded, log_burden(burden))
            out = {name: jnp.where(traj.ok, value, -jnp.inf) for name, value in ll.items()}
        if "relapse" in self.outcomes:
            # the relapse law on its own grid: the lesion rates, M_0, the seeding rate and the
            # kill of each patient's model, the burden from the likelihood's engine
            relapse = self.endpoints.relapse
            assert relapse is not None, "the spec declares no relapse law (detection_burden)"
            ts = jnp.asarray(recorded.relapse_times)
            traj = self.trajectory(data, values, ts)
            model = build_model(self.spec, values, data.design.treatments(self.spec, values))
            log_s = jax.vmap(relapse.log_survival_of, in_axes=(_patient_axes(model), 0, 0))(
                model, ts, traj.primary + traj.metastatic
            )
            ll_relapse = relapse_log_likelihood(recorded, log_s)
            out["relapse"] = jnp.where(traj.ok, ll_relapse, -jnp.inf)
        return out

    def expected(
        self, data: PatientArrays, values: Mapping[str, Array]
    ) -> tuple[DrawCounts, Array]:
        """Mean counts of every draw, and whether each patient's solve succeeded."""
        n = jnp.shape(data.time)[0]
        traj = self.trajectory(data, values)
        internal = internal_values(self.spec, values)
        recovery = data.recovery
        if "recovery" in internal:
            sampled = jnp.broadcast_to(internal["recovery"], (n,))[:, None]
            recovery = jnp.where(data.sampled_recovery, sampled, data.recovery)
        assay = dataclasses.replace(
            get_assay("cellsearch"),
            recovery=recovery,  # type: ignore[arg-type]
            cluster_recovery=data.cluster_recovery,  # type: ignore[arg-type]
            background_per_ml=data.background_per_ml,  # type: ignore[arg-type]
        )
        means = expected_counts(
            traj.singles,
            traj.clusters,
            assay=assay,
            volume_ml=data.volume_ml,
            blood_volume_ml=jnp.asarray(data.blood_volume_ml)[:, None],
        )
        return means, traj.ok

    def _concentration(self, values: Mapping[str, Array]) -> Array | None:
        if self.spec.count_family != "negbin":
            return None
        return internal_values(self.spec, values)["dispersion"]

    def log_likelihood(
        self, data: PatientArrays, values: Mapping[str, Array]
    ) -> tuple[Array, Array]:
        """Pointwise log-likelihood of the single-CTC and cluster counts, each (patients, draws).

        Missing and padded draws contribute 0; a failed solve gives -inf for its patient.
        """
        return self._log_likelihood(data, values, *self.expected(data, values))

    def _log_likelihood(
        self, data: PatientArrays, values: Mapping[str, Array], means: DrawCounts, ok: Array
    ) -> tuple[Array, Array]:
        phi = self._concentration(values)
        family: Family = self.spec.count_family  # type: ignore[assignment]

        def one(mean, observed, censor, mask):
            ll = count_log_prob(
                mean,
                observed,
                censor=censor if self.censored else None,
                mask=mask,
                family=family,
                concentration=phi,
            )
            return jnp.where(ok[:, None], ll, -jnp.inf)

        return (
            one(means.singles, data.ctc, data.ctc_censor, data.ctc_mask),
            one(means.clusters, data.clusters, data.clusters_censor, data.clusters_mask),
        )

    def predict(
        self, key: PRNGKeyArray, data: PatientArrays, values: Mapping[str, Array]
    ) -> DrawCounts:
        """Replicated counts of every draw (the posterior predictive, given ``values``)."""
        return self._predict(key, values, self.expected(data, values)[0])

    def _predict(self, key: PRNGKeyArray, values: Mapping[str, Array], means: DrawCounts):
        phi = self._concentration(values)
        family: Family = self.spec.count_family  # type: ignore[assignment]
        k_s, k_c = jax.random.split(key)
        return DrawCounts(
            singles=sample_counts(k_s, means.singles, family=family, concentration=phi),
            clusters=sample_counts(k_c, means.clusters, family=family, concentration=phi),
        )

    def pointwise(
        self, key: PRNGKeyArray, data: PatientArrays, values: Mapping[str, Array]
    ) -> tuple[Array, Array, DrawCounts]:
        """:meth:`log_likelihood` and :meth:`predict` from one solve of the dynamics."""
        means, ok = self.expected(data, values)
        singles, clusters = self._log_likelihood(data, values, means, ok)
        return singles, clusters, self._predict(key, values, means)

    # -- the NumPyro model ------------------------------------------------------------------

    def __call__(self, data: PatientArrays) -> None:
        values = self.sample_parameters(jnp.shape(data.time)[0], data)
        numpyro.factor("counts", _total_log_likelihood(self, data, values))

    def initial_values(self, n_patients: int) -> dict[str, Array]:
        """Every latent site at its prior median (z = 0): where chains start, before jitter."""
        values: dict[str, Array] = {}
        for name in self.spec.sampled:
            p = self.spec.parameters[name]
            assert p.prior is not None
            if p.level == "patient":
                values[f"{name}_z"] = jnp.zeros(n_patients)
                if self.population is None:
                    values[f"{name}_median"] = jnp.asarray(p.prior.median())
                    values[f"{name}_sd"] = jnp.asarray(p.between_patients)
            elif self.population is None:
                values[name] = jnp.asarray(p.prior.median())
        if self.singles_level is not None:
            values[LEVEL_SITE] = jnp.zeros(n_patients)  # the level at the prior medians
        return values

    def mass_blocks(self) -> list[tuple[str, ...]]:
        """Latent sites over which ``NUTSSettings(mass_matrix="blocks")`` adapts a dense mass
        matrix (diagonal elsewhere).

        Cohort model: the population-level block (medians, between-patient SDs and population
        parameters; ~20 dimensions). The counts identify products such as shedding x burden x
        half-life, not the factors, so the posterior of the population block lies along ridges
        that a diagonal mass matrix crosses in tiny steps. The per-patient sites stay diagonal:
        a dense matrix over hundreds of them would not be estimable from the warmup draws.
        Per-patient model: none (a dense matrix over one patient's parameters gave more
        divergent transitions, not fewer, on the demo cohort; docs/inference.md).
        """
        population = self.site_names()[0]  # empty in the per-patient model
        return [tuple(population)] if population else []

    def patient_sites(self) -> list[str]:
        """Latent sites with one value per patient: the standardised effects ``NAME_z`` and,
        in the cohort model, the singles level (``singles_level``)."""
        names = [f"{name}_z" for name in self.site_names()[1]]
        return names + ([LEVEL_SITE] if self.singles_level is not None else [])

    def site_names(self) -> tuple[list[str], list[str]]:
        """(population-level, per-patient) names of the parameters reported in a fit."""
        population, patient = [], []
        for name in self.spec.sampled:
            p = self.spec.parameters[name]
            if p.level == "patient":
                patient.append(name)
                if self.population is None:
                    population += [f"{name}_median", f"{name}_sd"]
            elif self.population is None:
                population.append(name)
        return population, patient


def _centre_level(
    level: SinglesLevel,
    eta: Mapping[str, Array],
    location: Mapping[str, Array],
    sd: Mapping[str, Array],
    values: Mapping[str, Array],
    n_patients: int,
    data: PatientArrays | None,
) -> dict[str, Array]:
    """The standardised patient effects eta with their singles level sampled partially centred
    (site ``singles_level``; :mod:`._level`), the directions orthogonal to it as in ``eta``."""
    names = level.patient
    scale = jnp.stack([jnp.asarray(sd[n]) for n in names])  # D^(1/2) l
    s_level = jnp.sqrt(jnp.sum(scale**2))
    u = scale / s_level
    along = sum(u[k] * eta[n] for k, n in enumerate(names))  # u'z: replaced by the level
    shift = {n: location[n] + sd[n] * eta[n] for n in level.shift}
    if data is None:
        weight, share, time = jnp.zeros(n_patients), jnp.zeros((n_patients, 1)), jnp.zeros(1)
    else:
        (weight, share), time = level.weights(data), jnp.asarray(data.time)
    offset = level.offset(location, shift, values, share, time)
    x = numpyro.sample(LEVEL_SITE, dist.Normal(weight * offset, s_level**weight))
    e = s_level ** (-weight) * (x - weight * offset)  # (level - m) / s_level ~ N(0, 1)
    out = dict(eta)
    for k, n in enumerate(names):
        out[n] = eta[n] + u[k] * (e - along)
    return out


def _patient_axes(model):
    """vmap axes of a cohort's model: 0 for per-patient leaves, None for shared scalars, so
    that what depends on population-level parameters only (the circadian harmonics, the
    clearance transfer functions) is computed once, not once per patient."""
    return jax.tree.map(lambda x: None if jnp.ndim(x) == 0 else 0, model)


@functools.partial(jax.jit, static_argnums=0)
def _total_log_likelihood(model: CountModel, data: PatientArrays, values) -> Array:
    # Compiled once per model and shape, so NumPyro's eager traces (initialisation,
    # prior predictive) do not dispatch the dynamics op by op.
    singles, clusters = model.log_likelihood(data, values)
    outcomes = model.outcome_log_likelihood(data, values)
    return jnp.sum(singles) + jnp.sum(clusters) + sum(jnp.sum(v) for v in outcomes.values())
