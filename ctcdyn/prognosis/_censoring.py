"""Kaplan–Meier estimates of the event-free and the censoring distribution.

With d_j events, c_j censorings and n_j patients at risk (time >= t_j) at the distinct observed
times t_1 < t_2 < ...:

    S(t) = prod_{t_j <= t} (1 - d_j / n_j)                 (event-free survival)
    G(t) = prod_{t_j <= t} (1 - c_j / (n_j - d_j))         (censoring survival, P(C > t))

Ties: at a time with both events and censorings, the events come first (a patient censored at
t_j was at risk of the event at t_j), so censorings at t_j see n_j - d_j at risk. Both are
right-continuous step functions: ``km(t)`` is the value *at* t, including the step at t;
``km.left(t)`` is the left limit S(t-), excluding it. These are the conventions of
scikit-survival's ``kaplan_meier_estimator(..., reverse=True)`` and
``CensoringDistributionEstimator``, whose inverse-probability-of-censoring weights use G(T_i)
(not G(T_i-)); ctcdyn's metrics use the same so that their results agree.

Beyond the last observed time the estimate is undefined unless it has reached 0: evaluating there
raises, unless the estimate is built with ``plateau=True`` (then it stays at its last value, the
usual convention for a prediction).

Kaplan & Meier (1958), J Am Stat Assoc 53:457-481; for G, the "reverse" Kaplan–Meier of
Schemper & Smith (1996), Control Clin Trials 17:343-346.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import numpy.typing as npt

from ._outcomes import Outcomes, as_outcomes


@dataclasses.dataclass(frozen=True)
class KaplanMeier:
    """A Kaplan–Meier step function (see the module docs for the formulas and conventions).

    Attributes:
        times: shape (k,); the distinct observed times, days, increasing.
        values: shape (k,); the estimate at each of ``times`` (after its step).
        plateau: evaluate beyond ``times[-1]`` as ``values[-1]`` instead of raising.
        what: "survival" or "censoring", named in error messages.
    """

    times: np.ndarray
    values: np.ndarray
    plateau: bool = False
    what: str = "survival"

    def __post_init__(self) -> None:
        if self.times.shape != self.values.shape or self.times.ndim != 1:
            raise ValueError("KaplanMeier needs 1-D times and values of equal length")
        if self.times.size and not np.all(np.diff(self.times) > 0):
            raise ValueError("KaplanMeier times must be strictly increasing")

    def __call__(self, t: npt.ArrayLike) -> np.ndarray:
        """The estimate at ``t`` (days), including any step at ``t``; 1 before the first time."""
        return self._at(t, side="right")

    def left(self, t: npt.ArrayLike) -> np.ndarray:
        """The left limit at ``t`` (days), excluding any step at ``t``."""
        return self._at(t, side="left")

    def _at(self, t: npt.ArrayLike, side: Literal["left", "right"]) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        if np.isnan(t).any():
            raise ValueError(f"{self.what} estimate evaluated at NaN time")
        beyond = t > self.times[-1]
        if beyond.any() and not self.plateau and self.values[-1] > 0:
            raise ValueError(
                f"the Kaplan-Meier {self.what} estimate is undefined after the last observed "
                f"time {self.times[-1]:g} (it is {self.values[-1]:.3g} there, not 0); got "
                f"{float(t[beyond].max()):g}. Use times within the follow-up of the data it "
                "was estimated from"
            )
        idx = np.searchsorted(self.times, t, side=side) - 1
        return np.where(idx >= 0, self.values[np.maximum(idx, 0)], 1.0)


def kaplan_meier(
    outcomes: Outcomes | tuple[npt.ArrayLike, npt.ArrayLike],
    *,
    reverse: bool = False,
    plateau: bool = False,
) -> KaplanMeier:
    """Kaplan–Meier estimate of S(t) = P(T > t), or of G(t) = P(C > t) with ``reverse=True``.

    Args:
        outcomes: observed times (days) and event flags, as :class:`Outcomes` or a pair.
        reverse: estimate the censoring distribution G (censorings are the "events"; events at
            a tied time leave the risk set before the censorings).
        plateau: carry the last value forward beyond the last observed time.

    Returns:
        The step function, evaluated with ``km(t)`` (right-continuous) or ``km.left(t)``.
    """
    out = as_outcomes(outcomes, "outcomes")
    times, inverse = np.unique(out.time, return_inverse=True)
    total = np.bincount(inverse, minlength=times.size)
    events = np.bincount(inverse, weights=out.event, minlength=times.size)
    at_risk = len(out) - np.concatenate(([0], np.cumsum(total)[:-1]))
    if reverse:
        steps, at_risk = total - events, at_risk - events
    else:
        steps = events
    with np.errstate(invalid="ignore", divide="ignore"):
        hazard = np.where(steps > 0, steps / at_risk, 0.0)
    return KaplanMeier(
        times=times,
        values=np.cumprod(1.0 - hazard),
        plateau=plateau,
        what="censoring" if reverse else "survival",
    )


def censoring_distribution(
    train: Outcomes | tuple[npt.ArrayLike, npt.ArrayLike],
) -> KaplanMeier:
    """The reverse Kaplan–Meier G(t) = P(C > t) of a training set, as the metrics weight by."""
    return kaplan_meier(train, reverse=True)
