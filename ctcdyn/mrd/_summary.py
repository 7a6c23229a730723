"""Summaries of simulated lead times, each with its Monte-Carlo standard error.

- A proportion p from n patients: SE = sqrt(p (1 - p) / n).
- A mean: SE = sd / sqrt(n).
- A quantile q from n values: distribution-free, from the order statistics that bound the
  95% confidence interval of the quantile (ranks n q -+ 1.96 sqrt(n q (1 - q))), as
  SE = (upper - lower) / (2 x 1.96); NaN when n < 10.
- A rate per patient-year with equal follow-up: the mean count per patient / years, with the
  SE of that mean.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from ._schedule import MonitoringSchedule

_Z = 1.959963984540054


def proportion(hits: np.ndarray) -> tuple[float, float]:
    """Estimate and SE of P(hit) from boolean outcomes (NaN, NaN when empty)."""
    n = hits.size
    if n == 0:
        return math.nan, math.nan
    p = float(np.mean(hits))
    return p, math.sqrt(p * (1.0 - p) / n)


def mean(x: np.ndarray) -> tuple[float, float]:
    """Estimate and SE of a mean (NaN, NaN when empty)."""
    n = x.size
    if n == 0:
        return math.nan, math.nan
    se = float(np.std(x, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return float(np.mean(x)), se


def quantile(x: np.ndarray, q: float) -> tuple[float, float]:
    """Estimate and distribution-free SE of the q-quantile (see the module docstring)."""
    n = x.size
    if n == 0:
        return math.nan, math.nan
    x = np.sort(x)
    estimate = float(np.quantile(x, q))
    if n < 10:
        return estimate, math.nan
    half = _Z * math.sqrt(n * q * (1.0 - q))
    lo = int(np.clip(math.floor(n * q - half), 0, n - 1))
    hi = int(np.clip(math.ceil(n * q + half), 0, n - 1))
    return estimate, float(x[hi] - x[lo]) / (2.0 * _Z)


def summarise(ds: xr.Dataset, schedule: MonitoringSchedule, days_per_year: float) -> dict:
    """The row of :meth:`LeadTimeResult.summary` for one schedule's per-patient outcomes."""
    relapse = ~np.isnan(ds["relapse_day"].values)
    cured = ds["cured"].values.astype(bool)
    lead = ds["lead_days"].values[relapse]
    true_lead = ds["true_lead_days"].values[relapse]
    detected = ~np.isnan(lead)
    detected_true = ~np.isnan(true_lead)
    years = schedule.horizon_days / days_per_year
    row: dict[str, float | int] = {}

    def put(name: str, value: tuple[float, float]) -> None:
        row[name], row[f"{name}_se"] = value

    put("p_relapse", proportion(relapse))
    put("p_detect_before_imaging", proportion(detected))
    put("p_missed", proportion(~detected))
    put("p_detect_true", proportion(detected_true))
    put("median_lead_days", quantile(lead[detected], 0.5))
    put("q25_lead_days", quantile(lead[detected], 0.25))
    put("q75_lead_days", quantile(lead[detected], 0.75))
    put("mean_lead_days", mean(lead[detected]))
    put("median_true_lead_days", quantile(true_lead[detected_true], 0.5))
    positives = ds["n_positive"].values
    fp, fp_se = mean(positives[cured].astype(float))
    row["false_positives_per_year"], row["false_positives_per_year_se"] = fp / years, fp_se / years
    quiet, quiet_se = mean(positives[~relapse].astype(float))
    row["positives_per_year_no_relapse"] = quiet / years
    row["positives_per_year_no_relapse_se"] = quiet_se / years
    row["n_patients"] = int(relapse.size)
    row["n_relapsed"] = int(relapse.sum())
    row["n_cured"] = int(cured.sum())
    return row
