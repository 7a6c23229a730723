"""Drawing parameter values for a virtual cohort from a spec.

Population-level parameters take their prior median ("typical" cohort) or a draw from the prior.
Patient-level parameters vary around the population value on an unconstrained scale:

    T(theta_i) = T(theta_pop) + between_patients * z_i,    z_i ~ Normal(0, 1),

with T = log for positive parameters, logit for probabilities and the identity otherwise. The
fitted hierarchical model uses the same parameterisation (non-centred), so truth.csv and the
posterior speak of the same quantities.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from ..specs import CATALOGUE, Domain, ModelSpec


def to_unconstrained(name: str, x):
    domain = CATALOGUE[name].domain
    if domain is Domain.POSITIVE:
        return jnp.log(x)
    if domain is Domain.PROBABILITY:
        return jnp.log(x) - jnp.log1p(-x)
    return jnp.asarray(x)


def from_unconstrained(name: str, u):
    domain = CATALOGUE[name].domain
    if domain is Domain.POSITIVE:
        return jnp.exp(u)
    if domain is Domain.PROBABILITY:
        return jax.nn.sigmoid(u)
    return u


def draw_parameters(
    spec: ModelSpec,
    n_patients: int,
    key: PRNGKeyArray,
    *,
    population: Literal["typical", "prior"] = "typical",
) -> dict[str, Array]:
    """Values (spec units) of every sampled parameter: shape (n_patients,) or () for population."""
    values: dict[str, Array] = {}
    keys = jax.random.split(key, 2 * len(spec.sampled))
    for i, name in enumerate(spec.sampled):
        p = spec.parameters[name]
        assert p.prior is not None
        if population == "prior":
            pop = p.prior.to_numpyro().sample(keys[2 * i])
        else:
            pop = jnp.asarray(p.typical())
        if p.level == "patient":
            z = jax.random.normal(keys[2 * i + 1], (n_patients,))
            values[name] = from_unconstrained(
                name, to_unconstrained(name, pop) + p.between_patients * z
            )
        else:
            values[name] = jnp.asarray(pop, dtype=jnp.result_type(float))
    return values
