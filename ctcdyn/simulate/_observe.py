"""Blood tests of a simulated cohort: the observation model applied at each draw."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array, PRNGKeyArray

from ..observation import get_assay, simulate_draw
from ..specs import ModelSpec, Scenario

DRAW_COLUMNS = ["patient_id", "time", "clock_hour", "volume_ml", "assay", "ctc", "clusters"]


def observe_draws(
    spec: ModelSpec,
    plan: Scenario,
    values: Mapping[str, Array],
    key: PRNGKeyArray,
    *,
    ids: list[str],
    times: np.ndarray,
    hours: np.ndarray,
    blood_volume_ml: np.ndarray,
    singles: np.ndarray,
    clusters: np.ndarray,
) -> pd.DataFrame:
    """Counts of every draw (rows of draws.csv), with the spec's recovery and dispersion."""
    assay = get_assay(plan.assay)
    n, m = times.shape
    recovery = values.get("recovery")
    if recovery is not None:
        per_patient = jnp.broadcast_to(recovery, (n,))[:, None]
        assay = dataclasses.replace(assay, recovery=per_patient)  # type: ignore[arg-type]
    dispersion = values.get("dispersion")
    counts = simulate_draw(
        key,
        jnp.asarray(singles),
        jnp.asarray(clusters),
        assay=assay,
        volume_ml=plan.volume_ml,
        blood_volume_ml=jnp.asarray(blood_volume_ml)[:, None],
        family=spec.count_family,  # type: ignore[arg-type]
        concentration=None if dispersion is None else jnp.broadcast_to(dispersion, (n,))[:, None],
    )
    return pd.DataFrame(
        {
            "patient_id": np.repeat(ids, m),
            "time": times.ravel(),
            "clock_hour": hours.ravel(),
            "volume_ml": plan.volume_ml,
            "assay": plan.assay,
            "ctc": np.asarray(jax.device_get(counts.singles)).ravel().astype(int),
            "clusters": np.asarray(jax.device_get(counts.clusters)).ravel().astype(int),
        },
        columns=DRAW_COLUMNS,
    )
