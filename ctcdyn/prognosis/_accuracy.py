"""Accuracy of survival predictions on held-out patients, with inverse-probability-of-censoring
weights (IPCW).

Notation: test patient i has observed time T_i (days), event flag delta_i and, at horizon t, a
risk score r_i(t) (higher = earlier event expected) or a predicted event-free probability
S_i(t). G is the Kaplan–Meier estimate of the censoring distribution P(C > t) from the training
patients (:func:`censoring_distribution`; conventions for ties and G(t) vs G(t-) there).

- Cumulative/dynamic AUC (Uno et al. 2007; Hung & Chiang 2010): cases are delta_i = 1,
  T_i <= t, weighted by 1 / G(T_i); controls are T_j > t (all weighted 1 / G(t), which cancels):

      AUC(t) = sum_ij w_i 1[T_i <= t] 1[T_j > t] (1[r_i > r_j] + 1/2 1[r_i = r_j])
               / (sum_i w_i 1[T_i <= t] * sum_j 1[T_j > t]),       w_i = delta_i / G(T_i).

  Over several horizons t_1 < ... < t_k, the mean AUC weights each AUC(t_m) by the drop of the
  test set's Kaplan–Meier S over (t_{m-1}, t_m] (t_0: S = 1), divided by 1 - S(t_k)
  (Lambert & Chevret 2016).
- Brier score (Graf et al. 1999):

      BS(t) = 1/n sum_i [ S_i(t)^2 delta_i 1[T_i <= t] / G(T_i)
                          + (1 - S_i(t))^2 1[T_i > t] / G(t) ],

  and the integrated Brier score IBS = (trapezoidal integral of BS over [t_1, t_k]) / (t_k - t_1).
- Uno's C (Uno et al. 2011), truncated at tau: over pairs where i has an event at T_i < tau and
  T_j > T_i (or T_j = T_i with j censored),

      C = sum_ij delta_i G(T_i)^-2 (1[r_i > r_j] + 1/2 1[r_i = r_j]) / sum_ij delta_i G(T_i)^-2.

Risk scores closer than ``tied_tol`` count as tied: in the AUC, chains of sorted scores each
within ``tied_tol`` of the next form one tied group; in Uno's C, a pair is tied when its two
scores differ by at most ``tied_tol``. These definitions and conventions are those of
scikit-survival 0.23+ (``cumulative_dynamic_auc``, ``brier_score``, ``integrated_brier_score``,
``concordance_index_ipcw``), which the tests check to ~1e-12. Deliberate differences: horizons
must be given strictly increasing (scikit-survival sorts them silently); G is evaluated only where
a weight is used, and where it is 0 (every training patient still followed was censored) an error
is raised instead of dropping those patients.

G(T_i) or G(T_i-): a censoring tied with an event at T_i counts in G(T_i) (scikit-survival's
choice, the default here) but not in the left limit G(T_i-), the weight of Gerds & Schumacher
2006 and the default of R's pec and riskRegression (``ipcw(..., lag = 1)``). They differ only
where censorings and events share a time (rounded days). With ``left_limit=True`` the IPCW
sums reproduce the Kaplan–Meier exactly: sum_i delta_i 1[T_i <= t] / (n G(T_i-)) = 1 - S(t),
so predicting the Kaplan–Meier S(t) for everyone scores BS(t) = S(t)(1 - S(t)) exactly, ties
or not; with G(T_i) and tied times it does not (prefer ``left_limit=True`` there).

References:
    Uno, Cai, Tian & Wei (2007). Evaluating prediction rules for t-year survivors with censored
    regression models. J Am Stat Assoc 102:527-537.
    Hung & Chiang (2010). Estimation methods for time-dependent AUC models with survival data.
    Can J Stat 38:8-26.
    Lambert & Chevret (2016). Summary measure of discrimination in survival models based on
    cumulative/dynamic time-dependent ROC curves. Stat Methods Med Res 25:2088-2102.
    Graf, Schmoor, Sauerbrei & Schumacher (1999). Assessment and comparison of prognostic
    classification schemes for survival data. Stat Med 18:2529-2545.
    Gerds & Schumacher (2006). Consistent estimation of the expected Brier score in general
    survival models with right-censored event times. Biom J 48:1029-1040.
    Uno, Cai, Pencina, D'Agostino & Wei (2011). On the C-statistics for evaluating overall
    adequacy of risk prediction procedures with censored survival data. Stat Med 30:1105-1117.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from ._censoring import KaplanMeier, censoring_distribution, kaplan_meier
from ._outcomes import Outcomes, as_outcomes

#: Pairs of Uno's C compared at once (bounds the memory of the pairwise comparison).
_PAIR_BLOCK = 4_000_000

OutcomesLike = Outcomes | tuple[npt.ArrayLike, npt.ArrayLike]


@dataclasses.dataclass(frozen=True)
class DynamicAUC:
    """Result of :func:`cumulative_dynamic_auc`.

    Attributes:
        times: shape (k,); the horizons, days.
        auc: shape (k,); AUC(t) at each horizon (NaN where no test patient is a case yet).
        mean_auc: the survival-weighted mean over the horizons (AUC(t_1) when k = 1).
    """

    times: np.ndarray
    auc: np.ndarray
    mean_auc: float


def cumulative_dynamic_auc(
    train: OutcomesLike,
    test: OutcomesLike,
    risk: npt.ArrayLike,
    times: npt.ArrayLike,
    *,
    tied_tol: float = 1e-8,
    left_limit: bool = False,
) -> DynamicAUC:
    """Cumulative/dynamic time-dependent AUC with IPCW (module docs give the formula).

    Args:
        train: training patients' outcomes; only their censoring distribution G is used.
        test: held-out patients' outcomes, shape (n,).
        risk: risk scores of the test patients, higher = earlier event: shape (n,) (the same
            score at every horizon) or (n, k) (one column per horizon, e.g. 1 - S_i(t)).
        times: horizons, days, strictly increasing, within [min, max) of the test times.
        tied_tol: scores within this distance of each other are tied (half credit).
        left_limit: weight events by 1 / G(T_i-) instead of 1 / G(T_i) (module docs).

    Returns:
        The AUC at each horizon and their mean.

    Raises:
        ValueError: mismatched shapes, NaN scores, horizons outside the test follow-up or not
            increasing, or G is 0 or undefined at a case's time.
    """
    train, test = as_outcomes(train, "train"), as_outcomes(test, "test")
    t = _check_times(times, test)
    r = _scores(risk, len(test), t.size, "risk")
    n, k = r.shape
    is_case = (test.time[:, None] <= t) & test.event[:, None]
    is_control = test.time[:, None] > t
    w = (
        is_case
        * _event_weights(censoring_distribution(train), test, test.time <= t[-1], left_limit)[
            :, None
        ]
    )

    # Rank the scores of each horizon into tied groups 0, 1, ... (ascending), then count per
    # group the case weight and the controls; a case beats the controls of lower groups.
    order = np.argsort(r, axis=0, kind="stable")
    sorted_r = np.take_along_axis(r, order, axis=0)
    rank_sorted = np.concatenate(
        (np.zeros((1, k), dtype=int), np.cumsum(np.diff(sorted_r, axis=0) > tied_tol, axis=0))
    )
    rank = np.empty_like(rank_sorted)
    np.put_along_axis(rank, order, rank_sorted, axis=0)
    bins = (rank + n * np.arange(k)).T.ravel()
    case_w = np.bincount(bins, weights=w.T.ravel(), minlength=n * k).reshape(k, n)
    controls = np.bincount(bins, weights=is_control.T.ravel(), minlength=n * k).reshape(k, n)
    below = np.cumsum(controls, axis=1) - controls
    numerator = (case_w * (below + 0.5 * controls)).sum(axis=1)
    denominator = case_w.sum(axis=1) * controls.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = np.where(denominator > 0, numerator / denominator, np.nan)

    if k == 1:
        mean = float(auc[0])
    else:
        s = kaplan_meier(test)(t)
        drop = -np.diff(np.concatenate(([1.0], s)))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = float((auc * drop).sum() / (1.0 - s[-1]))
    return DynamicAUC(times=t, auc=auc, mean_auc=mean)


def brier_score(
    train: OutcomesLike,
    test: OutcomesLike,
    survival: npt.ArrayLike,
    times: npt.ArrayLike,
    *,
    left_limit: bool = False,
) -> np.ndarray:
    """Time-dependent Brier score with IPCW (Graf et al. 1999; module docs give the formula).

    Args:
        train: training patients' outcomes; only their censoring distribution G is used.
        test: held-out patients' outcomes, shape (n,).
        survival: predicted event-free probability S_i(t) of each test patient at each horizon,
            shape (n, k) (or (n,) for a single horizon), in [0, 1].
        times: horizons, days, strictly increasing, within [min, max) of the test times.
        left_limit: weight events by 1 / G(T_i-) instead of 1 / G(T_i) (module docs).

    Returns:
        Shape (k,); the Brier score at each horizon (0 is perfect; 0.25 is the score of a
        constant 0.5).

    Raises:
        ValueError: mismatched shapes, probabilities outside [0, 1] or NaN, horizons outside
            the test follow-up or not increasing, or G is 0 or undefined where it is needed.
    """
    train, test = as_outcomes(train, "train"), as_outcomes(test, "test")
    t = _check_times(times, test)
    s = _scores(survival, len(test), t.size, "survival", broadcast=False)
    if np.any((s < 0) | (s > 1)):
        raise ValueError("survival must hold probabilities in [0, 1]")
    g = censoring_distribution(train)
    g_t = g(t)
    if np.any(g_t == 0):
        raise ValueError(
            f"the training censoring distribution is 0 at horizon {t[g_t == 0][0]:g}: the "
            "Brier score's weights are undefined there; use earlier horizons"
        )
    is_case = (test.time[:, None] <= t) & test.event[:, None]
    is_control = test.time[:, None] > t
    w = _event_weights(g, test, test.time <= t[-1], left_limit)[:, None]
    return np.mean(s**2 * is_case * w + (1.0 - s) ** 2 * is_control / g_t, axis=0)


def integrated_brier_score(
    train: OutcomesLike,
    test: OutcomesLike,
    survival: npt.ArrayLike,
    times: npt.ArrayLike,
    *,
    left_limit: bool = False,
) -> float:
    """Integrated Brier score: the trapezoidal mean of :func:`brier_score` over the horizons.

    Args are those of :func:`brier_score`; at least two horizons are needed. Use a fine grid:
    the trapezoidal rule on a coarse one is only an approximation of the integral.
    """
    t = np.asarray(times, dtype=float)
    if t.ndim != 1 or t.size < 2:
        raise ValueError(
            f"integrated_brier_score needs at least two horizons, got {t.size}; give a grid"
        )
    bs = brier_score(train, test, survival, t, left_limit=left_limit)
    return float(np.trapezoid(bs, t) / (t[-1] - t[0]))


def uno_c(
    train: OutcomesLike,
    test: OutcomesLike,
    risk: npt.ArrayLike,
    *,
    tau: float | None = None,
    tied_tol: float = 1e-8,
    left_limit: bool = False,
) -> float:
    """Uno's censoring-adjusted concordance index, truncated at ``tau`` (module docs).

    Args:
        train: training patients' outcomes; only their censoring distribution G is used.
        test: held-out patients' outcomes, shape (n,).
        risk: shape (n,); risk scores, higher = earlier event.
        tau: truncation time, days: only events before tau anchor a pair (None: all). Choose
            tau where G(tau) is still clearly above 0, e.g. the time by which most test
            patients were censored or had the event.
        tied_tol: pairs whose scores differ by at most this are tied (half credit).
        left_limit: weight events by 1 / G(T_i-) instead of 1 / G(T_i) (module docs).

    Returns:
        C in [0, 1]: 1 = perfect ranking, 0.5 = random, 0 = reversed.

    Raises:
        ValueError: mismatched shapes, NaN scores, no comparable pair, or G is 0 or undefined
            at an anchoring event's time.
    """
    train, test = as_outcomes(train, "train"), as_outcomes(test, "test")
    r = _scores(risk, len(test), 1, "risk")[:, 0]
    if tau is not None and not np.isfinite(tau):
        raise ValueError(f"tau must be a finite time in days or None, got {tau}")
    anchor = test.event & (test.time < (np.inf if tau is None else tau))
    idx = np.flatnonzero(anchor)
    w = _event_weights(censoring_distribution(train), test, anchor, left_limit)[idx] ** 2

    numerator = denominator = 0.0
    block = max(1, _PAIR_BLOCK // len(test))
    for start in range(0, idx.size, block):
        i = idx[start : start + block]
        ti = test.time[i][:, None]
        comparable = (test.time > ti) | ((test.time == ti) & ~test.event)
        diff = r[i][:, None] - r
        tied = np.abs(diff) <= tied_tol
        credit = np.where(tied, 0.5, (diff > 0).astype(float))
        numerator += float(w[start : start + block] @ (comparable * credit).sum(axis=1))
        denominator += float(w[start : start + block] @ comparable.sum(axis=1))
    if denominator == 0:
        raise ValueError(
            "Uno's C has no comparable pair: no test patient has an event (before tau) with "
            "another patient followed longer"
        )
    return numerator / denominator


def _check_times(times: npt.ArrayLike, test: Outcomes) -> np.ndarray:
    t = np.atleast_1d(np.asarray(times, dtype=float))
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"times must be a 1-D array of horizons in days, got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError("times must be finite")
    if not np.all(np.diff(t) > 0):
        raise ValueError("times must be strictly increasing")
    lo, hi = test.time.min(), test.time.max()
    if t[0] < lo or t[-1] >= hi:
        raise ValueError(
            f"times must lie within the follow-up of the test patients, [{lo:g}, {hi:g}) days; "
            f"got [{t[0]:g}, {t[-1]:g}]"
        )
    return t


def _scores(
    values: npt.ArrayLike, n: int, k: int, name: str, *, broadcast: bool = True
) -> np.ndarray:
    """``values`` as an (n, k) float array; a 1-D (n,) array is repeated across horizons."""
    a = np.asarray(values, dtype=float)
    if a.ndim == 1 and (broadcast or k == 1):
        a = np.broadcast_to(a[:, None], (a.shape[0], k))
    if a.shape != (n, k):
        want = f"({n},) or ({n}, {k})" if broadcast or k == 1 else f"({n}, {k})"
        raise ValueError(
            f"{name} must have shape {want} (test patients x horizons), got {np.shape(values)}"
        )
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite; it contains NaN or infinite values")
    return a


def _event_weights(
    g: KaplanMeier, test: Outcomes, where: np.ndarray, left_limit: bool
) -> np.ndarray:
    """1 / G(T_i) (or 1 / G(T_i-)) for the test events selected by ``where``; 0 elsewhere."""
    sel = test.event & where
    weights = np.zeros(len(test))
    if not sel.any():
        return weights
    g_at = g.left(test.time[sel]) if left_limit else g(test.time[sel])
    if np.any(g_at == 0):
        raise ValueError(
            "the training censoring distribution is 0 at a test event's time "
            f"({test.time[sel][g_at == 0][0]:g} days): its IPCW weight is undefined; every "
            "training patient followed that long was censored. Use earlier horizons (or tau)"
        )
    weights[sel] = 1.0 / g_at
    return weights
