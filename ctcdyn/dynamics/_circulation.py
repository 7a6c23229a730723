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
relaxes to it as exp(-k t). A source growing at a slowly varying rate g = d ln A / dt shifts each
harmonic by at most g / k of its own amplitude, so the error is at most (g / k) sum_n |S_n|:
relative to the daily peak, not to the value at the trough (e.g. g = 0.05/day against
k_s = 33/day for a 30-min half-life: 0.15% of the peak). After a switch (surgery, a treatment
start or a bolus) the error decays as exp(-k (t - t_switch)): below 1% after 7 half-lives, i.e.
3.5 h for single CTCs with a 30 min half-life. ``tests/test_fast_clearance.py`` measures the
agreement with the full ODE.

Seeding. The slow compartments integrate the daily-mean seeding rate lambda_0. The rhythm adds
a bounded periodic part, whose integral is sum_{n>=1} Re(lambda_n e^{i n theta} / (i n omega)),
lambda_n = eps_s k_s S_n + eps_c k_c C_n; :func:`circulation_path` returns it so the engine adds
it to N and M (exact up to the same g / k order).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._circadian import N_HARMONICS
from ._model import CTCModel

_OMEGA = 2.0 * jnp.pi  # rad per day


def daily_mean_circulation(
    model: CTCModel, t: Float[ArrayLike, ""], burden: Float[ArrayLike, ""]
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Daily means (S_0, C_0) of single CTCs and clusters for the burden at time t.

    C_0 = sigma_c A / (k_c + delta) and S_0 = (sigma_s A + z delta C_0) / k_s, A = burden * u(t).
    """
    shed = jnp.asarray(burden) * model.treatments.shedding_factor(t)
    delta = model.treatments.dissociation_rate(t)
    clusters = model.shedding_cluster * shed / (model.clearance_cluster + delta)
    singles = (model.shedding_single * shed + model.cluster_size * delta * clusters) / (
        model.clearance_single
    )
    return jnp.asarray(singles), jnp.asarray(clusters)


def _amplitudes(model: CTCModel, harmonics: Array, shed: Array, delta: Array):
    """Complex S_n, C_n, shape (..., N_HARMONICS + 1), for sources ``shed`` and rates ``delta``."""
    iw = 1j * _OMEGA * jnp.arange(N_HARMONICS + 1)
    shed, delta = shed[..., None], delta[..., None]
    clusters = model.shedding_cluster * shed * harmonics / (model.clearance_cluster + delta + iw)
    singles = (model.shedding_single * shed * harmonics + model.cluster_size * delta * clusters) / (
        model.clearance_single + iw
    )
    return singles, clusters


def circulation_harmonics(
    model: CTCModel, t: Float[ArrayLike, ""], burden: Float[ArrayLike, ""]
) -> tuple[Array, Array]:
    """Complex amplitudes (S_n, C_n), n = 0..N_HARMONICS, of the periodic circulation at t."""
    shed = jnp.asarray(burden) * model.treatments.shedding_factor(t)
    delta = model.treatments.dissociation_rate(t)
    return _amplitudes(model, model.circadian.harmonics(), shed, delta)


def _rotations(phase: Array) -> Array:
    """e^{i n phase} for n = 0..N_HARMONICS, by repeated multiplication (no trig per n)."""
    z = jnp.exp(1j * phase)
    powers = [jnp.ones_like(z)]
    for _ in range(N_HARMONICS):
        powers.append(powers[-1] * z)
    return jnp.stack(powers, axis=-1)


def circulation_path(
    model: CTCModel,
    ts: Float[ArrayLike, " times"],
    burden: Float[ArrayLike, " times"],
    hours: Float[ArrayLike, " times"],
) -> tuple[Float[Array, " times"], Float[Array, " times"], Float[Array, " times"]]:
    """Singles, clusters and the periodic part of cumulative seeding at many times.

    The circadian harmonics are computed once for the patient; each time costs a handful of
    complex multiply-adds. Returns (S(t), C(t), W(t)) with W the periodic seeding integral
    (lesions), zero on average, to add to the slowly integrated N and M.
    """
    ts = jnp.asarray(ts)
    shed = jnp.asarray(burden) * _on_grid(model.treatments.shedding_factor, ts)
    delta = _on_grid(model.treatments.dissociation_rate, ts)
    singles_n, clusters_n = _amplitudes(model, model.circadian.harmonics(), shed, delta)
    rotation = _rotations(model.circadian.phase(jnp.asarray(hours)))
    seeding_n = (
        model.efficiency_single * model.clearance_single * singles_n
        + model.efficiency_cluster * model.clearance_cluster * clusters_n
    )
    n = jnp.arange(N_HARMONICS + 1)
    antiderivative = jnp.where(n > 0, 1.0 / (1j * _OMEGA * jnp.maximum(n, 1)), 0.0)
    singles = jnp.real(jnp.sum(singles_n * rotation, axis=-1))
    clusters = jnp.real(jnp.sum(clusters_n * rotation, axis=-1))
    wiggle = jnp.real(jnp.sum(seeding_n * antiderivative * rotation, axis=-1))
    return singles, clusters, wiggle


def _on_grid(fn, ts: Array) -> Array:
    """Evaluate a scalar function of time on a grid."""
    return jax.vmap(fn)(ts)


def periodic_circulation(
    model: CTCModel,
    t: Float[ArrayLike, ""],
    burden: Float[ArrayLike, ""],
    hour: Float[ArrayLike, ""],
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Single CTCs and clusters in circulation at clock hour ``hour`` (periodic solution)."""
    singles, clusters, _ = circulation_path(
        model, jnp.reshape(t, (1,)), jnp.reshape(burden, (1,)), jnp.reshape(hour, (1,))
    )
    return singles[0], clusters[0]
