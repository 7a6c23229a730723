r"""Fast-clearance form of the circulation: the exact periodic solution.

Given a source that is constant over a day apart from the circadian rhythm, the circulation
equations

.. math:: dC/dt = \sigma_c A c(t) - (k_c + \delta) C, \qquad
          dS/dt = \sigma_s A c(t) - k_s S + z \delta C

are linear with a periodic forcing. Writing c = Re sum_n b_n e^{i n theta} (theta the circadian
phase, omega = 2 pi per day), each harmonic is passed through the low-pass transfer function
1 / (k + i n omega):

.. math:: C_n = \frac{\sigma_c A b_n}{k_c + \delta + i n\omega}, \qquad
          S_n = \frac{\sigma_s A b_n + z \delta C_n}{k_s + i n\omega},

so harmonic n is damped by k / sqrt(k^2 + n^2 omega^2) and lagged by atan(n omega / k). The
daily means are S_0 = (sigma_s A + z delta C_0) / k_s and C_0 = sigma_c A / (k_c + delta),
i.e. S ~ nu / k.

Error bound. The form is exact while A = (P + M) u and delta are constant; the true solution
relaxes to it as exp(-k t). A slowly varying A adds a relative error of at most
|d ln A / dt| / k (e.g. a growth rate of 0.05/day against k_s = 33/day for a 30-min half-life:
0.15%). After a switch (surgery, a treatment start or a bolus) the error decays as
exp(-k (t - t_switch)): below 1% after 7 half-lives, i.e. 3.5 h for single CTCs with a 30 min
half-life. ``tests/test_fast_clearance.py`` measures the agreement with the full ODE.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._circadian import N_HARMONICS
from ._model import CTCModel

_OMEGA = 2.0 * jnp.pi  # rad per day


def _harmonic_amplitudes(model: CTCModel, t: Float[ArrayLike, ""], burden: Float[ArrayLike, ""]):
    """Complex amplitudes (S_n, C_n), n = 0..N_HARMONICS, of the periodic circulation."""
    shed = jnp.asarray(burden) * model.treatments.shedding_factor(t)
    delta = model.treatments.dissociation_rate(t)
    b = model.circadian.harmonics()
    iw = 1j * _OMEGA * jnp.arange(N_HARMONICS + 1)
    clusters = model.shedding_cluster * shed * b / (model.clearance_cluster + delta + iw)
    singles = (model.shedding_single * shed * b + model.cluster_size * delta * clusters) / (
        model.clearance_single + iw
    )
    return singles, clusters


def daily_mean_circulation(
    model: CTCModel, t: Float[ArrayLike, ""], burden: Float[ArrayLike, ""]
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Daily means (S_0, C_0) of single CTCs and clusters for the burden at time t."""
    singles, clusters = _harmonic_amplitudes(model, t, burden)
    return jnp.real(singles[0]), jnp.real(clusters[0])


def periodic_circulation(
    model: CTCModel,
    t: Float[ArrayLike, ""],
    burden: Float[ArrayLike, ""],
    hour: Float[ArrayLike, ""],
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Single CTCs and clusters in circulation at clock hour ``hour`` (periodic solution)."""
    singles, clusters = _harmonic_amplitudes(model, t, burden)
    rotation = jnp.exp(1j * jnp.arange(N_HARMONICS + 1) * model.circadian.phase(hour))
    return jnp.real(jnp.sum(singles * rotation)), jnp.real(jnp.sum(clusters * rotation))
