"""A patient's survival curve from a fit that included the endpoints (``--outcomes``).

When the counts and the endpoints were fitted together, the posterior of the patient's dynamics
gives the burden path and :class:`~ctcdyn.observation.EndpointModel` turns it into the
probability of remaining event-free. The curve starts at what is known: the patient's last
contact (alive) and last tumour assessment without progression, or the latest draw if later,
and is conditional on being event-free then. A patient whose recorded event has already
happened gets no curve, and the report says why.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from ..observation import EndpointModel, log_burden
from ._fitted import FittedRun
from ._forecast import predict
from ._inputs import SurvivalSummary

#: Endpoint names in words, as the report prints them.
ENDPOINT_WORDS = {"pfs": "progression-free survival", "os": "overall survival"}

#: Points of the curve.
CURVE_POINTS = 121


@dataclasses.dataclass(frozen=True)
class NoSurvival:
    """Why a patient's report has no survival curve (shown in its place)."""

    reason: str


def mechanistic_survival(
    fitted: FittedRun,
    patient_id: str,
    key: PRNGKeyArray,
    *,
    horizon_days: float,
    level: float,
    n_samples: int = 200,
) -> SurvivalSummary | NoSurvival | None:
    """The patient's event-free probability over ``horizon_days``, or why there is none.

    None when the fit did not include endpoints. The endpoint is progression-free survival when
    it was fitted and has not yet ended, else overall survival.
    """
    outcomes = fitted.model.outcomes
    if not outcomes:
        return None
    patients = fitted.data.tables.patients
    row = patients[patients["patient_id"].astype(str) == str(patient_id)].iloc[0]
    endpoint = next(
        (o for o in ("pfs", "os") if o in outcomes and int(row[f"{o}_event"]) == 0), None
    )
    if endpoint is None:
        ended = [f"{ENDPOINT_WORDS[o]} ended on day {float(row[f'{o}_time']):g}" for o in outcomes]
        return NoSurvival(
            "No forward prediction: the patient's recorded events have happened ("
            + "; ".join(ended)
            + ")."
        )
    index = fitted.patient_index(patient_id)
    last_draw = float(np.asarray(fitted.data.arrays.time)[index, fitted.data.n_draws[index] - 1])
    alive_to = float(row["os_time"]) if "os" in outcomes else float(row["pfs_time"])
    free_to = float(row["pfs_last_scan"]) if endpoint == "pfs" else 0.0
    start = max(last_draw, alive_to, free_to)
    ahead = np.linspace(start, start + horizon_days, CURVE_POINTS)
    at = survival_draws(
        fitted,
        patient_id,
        key,
        endpoint=endpoint,
        times=ahead,
        alive_to=alive_to,
        progression_free_to=free_to,
        n_samples=n_samples,
    )
    lower, median, upper = np.quantile(at, [(1 - level) / 2, 0.5, (1 + level) / 2], axis=0)
    return SurvivalSummary(
        endpoint=ENDPOINT_WORDS[endpoint],
        times_days=tuple(ahead - last_draw),
        median=tuple(np.clip(median, 0, 1)),
        lower=tuple(np.clip(lower, 0, 1)),
        upper=tuple(np.clip(upper, 0, 1)),
        level=level,
        model=(
            f"mechanistic: burden of the fitted dynamics reaching the patient's "
            f"{'progression threshold or ' if endpoint == 'pfs' else ''}lethal burden, "
            f"fitted with the counts (--outcomes {','.join(outcomes)}); from day {start:g}, "
            "given event-free then"
        ),
    )


def survival_draws(
    fitted: FittedRun,
    patient_id: str,
    key: PRNGKeyArray,
    *,
    endpoint: str,
    times: np.ndarray,
    alive_to: float,
    progression_free_to: float = 0.0,
    n_samples: int = 200,
    endpoints: EndpointModel | None = None,
) -> np.ndarray:
    """P(no ``endpoint`` event by each of ``times`` | alive at ``alive_to`` and progression-free
    at ``progression_free_to``), one row per posterior draw: shape (draws, times).

    ``times`` are days from baseline, sorted. The burden path is taken on a fixed-size grid from
    baseline (one compile for every patient of a run), with the conditioning times on it.
    ``endpoints`` replaces the fit's endpoint model (to see what another one would predict).
    """
    times = np.asarray(times, dtype=float)
    grid = np.sort(
        np.concatenate(
            [np.linspace(0.0, times[-1], 4 * CURVE_POINTS), [alive_to, progression_free_to]]
        )
    )
    spec = fitted.spec
    scenario = spec.scenario("default") if spec.scenarios else None
    pred = predict(
        fitted,
        patient_id,
        key,
        times=grid,
        volume_ml=scenario.volume_ml if scenario else 7.5,
        assay=scenario.assay if scenario else "cellsearch",
        n_samples=n_samples,
    )
    log_b = log_burden(jnp.asarray(pred.burden[pred.ok]))
    endpoints = fitted.model.endpoints if endpoints is None else endpoints
    curves = endpoints.conditional_survival(
        endpoint,
        jnp.asarray(grid),
        log_b,
        progression_free_to=progression_free_to,
        alive_to=alive_to,
    )
    return np.asarray(
        jax.vmap(lambda c: jnp.interp(jnp.asarray(times), jnp.asarray(grid), c))(curves)
    )
