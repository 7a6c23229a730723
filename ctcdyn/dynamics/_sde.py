r"""SDE engine: environmental growth noise and bursty (Ornstein-Uhlenbeck) shedding.

Itô SDEs for the slow compartments (rates per day, W_1, W_2, W_3 independent Brownian motions
in days^{1/2}):

.. math::

    dP &= (g_P(P) - kill(t) P)\,dt + \sigma_g P\,dW_1 \\
    dM &= (g_M(M) - kill(t) M + \lambda(t))\,dt + \sigma_g M\,dW_2 \\
    dN &= \lambda(t)\,dt \\
    d\xi &= -\theta \xi\,dt + s\,dW_3

with the shedding multiplier :math:`m(t) = \exp(\xi - s^2 / (4\theta))`, whose stationary
mean is 1 (xi is Gaussian with variance s^2 / (2 theta)), and the seeding rate
lambda(t) = m(t) (eps_s k_s S_0 + eps_c k_c C_0) at the daily-mean fast-clearance circulation
of the current burden (:func:`daily_mean_circulation`). The circulation reported at the save
times is the fast-clearance periodic solution times the multiplier, S = m(t) S_per(t),
C = m(t) C_per(t) (means given the environment; draw counts from them with the observation
model).

sigma_g (1/day^{1/2}) is environmental (not demographic) noise: geometric, so log P has
variance sigma_g^2 t for exponential growth. The fast-clearance reading of the OU shedding is
valid when the correlation time 1/theta of the bursts is much longer than the CTC half-life
(minutes): the circulation then tracks the momentary source. xi starts from its stationary
law. Surgery is the same state jump as in the deterministic engines.

Solver: Euler-Maruyama (Itô; diffrax ``Euler``) with a fixed step ``dt`` (strong order 1/2,
weak order 1), split at surgery by :func:`integrate_piecewise`. Fixed steps are not clipped
onto treatment switches (diffrax clips adaptive controllers only): a switch inside a step
costs O(dt), the order of the method itself. With zero noise it is the explicit Euler method for the
:class:`FastClearance` equations (global error O(dt)).

Sources: geometric environmental noise in tumour growth, e.g. Lande, Engen & Saether,
Stochastic Population Dynamics in Ecology (2003), ch. 1; OU log-intensity (a log-Gaussian Cox
process), Møller, Syversveen & Waagepetersen, Scand. J. Stat. 25:451 (1998).
"""

from __future__ import annotations

import math
from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array

from ._circadian import clock_hour
from ._circulation import circulation_path, daily_mean_circulation
from ._engines import AbstractEngine
from ._integrate import integrate_piecewise
from ._model import CTCModel, State, Trajectory


class _Drift(eqx.Module):
    """Drift of y = (P, M, N, xi); a PyTree rather than a closure, so solves are reused."""

    model: CTCModel
    reversion: Array  # theta (1/day)
    shift: Array  # s^2 / (4 theta), so that exp(xi - shift) has mean 1

    def __call__(self, t, y, args):
        model = self.model
        p, m, xi = y[0], y[1], y[3]
        kill = model.treatments.kill_rate(t)
        singles, clusters = daily_mean_circulation(model, t, p + m)
        seeding = model.seeding_rate(singles, clusters) * jnp.exp(xi - self.shift)
        return jnp.stack(
            [
                model.primary_growth.rate(p) - kill * p,
                model.metastatic_growth.rate(m) - kill * m + seeding,
                seeding,
                -self.reversion * xi,
            ]
        ).astype(y.dtype)


class _Diffusion(eqx.Module):
    growth_noise: Array  # sigma_g (1/day^{1/2})
    shedding_noise: Array  # s (1/day^{1/2})

    def __call__(self, t, y, args):
        zero = jnp.zeros((), y.dtype)
        noise = jnp.stack(
            [
                self.growth_noise * jnp.maximum(y[0], 0.0),
                self.growth_noise * jnp.maximum(y[1], 0.0),
                zero,
                self.shedding_noise,
            ]
        ).astype(y.dtype)
        return lx.DiagonalLinearOperator(noise)


