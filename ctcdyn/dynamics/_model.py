r"""The mechanistic CTC model of DESIGN.md section 3, as one immutable PyTree.

State (means, in cells or events):

=====  =====================================================  ==========
P      primary tumour cells                                   cells
M      metastatic burden, cells summed over lesions           cells
S      single CTCs in the whole circulation                   cells
C      CTC clusters in the whole circulation                  events
N      expected number of metastases founded so far           lesions
=====  =====================================================  ==========

Equations (rates per day; c circadian factor, u shedding multiplier, kill and delta from
:class:`~ctcdyn.Treatments`):

.. math::

    \nu_s &= \sigma_s (P + M) c(t) u(t), \qquad \nu_c = \sigma_c (P + M) c(t) u(t) \\
    dP/dt &= g_P(P) - kill(t) P \\
    dS/dt &= \nu_s - k_s S + z \delta(t) C \\
    dC/dt &= \nu_c - (k_c + \delta(t)) C \\
    \lambda &= \epsilon_s k_s S + \epsilon_c k_c C \\
    dN/dt &= \lambda, \qquad dM/dt = g_M(M) - kill(t) M + \lambda

with k = ln 2 / half-life. Each cleared CTC founds a lesion of one cell with probability
epsilon (the metastatic efficiency); metastases shed too. Surgery at t_s multiplies P by the
residual fraction.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._circadian import Circadian, clock_hour
from ._growth import AbstractGrowth
from ._treatments import Treatments


class State(eqx.Module):
    """Values of the five compartments (any common shape: a time point, or a time axis)."""

    primary: Float[ArrayLike, "..."]
    metastatic: Float[ArrayLike, "..."]
    singles: Float[ArrayLike, "..."]
    clusters: Float[ArrayLike, "..."]
    lesions: Float[ArrayLike, "..."]

    @property
    def burden(self) -> Float[Array, "..."]:
        """Total tumour cells P + M."""
        return jnp.asarray(self.primary) + jnp.asarray(self.metastatic)


class Trajectory(eqx.Module):
    """A solution on a time grid: ``ts`` (days) and the :class:`State` at each time.

    ``ok`` is False where a solver failed (too many steps, non-finite values); engines return
    it rather than raising, so one bad patient does not sink a vmapped batch.
    """

    ts: Float[Array, " times"]
    state: State
    ok: Array

    def __getattr__(self, name: str):  # convenience: traj.singles == traj.state.singles
        if name in State.__dataclass_fields__:
            return getattr(self.state, name)
        raise AttributeError(name)


class CTCModel(eqx.Module):
    """Parameters and initial burden of one patient (or, batched, of many).

    Attributes:
        primary_growth: growth law of the primary tumour.
        metastatic_growth: growth law of the summed metastatic burden.
        shedding_single: sigma_s, single CTCs shed per tumour cell per day.
        shedding_cluster: sigma_c, clusters shed per tumour cell per day.
        half_life_single: circulation half-life of single CTCs (days).
        half_life_cluster: circulation half-life of clusters (days).
        cluster_size: z, mean cells per cluster (cells).
        efficiency_single: epsilon_s, probability that a cleared single CTC founds a lesion.
        efficiency_cluster: epsilon_c, the same for a cluster.
        circadian: daily rhythm of shedding.
        treatments: the patient's treatments and surgery.
        primary0, metastatic0: burden at t = 0 (cells).
        lesions0: metastases present at t = 0 (lesions).
    """

    primary_growth: AbstractGrowth
    metastatic_growth: AbstractGrowth
    shedding_single: Float[ArrayLike, ""]
    shedding_cluster: Float[ArrayLike, ""]
    half_life_single: Float[ArrayLike, ""]
    half_life_cluster: Float[ArrayLike, ""]
    cluster_size: Float[ArrayLike, ""]
    efficiency_single: Float[ArrayLike, ""]
    efficiency_cluster: Float[ArrayLike, ""]
    circadian: Circadian
    treatments: Treatments
    primary0: Float[ArrayLike, ""]
    metastatic0: Float[ArrayLike, ""] = 0.0
    lesions0: Float[ArrayLike, ""] = 0.0

    @property
    def clearance_single(self) -> Float[Array, ""]:
        """k_s = ln 2 / half-life of single CTCs (1/day)."""
        return math.log(2.0) / jnp.asarray(self.half_life_single)

    @property
    def clearance_cluster(self) -> Float[Array, ""]:
        """k_c = ln 2 / half-life of clusters (1/day)."""
        return math.log(2.0) / jnp.asarray(self.half_life_cluster)

    def source(self, t: Float[ArrayLike, ""], burden: Float[ArrayLike, ""]) -> Float[Array, ""]:
        """(P + M) c(t) u(t): the shedding-weighted burden; times sigma it is the shedding rate."""
        return (
            jnp.asarray(burden)
            * self.circadian.factor(clock_hour(t))
            * self.treatments.shedding_factor(t)
        )

    def seeding_rate(self, singles, clusters) -> Float[Array, ""]:
        """lambda = eps_s k_s S + eps_c k_c C: new metastases per day."""
        return jnp.asarray(
            self.efficiency_single * self.clearance_single * singles
            + self.efficiency_cluster * self.clearance_cluster * clusters
        )

    def vector_field(self, t: Float[ArrayLike, ""], y: State) -> State:
        """d/dt of the mean-field state (the full ODE of the module docstring)."""
        kill = self.treatments.kill_rate(t)
        delta = self.treatments.dissociation_rate(t)
        source = self.source(t, y.burden)
        seeding = self.seeding_rate(y.singles, y.clusters)
        return State(
            primary=self.primary_growth.rate(y.primary) - kill * y.primary,
            metastatic=self.metastatic_growth.rate(y.metastatic) - kill * y.metastatic + seeding,
            singles=self.shedding_single * source
            - self.clearance_single * y.singles
            + self.cluster_size * delta * y.clusters,
            clusters=self.shedding_cluster * source - (self.clearance_cluster + delta) * y.clusters,
            lesions=seeding,
        )
