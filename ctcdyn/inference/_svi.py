"""Stochastic variational inference: a quick, approximate look at the posterior.

A mean-field normal guide on the unconstrained scale (NumPyro ``AutoNormal``) fitted with Adam.
It ignores posterior correlations and understates uncertainty; fits by SVI are recorded as
approximate and never pass the diagnostics gate as if they were MCMC.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import numpy as np
from jaxtyping import PRNGKeyArray
from numpyro.infer import SVI, Predictive, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal
from numpyro.infer.initialization import init_to_value
from numpyro.optim import Adam

from ._data import PatientArrays
from ._model import CountModel

MAX_BLOCK = 500


@dataclasses.dataclass(frozen=True)
class SVISettings:
    """Optimiser steps, Adam learning rate and the number of draws taken from the guide."""

    steps: int = 5000
    learning_rate: float = 0.01
    draws: int = 1000

    def __post_init__(self) -> None:
        if self.steps < 1 or self.draws < 1 or not self.learning_rate > 0:
            raise ValueError(f"invalid SVI settings: {self}")


def run_svi(
    model: CountModel,
    arrays: PatientArrays,
    key: PRNGKeyArray,
    settings: SVISettings | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Fit the guide; return draws (1, draws, ...) of the reported sites (and no sampler
    statistics: there are none)."""
    settings = SVISettings() if settings is None else settings
    guide = AutoNormal(
        model, init_loc_fn=init_to_value(values=model.initial_values(np.shape(arrays.time)[0]))
    )
    svi = SVI(model, guide, Adam(settings.learning_rate), Trace_ELBO())
    k_init, k_draw = jax.random.split(key)
    state = svi.init(k_init, arrays)
    block = math.gcd(settings.steps, MAX_BLOCK)

    @jax.jit
    def advance(state):
        return jax.lax.scan(lambda s, _: svi.update(s, arrays), state, None, length=block)

    losses = []
    done = 0
    while done < settings.steps:
        state, loss = advance(state)
        losses.append(np.asarray(loss))
        done += block
        if progress is not None:
            progress(done, settings.steps)
    params = svi.get_params(state)
    population, patient = model.site_names()
    draws = Predictive(
        model,
        guide=guide,
        params=params,
        num_samples=settings.draws,
        return_sites=population + patient,
    )(k_draw, arrays)
    samples = {name: np.asarray(value)[None] for name, value in draws.items()}
    return samples, {}
