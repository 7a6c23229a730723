r"""A blood draw: from CTCs in the whole circulation to the counts an assay reports.

A draw of v mL, processed by an assay of single-cell recovery eta, cluster recovery eta_c and
background b, from a patient with S(t) single CTCs and C(t) clusters in V mL of blood, has mean

.. math::

    \mu_s = \eta \, \frac{v}{V} \, S(t) + b \, v, \qquad
    \mu_c = \eta_c \, \frac{v}{V} \, C(t)

=======  ==================================================  =======
S, C     single CTCs / clusters in the whole circulation     cells, events
v        blood processed by the test                         mL
V        blood volume, 5000 mL or 70 mL/kg (ctcdyn._units)   mL
eta      recovery of single cells, eta_c of clusters         1
b        false-positive CTC per mL processed                 1/mL
=======  ==================================================  =======

(DESIGN.md section 4): the tube samples the fraction v / V of a well-mixed circulation, the
assay finds a fraction eta of what is there, and adds false positives in proportion to the
volume it processes. Clusters have no background term. The observed counts are Poisson or
negative binomial around these means (:mod:`ctcdyn.observation._counts`).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._units import DEFAULT_BLOOD_VOLUME_ML
from ._assays import Assay, get_assay
from ._counts import Family, sample_counts

__all__ = ["DrawCounts", "expected_counts", "simulate_draw"]


class DrawCounts(eqx.Module):
    """Single-CTC and cluster counts of blood draws (means, or observed counts).

    Attributes:
        singles: single CTCs per draw.
        clusters: CTC clusters per draw.
    """

    singles: Array
    clusters: Array


def expected_counts(
    singles: Float[ArrayLike, "..."],
    clusters: Float[ArrayLike, "..."],
    *,
    assay: str | Assay = "cellsearch",
    volume_ml: Float[ArrayLike, "..."] | None = None,
    blood_volume_ml: Float[ArrayLike, "..."] = DEFAULT_BLOOD_VOLUME_ML,
) -> DrawCounts:
    r"""Mean counts of a draw: mu_s = eta v / V S + b v and mu_c = eta_c v / V C.

    Args:
        singles: S(t), single CTCs in the whole circulation (cells), e.g. ``traj.singles``.
        clusters: C(t), CTC clusters in the whole circulation (events).
        assay: a registered name or an :class:`~ctcdyn.observation.Assay` (whose fields may be
            traced arrays, e.g. a sampled recovery).
        volume_ml: blood processed per draw, v (mL); default the assay's default volume.
        blood_volume_ml: the patient's blood volume, V (mL); default 5000 mL, or
            ``ctcdyn._units.blood_volume_ml(weight_kg)`` = 70 mL/kg.

    Returns:
        The means, broadcast over all arguments (counts per draw).
    """
    a = get_assay(assay)
    v = jnp.asarray(a.default_volume_ml if volume_ml is None else volume_ml)
    fraction = v / jnp.asarray(blood_volume_ml)
    # A solver's round-off can leave a vanishing compartment at -1e-14 cells: a count of zero.
    in_blood_singles = jnp.maximum(jnp.asarray(singles), 0.0)
    in_blood_clusters = jnp.maximum(jnp.asarray(clusters), 0.0)
    mean_singles = a.recovery * fraction * in_blood_singles + a.background_per_ml * v
    mean_clusters = a.cluster_recovery * fraction * in_blood_clusters
    return DrawCounts(singles=mean_singles, clusters=mean_clusters)


def simulate_draw(
    key: PRNGKeyArray,
    singles: Float[ArrayLike, "..."],
    clusters: Float[ArrayLike, "..."],
    *,
    assay: str | Assay = "cellsearch",
    volume_ml: Float[ArrayLike, "..."] | None = None,
    blood_volume_ml: Float[ArrayLike, "..."] = DEFAULT_BLOOD_VOLUME_ML,
    family: Family = "poisson",
    concentration: Float[ArrayLike, "..."] | None = None,
    cluster_concentration: Float[ArrayLike, "..."] | None = None,
) -> DrawCounts:
    """Simulate the counts an assay reports for draws from a circulation with S, C CTCs.

    The means come from :func:`expected_counts`; counts are Poisson or negative binomial
    around them (``cluster_concentration`` defaults to ``concentration``). Pure JAX: ``jit``
    and ``vmap`` it over keys and trajectories with the options closed over, e.g.
    ``jax.vmap(functools.partial(simulate_draw, assay="parsortix"))(keys, S, C)``.

    Returns:
        Integer counts of singles and clusters, one per draw.
    """
    means = expected_counts(
        singles, clusters, assay=assay, volume_ml=volume_ml, blood_volume_ml=blood_volume_ml
    )
    key_singles, key_clusters = jax.random.split(key)
    phi_c = concentration if cluster_concentration is None else cluster_concentration
    counts_singles: Int[Array, "..."] = sample_counts(
        key_singles, means.singles, family=family, concentration=concentration
    )
    counts_clusters: Int[Array, "..."] = sample_counts(
        key_clusters, means.clusters, family=family, concentration=phi_c
    )
    return DrawCounts(singles=counts_singles, clusters=counts_clusters)