class SDE(AbstractEngine):
    """Euler-Maruyama solution of the SDEs of the module docstring.

    Attributes:
        growth_noise: sigma_g, environmental growth noise (1/day^{1/2}).
        shedding_noise: s, noise of the log-shedding multiplier (1/day^{1/2}).
        shedding_reversion: theta, mean reversion of the log-shedding (1/day); 1/theta is the
            correlation time of shedding bursts and must be much longer than a CTC half-life.
        dt: fixed step (days).
        max_steps: steps allowed per segment (static); more gives ``ok=False``.
        max_doses: boluses per treatment registered as switches.
    """

    stochastic: ClassVar[bool] = True
    growth_noise: float = 0.0
    shedding_noise: float = 0.0
    shedding_reversion: float = 1.0
    dt: float = 0.1
    max_steps: int = 100_000
    max_doses: int = 256

    def __check_init__(self):
        if not self.growth_noise >= 0 or not self.shedding_noise >= 0:
            raise ValueError(
                "growth_noise and shedding_noise must be >= 0; got "
                f"{self.growth_noise} and {self.shedding_noise}."
            )
        if not self.shedding_reversion > 0:
            raise ValueError(
                f"shedding_reversion must be > 0 (1/day); got {self.shedding_reversion}."
            )
        if not self.dt > 0:
            raise ValueError(f"dt must be > 0 days; got {self.dt}.")

    @property
    def stationary_variance(self) -> float:
        """Var xi at stationarity, s^2 / (2 theta)."""
        return self.shedding_noise**2 / (2.0 * self.shedding_reversion)

    def multiplier(self, xi):
        """Shedding multiplier exp(xi - s^2 / (4 theta)), stationary mean 1."""
        return jnp.exp(xi - 0.5 * self.stationary_variance)

    def run(self, model, ts, key):
        dtype = ts.dtype
        k_xi, k_path = jax.random.split(key)
        xi0 = math.sqrt(self.stationary_variance) * jax.random.normal(k_xi, dtype=dtype)
        y0 = jnp.stack(
            [
                jnp.asarray(model.primary0, dtype),
                jnp.asarray(model.metastatic0, dtype),
                jnp.asarray(model.lesions0, dtype),
                xi0,
            ]
        )
        # The tree spans both surgery segments (and the hair diffrax may add at the end); its
        # resolution is far below the step, so the increments are exact Gaussians per step.
        brownian = diffrax.VirtualBrownianTree(
            t0=jnp.zeros((), dtype), t1=ts[-1] + 1.0, tol=self.dt / 16, shape=(4,), key=k_path
        )
        # Engine parameters enter as arrays, so changing a noise level does not recompile.
        drift = _Drift(
            model,
            jnp.asarray(self.shedding_reversion, dtype),
            jnp.asarray(0.5 * self.stationary_variance, dtype),
        )
        diffusion = _Diffusion(
            jnp.asarray(self.growth_noise, dtype), jnp.asarray(self.shedding_noise, dtype)
        )
        terms: diffrax.AbstractTerm = diffrax.MultiTerm(
            diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, brownian)
        )
        residual = jnp.asarray(model.treatments.residual_fraction, dtype)
        ys, ok = integrate_piecewise(
            drift,
            y0,
            ts,
            solver=diffrax.Euler(),
            rtol=0.0,
            atol=0.0,
            max_steps=self.max_steps,
            jump_ts=model.treatments.switch_times(self.max_doses),
            jump_time=jnp.asarray(model.treatments.surgery_time, dtype),
            apply_jump=lambda y: y.at[0].multiply(residual),
            terms=terms,
            step_size=self.dt,
        )
        primary, metastatic, lesions, xi = ys[:, 0], ys[:, 1], ys[:, 2], ys[:, 3]
        singles, clusters, _ = circulation_path(model, ts, primary + metastatic, clock_hour(ts))
        factor = self.multiplier(xi)
        state = State(primary, metastatic, singles * factor, clusters * factor, lesions)
        return Trajectory(ts=ts, state=state, ok=ok)
