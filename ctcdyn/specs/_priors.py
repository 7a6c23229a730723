"""Prior distributions as written in model specs.

A prior is declared in TOML as an inline table, e.g.
``prior = { distribution = "lognormal", median = 0.004, sd_log = 0.7 }``. Each prior knows its
support (checked against the parameter's domain when a spec is read), how to rescale itself when
the spec's unit differs from the internal one, its typical value (the median) and the NumPyro
distribution it stands for.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpyro.distributions as dist
from scipy import stats


@dataclasses.dataclass(frozen=True)
class Prior:
    """Base class: concrete priors are frozen dataclasses of their (named) parameters."""

    name: ClassVar[str]
    #: names of the fields that scale with the parameter's unit (e.g. a median, not a sd_log).
    scale_fields: ClassVar[tuple[str, ...]] = ()

    def support(self) -> tuple[float, float]:
        """Closed interval (low, high) that holds all the prior's mass."""
        raise NotImplementedError

    def to_numpyro(self) -> dist.Distribution:
        raise NotImplementedError

    def scipy(self):
        """The same distribution in scipy.stats (quantiles, sampling in plain NumPy)."""
        raise NotImplementedError

    def median(self) -> float:
        return float(self.scipy().median())

    def quantile(self, q: float) -> float:
        return float(self.scipy().ppf(q))

    def scaled(self, factor: float) -> Prior:
        """The prior of ``factor * x`` when x has this prior (factor > 0)."""
        changes = {f: getattr(self, f) * factor for f in self.scale_fields}
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        args = ", ".join(f"{f.name}={getattr(self, f.name):g}" for f in dataclasses.fields(self))
        return f"{self.name}({args})"


@dataclasses.dataclass(frozen=True)
class LogNormal(Prior):
    """log x ~ Normal(log median, sd_log)."""

    median_: float
    sd_log: float
    name: ClassVar[str] = "lognormal"
    scale_fields: ClassVar[tuple[str, ...]] = ("median_",)

    def support(self):
        return (0.0, math.inf)

    def to_numpyro(self):
        return dist.LogNormal(math.log(self.median_), self.sd_log)

    def scipy(self):
        return stats.lognorm(s=self.sd_log, scale=self.median_)

    def describe(self):
        return f"lognormal(median={self.median_:g}, sd_log={self.sd_log:g})"


@dataclasses.dataclass(frozen=True)
class Normal(Prior):
    mean: float
    sd: float
    name: ClassVar[str] = "normal"
    scale_fields: ClassVar[tuple[str, ...]] = ("mean", "sd")

    def support(self):
        return (-math.inf, math.inf)

    def to_numpyro(self):
        return dist.Normal(self.mean, self.sd)

    def scipy(self):
        return stats.norm(self.mean, self.sd)


@dataclasses.dataclass(frozen=True)
class HalfNormal(Prior):
    sd: float
    name: ClassVar[str] = "halfnormal"
    scale_fields: ClassVar[tuple[str, ...]] = ("sd",)

    def support(self):
        return (0.0, math.inf)

    def to_numpyro(self):
        return dist.HalfNormal(self.sd)

    def scipy(self):
        return stats.halfnorm(scale=self.sd)


@dataclasses.dataclass(frozen=True)
class Gamma(Prior):
    shape: float
    rate: float
    name: ClassVar[str] = "gamma"

    def support(self):
        return (0.0, math.inf)

    def scaled(self, factor):
        return dataclasses.replace(self, rate=self.rate / factor)

    def to_numpyro(self):
        return dist.Gamma(self.shape, self.rate)

    def scipy(self):
        return stats.gamma(self.shape, scale=1.0 / self.rate)


@dataclasses.dataclass(frozen=True)
class Beta(Prior):
    a: float
    b: float
    name: ClassVar[str] = "beta"

    def support(self):
        return (0.0, 1.0)

    def scaled(self, factor):
        if factor != 1.0:
            raise ValueError("a beta prior is dimensionless and cannot change unit")
        return self

    def to_numpyro(self):
        return dist.Beta(self.a, self.b)

    def scipy(self):
        return stats.beta(self.a, self.b)


@dataclasses.dataclass(frozen=True)
class Uniform(Prior):
    low: float
    high: float
    name: ClassVar[str] = "uniform"
    scale_fields: ClassVar[tuple[str, ...]] = ("low", "high")

    def support(self):
        return (self.low, self.high)

    def to_numpyro(self):
        return dist.Uniform(self.low, self.high)

    def scipy(self):
        return stats.uniform(self.low, self.high - self.low)


#: Distribution name in a spec -> (class, {TOML key: field name}).
PRIORS: dict[str, tuple[type[Prior], dict[str, str]]] = {
    "lognormal": (LogNormal, {"median": "median_", "sd_log": "sd_log"}),
    "normal": (Normal, {"mean": "mean", "sd": "sd"}),
    "halfnormal": (HalfNormal, {"sd": "sd"}),
    "gamma": (Gamma, {"shape": "shape", "rate": "rate"}),
    "beta": (Beta, {"a": "a", "b": "b"}),
    "uniform": (Uniform, {"low": "low", "high": "high"}),
}
