"""Simulate cohorts from the joint model with known parameters (for recovery checks).

Trajectory (marker measured every ``visit_interval`` until the event or censoring):

    m_i(t) = beta_0 + beta_t t + beta_x x_i + b_0i + b_1i t,   x_i ~ Bernoulli(1/2),
    (b_0i, b_1i) ~ N(0, Sigma),
    y_ij ~ N(m_i(t_ij), sigma^2) | Poisson(exp m_i(t_ij)) | NegBin(mean exp m_i(t_ij), phi)

Hazard (Weibull baseline, current value and optionally slope):

    h_i(t) = shape t^(shape - 1) exp(intercept + gamma x_i + alpha m_i(t)
                                       + alpha_slope (beta_t + b_1i))

Event times are drawn by inverting the cumulative hazard on a fine grid (trapezoid rule,
``grid`` points up to ``follow_up``); censoring is uniform on (0, follow_up) and
administrative at ``follow_up``.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pandas as pd
from jaxtyping import PRNGKeyArray


@dataclasses.dataclass(frozen=True)
class JointTruth:
    """Parameters of :func:`simulate_joint` (time in the cohort's own unit)."""

    beta: tuple[float, float, float] = (1.0, 0.2, -0.5)  # intercept, time, x
    b_sd: tuple[float, float] = (1.0, 0.2)
    b_corr: float = 0.3
    sigma: float = 0.35
    gamma: float = -0.3
    alpha: float = 0.8
    alpha_slope: float = 0.0
    weibull_shape: float = 1.3
    weibull_intercept: float = -3.5
    family: str = "gaussian"  # or "poisson", "negbin" (log link)
    phi: float = 5.0  # negative-binomial concentration


def simulate_joint(
    key: PRNGKeyArray,
    truth: JointTruth,
    n_patients: int,
    *,
    follow_up: float = 10.0,
    visit_interval: float = 1.0,
    grid: int = 4000,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Draw a cohort: (draws, patients) tables in the formats the joint fit reads.

    Args:
        key: PRNG key.
        truth: the parameters.
        n_patients: cohort size.
        follow_up: end of the study (administrative censoring), time unit of the cohort.
        visit_interval: time between measurements (the first at time 0).
        grid: points of the cumulative-hazard grid used to invert it.

    Returns:
        ``draws`` (patient_id, time, y, x) and ``patients`` (patient_id, x, event_time,
        event).
    """
    seed = np.asarray(jax.random.randint(key, (4,), 0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    n = n_patients
    sd = np.asarray(truth.b_sd)
    corr = np.array([[1.0, truth.b_corr], [truth.b_corr, 1.0]])
    b = rng.multivariate_normal(np.zeros(2), corr * np.outer(sd, sd), size=n)
    x = rng.integers(0, 2, size=n).astype(float)
    b0, bt, bx = truth.beta
    level = b0 + bx * x + b[:, 0]
    slope = bt + b[:, 1]
    t = np.linspace(0.0, follow_up, grid)
    k, lam = truth.weibull_shape, truth.weibull_intercept
    log_h = (
        np.log(k)
        + (k - 1.0) * np.log(np.maximum(t, 1e-12))[None]
        + lam
        + truth.gamma * x[:, None]
        + truth.alpha * (level[:, None] + slope[:, None] * t[None])
        + truth.alpha_slope * slope[:, None]
    )
    h = np.exp(log_h)
    cum = np.concatenate(
        [np.zeros((n, 1)), np.cumsum(0.5 * (h[:, 1:] + h[:, :-1]) * np.diff(t), axis=1)], axis=1
    )
    target = rng.exponential(size=n)
    event_time = np.array(
        [np.interp(e, c, t) if e < c[-1] else np.inf for e, c in zip(target, cum, strict=True)]
    )
    censor = rng.uniform(0.0, follow_up, size=n)
    end = np.minimum(np.minimum(event_time, censor), follow_up)
    event = (event_time <= np.minimum(censor, follow_up)).astype(int)
    end = np.maximum(end, 1e-3 * visit_interval)
    ids = [f"S{i:04d}" for i in range(n)]
    rows = []
    for i in range(n):
        times = np.arange(0.0, end[i], visit_interval)
        m = level[i] + slope[i] * times
        if truth.family == "gaussian":
            y = m + truth.sigma * rng.standard_normal(times.size)
        elif truth.family == "poisson":
            y = rng.poisson(np.exp(m)).astype(float)
        else:  # gamma-Poisson mixture with mean exp(m) and concentration phi
            y = rng.poisson(rng.gamma(truth.phi, np.exp(m) / truth.phi)).astype(float)
        rows.append(pd.DataFrame({"patient_id": ids[i], "time": times, "y": y, "x": x[i]}))
    draws = pd.concat(rows, ignore_index=True)
    patients = pd.DataFrame({"patient_id": ids, "x": x, "event_time": end, "event": event})
    return draws, patients
