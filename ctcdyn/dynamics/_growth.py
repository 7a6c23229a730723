"""Tumour growth laws.

Each law gives the net per-capita growth rate g(n)/n (1/day) of a population of n cells, so the
mean-field equation is dn/dt = n * per_capita_rate(n). The stochastic engines split it into a
birth and a death rate with the intrinsic ``death_rate`` (cell turnover), which does not change
the mean dynamics but sets the extinction probability of a small clone (d/b for a linear
birth-death process).
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float


def _positive(n: Float[ArrayLike, "..."]) -> tuple[Array, Array]:
    """Mask of n > 0 and a copy of n that is 1 where n <= 0 (safe for logs and gradients)."""
    n = jnp.asarray(n)
    alive = n > 0
    return alive, jnp.where(alive, n, 1.0)


class AbstractGrowth(eqx.Module):
    """A growth law: dn/dt = n * per_capita_rate(n)."""

    @abc.abstractmethod
    def per_capita_rate(self, n: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        """Net growth rate per cell (1/day) at burden n cells."""

    @property
    @abc.abstractmethod
    def turnover(self) -> Float[ArrayLike, ""]:
        """Intrinsic death rate per cell (1/day), used by the stochastic engines."""

    def rate(self, n: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        """Net growth dn/dt (cells/day) at burden n; zero for an extinct population."""
        alive, n_safe = _positive(n)
        return jnp.where(alive, n_safe * self.per_capita_rate(n_safe), 0.0)

    def birth_death(
        self, n: Float[ArrayLike, "..."]
    ) -> tuple[Float[Array, "..."], Float[Array, "..."]]:
        """Per-cell birth and death rates (1/day) whose difference is the net rate."""
        alive, n_safe = _positive(n)
        net = jnp.where(alive, self.per_capita_rate(n_safe), 0.0)
        birth = jnp.maximum(net, 0.0) + self.turnover
        death = jnp.maximum(-net, 0.0) + self.turnover
        return birth, death


class Exponential(AbstractGrowth):
    r"""Exponential growth, :math:`dn/dt = r n`.

    Attributes:
        rate_per_day: r, net growth rate (1/day); doubling time ln 2 / r.
        death_rate: intrinsic death rate d (1/day); birth rate b = r + d.
    """

    rate_per_day: Float[ArrayLike, ""]
    death_rate: Float[ArrayLike, ""] = 0.0

    def per_capita_rate(self, n):
        return jnp.broadcast_to(jnp.asarray(self.rate_per_day), jnp.shape(n))

    @property
    def turnover(self):
        return self.death_rate


class Gompertz(AbstractGrowth):
    r"""Gompertz growth, :math:`dn/dt = r n \log(K/n)`.

    Growth slows as the burden approaches the capacity K (Norton 1988 for breast cancer).

    Attributes:
        rate_per_day: r (1/day).
        capacity: K, plateau burden (cells).
        death_rate: intrinsic death rate (1/day), stochastic engines only.
    """

    rate_per_day: Float[ArrayLike, ""]
    capacity: Float[ArrayLike, ""]
    death_rate: Float[ArrayLike, ""] = 0.0

    def per_capita_rate(self, n):
        return self.rate_per_day * (jnp.log(self.capacity) - jnp.log(n))

    @property
    def turnover(self):
        return self.death_rate


class Logistic(AbstractGrowth):
    r"""Logistic growth, :math:`dn/dt = r n (1 - n/K)`.

    Attributes:
        rate_per_day: r (1/day).
        capacity: K (cells).
        death_rate: intrinsic death rate (1/day), stochastic engines only.
    """

    rate_per_day: Float[ArrayLike, ""]
    capacity: Float[ArrayLike, ""]
    death_rate: Float[ArrayLike, ""] = 0.0

    def per_capita_rate(self, n):
        return self.rate_per_day * (1.0 - n / self.capacity)

    @property
    def turnover(self):
        return self.death_rate
