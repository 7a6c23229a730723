"""Posterior predictions for one patient on a time grid: counts of a standard draw and burden.

Predictions go through the fitted :class:`~ctcdyn.inference.CountModel` (its ``expected`` and
``predict``) and the same dynamics engine, on blood draws that the report invents: one draw of
the spec's assay and volume at a fixed clock time every day (or every few days), from the
baseline to a horizon beyond the last real draw. The invented draws are laid out by
:func:`~ctcdyn.inference.fit_data`, as real ones are, so the assay's recovery, the patient's
blood volume and treatments are those of the fit.

A forecast assumes the treatments recorded in the input (a treatment ending at ``inf``
continues); it does not know about a change of therapy after the last draw.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import PRNGKeyArray

from .._units import HOURS_PER_DAY
from ..data import Tables
from ..inference import CountModel, PatientArrays, fit_data
from ..store import thinned_draws
from ._fitted import FittedRun


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Posterior predictions at ``times`` (S posterior draws, G times).

    Attributes:
        times: days from baseline, including the clock time (G,).
        volume_ml, assay: the invented draws' volume (mL) and assay.
        mean_singles: expected single-CTC count of each draw (S, G).
        singles, clusters: replicated counts (S, G), the posterior predictive.
        burden: total tumour cells P + M (S, G).
        ok: whether each posterior draw's solve succeeded (S,); failed ones are NaN.
    """

    times: np.ndarray
    volume_ml: np.ndarray
    assay: str
    mean_singles: np.ndarray
    singles: np.ndarray
    clusters: np.ndarray
    burden: np.ndarray
    ok: np.ndarray


def patient_values(fitted: FittedRun, patient_id: str, n: int) -> dict[str, np.ndarray]:
    """At most ``n`` posterior draws of every sampled parameter for one patient.

    Patient-level parameters are shaped (S, 1) (one patient), population-level ones (S,); in a
    per-patient fit the population values are the fixed ones the fit used.
    """
    post = fitted.posterior()
    spec = fitted.spec
    values: dict[str, np.ndarray] = {}
    for name in spec.sampled:
        if spec.parameters[name].level == "patient":
            values[name] = thinned_draws(post[name].sel(patient=patient_id), n)[:, None]
        elif name in post:
            values[name] = thinned_draws(post[name], n)
    size = next(iter(values.values())).shape[0]
    population = fitted.population()
    if population is not None:
        for name, value in population.values.items():
            values.setdefault(name, np.full(size, float(value)))
    return values


def draw_arrays(
    fitted: FittedRun,
    patient_id: str,
    times: np.ndarray,
    volume_ml: np.ndarray,
    assay: str,
) -> PatientArrays:
    """:class:`PatientArrays` of invented draws (no counts) for one patient at ``times``."""
    times = np.asarray(times, dtype=float)
    day = np.floor(times)
    tables = fitted.data.tables
    draws = pd.DataFrame(
        {
            "patient_id": patient_id,
            "time": times,
            "clock_hour": (times - day) * HOURS_PER_DAY,
            "volume_ml": np.broadcast_to(np.asarray(volume_ml, dtype=float), times.shape),
            "assay": assay,
            "ctc": pd.array([pd.NA] * times.size, dtype="Int64"),
            "clusters": pd.array([pd.NA] * times.size, dtype="Int64"),
            "ctc_censor": np.zeros(times.size, dtype=np.int8),
            "clusters_censor": np.zeros(times.size, dtype=np.int8),
        }
    )
    patients = tables.patients[tables.patients["patient_id"] == patient_id]
    treatments = tables.treatments
    if "patient_id" in treatments:
        treatments = treatments[treatments["patient_id"] == patient_id]
    one = Tables(
        draws=draws,
        patients=patients.reset_index(drop=True),
        treatments=treatments.reset_index(drop=True),
    )
    return fit_data(fitted.spec, one).arrays


def predict(
    fitted: FittedRun,
    patient_id: str,
    key: PRNGKeyArray,
    *,
    times: np.ndarray,
    volume_ml: float | np.ndarray,
    assay: str,
    n_samples: int = 200,
) -> Prediction:
    """Posterior predictions for ``patient_id`` at ``times`` (days, sorted, >= 0).

    Args:
        fitted: the run.
        patient_id: a patient of the run.
        key: PRNG key of the replicated counts.
        times: days from baseline; the fractional part is the clock time.
        volume_ml: blood processed per invented draw (mL).
        assay: assay of the invented draws (a registered name).
        n_samples: posterior draws used at most (evenly thinned).
    """
    fitted.patient_index(patient_id)
    times = np.asarray(times, dtype=float)
    volumes = np.broadcast_to(np.asarray(volume_ml, dtype=float), times.shape)
    arrays = jax.tree.map(jnp.asarray, draw_arrays(fitted, patient_id, times, volumes, assay))
    values = patient_values(fitted, patient_id, n_samples)
    size = next(iter(values.values())).shape[0]
    keys = jax.random.split(key, size)
    means, singles, clusters, burden, ok = _sample(
        fitted.model, arrays, {k: jnp.asarray(v) for k, v in values.items()}, keys
    )
    ok = np.asarray(ok)

    def clean(x) -> np.ndarray:
        return np.where(ok[:, None], np.asarray(x, dtype=float), np.nan)

    return Prediction(
        times=times,
        volume_ml=np.array(volumes),
        assay=assay,
        mean_singles=clean(means),
        singles=clean(singles),
        clusters=clean(clusters),
        burden=clean(burden),
        ok=ok,
    )


def forecast_times(
    first_draw: float, last_draw: float, clock_hour: float, horizon_days: float, points: int = 160
) -> np.ndarray:
    """``points`` days from 0 to the last draw's day + ``horizon_days``, each at ``clock_hour``.

    The first and last draws' days and the day 4 weeks after the last draw are always among
    them. The count is fixed (a day may repeat), so every patient's forecast has the same shape
    and reuses one compiled program.
    """
    if points < 4:
        raise ValueError(f"points must be >= 4, got {points}")
    last_day = float(np.floor(last_draw))
    end = last_day + max(horizon_days, 28.0)
    special = [float(np.floor(first_draw)), last_day, last_day + 28.0]
    days = np.sort(np.concatenate([np.round(np.linspace(0.0, end, points - 3)), special]))
    return days + clock_hour / HOURS_PER_DAY


@functools.partial(jax.jit, static_argnums=0)
def _sample(model: CountModel, arrays: PatientArrays, values, keys):
    # Posterior draws one after another (lax.map): NumPyro's count samplers compile several
    # times faster unbatched than under vmap, and 200 draws run in well under a second.
    def one(args):
        v, k = args
        means, ok = model.expected(arrays, v)
        rep = model.predict(k, arrays, v)
        traj = model.trajectory(arrays, v)
        return means.singles[0], rep.singles[0], rep.clusters[0], traj.state.burden[0], ok[0]

    return jax.lax.map(one, (values, keys))


def band(samples: np.ndarray, level: float = 0.9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower, median, upper) of the central ``level`` interval over the first axis."""
    tail = (1.0 - level) / 2.0
    lo, mid, hi = np.nanquantile(samples, [tail, 0.5, 1.0 - tail], axis=0)
    return lo, mid, hi
