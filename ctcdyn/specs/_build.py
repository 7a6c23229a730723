"""From a spec and parameter values to the dynamics' objects (units converted here, once)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import ArrayLike

from ..dynamics import (
    AbstractGrowth,
    Circadian,
    CTCModel,
    Exponential,
    Gompertz,
    Logistic,
    TreatmentKind,
    Treatments,
)
from ._spec import EFFECT_PARAMETER, ModelSpec

_KIND_CODES = {
    "cytotoxic": TreatmentKind.CYTOTOXIC,
    "shedding_inhibitor": TreatmentKind.SHEDDING_INHIBITOR,
    "cluster_dissociation": TreatmentKind.CLUSTER_DISSOCIATION,
}


def internal_values(spec: ModelSpec, values: Mapping[str, ArrayLike]) -> dict[str, jnp.ndarray]:
    """Every declared parameter in internal units (days, cells).

    ``values`` gives the sampled parameters in the spec's units (scalars, or arrays over
    patients); fixed parameters come from the spec. A sampled parameter missing from ``values``
    is an error.
    """
    missing = [name for name in spec.sampled if name not in values]
    if missing:
        raise ValueError(
            f"{spec.path}: values missing for sampled parameters: {', '.join(missing)}"
        )
    unknown = sorted(set(values) - set(spec.parameters))
    if unknown:
        raise ValueError(
            f"{spec.path}: values given for undeclared parameters: {', '.join(unknown)}"
        )
    out = {}
    for name, p in spec.parameters.items():
        raw = values[name] if p.level != "fixed" else p.value
        out[name] = jnp.asarray(raw) * p.to_internal
    return out


def _growth(law: str, rate, capacity, death) -> AbstractGrowth:
    if law == "exponential":
        return Exponential(rate_per_day=rate, death_rate=death)
    if law == "gompertz":
        return Gompertz(rate_per_day=rate, capacity=capacity, death_rate=death)
    return Logistic(rate_per_day=rate, capacity=capacity, death_rate=death)


def build_model(
    spec: ModelSpec, values: Mapping[str, ArrayLike], treatments: Treatments
) -> CTCModel:
    """The :class:`CTCModel` for parameter ``values`` (spec units) and ``treatments``.

    Arrays over patients in ``values`` (and a batched ``treatments``) give a batched model to
    use with ``jax.vmap``.
    """
    v = internal_values(spec, values)
    get = v.get
    zero = jnp.asarray(0.0)
    capacity = get("capacity", jnp.asarray(jnp.inf))
    return CTCModel(
        primary_growth=_growth(
            spec.primary_growth, v["growth_rate"], capacity, get("death_rate", zero)
        ),
        metastatic_growth=_growth(
            spec.metastatic_growth,
            get("metastatic_growth_rate", v["growth_rate"]),
            get("metastatic_capacity", capacity),
            get("death_rate", zero),
        ),
        shedding_single=v["shedding_single"],
        shedding_cluster=v["shedding_cluster"],
        half_life_single=v["half_life_single"],
        half_life_cluster=v["half_life_cluster"],
        cluster_size=v["cluster_size"],
        efficiency_single=v["efficiency_single"],
        efficiency_cluster=v["efficiency_cluster"],
        circadian=Circadian(amplitude=v["circadian_amplitude"], peak_hour=v["circadian_peak_hour"]),
        treatments=treatments,
        primary0=v["primary_burden0"],
        metastatic0=get("metastatic_burden0", zero),
    )


TREATMENT_COLUMNS = [
    "patient_id",
    "kind",
    "start",
    "end",
    "dose",
    "dose_interval_days",
    "dose_clock_hour",
    "residual_fraction",
]


def treatments_from_table(
    spec: ModelSpec,
    table: pd.DataFrame,
    patient_ids: Sequence[str],
    values: Mapping[str, ArrayLike],
) -> Treatments:
    """Batched :class:`Treatments` (one row per patient, in ``patient_ids`` order).

    ``table`` has the columns of ``treatments.csv`` (DESIGN.md section 9): ``kind`` is one of
    cytotoxic, shedding_inhibitor, cluster_dissociation or surgery; ``dose`` is the relative dose
    (1 = the standard dose whose effect the spec's parameter describes). Effects: cytotoxic
    kill = kill_rate * dose (decaying at resistance_rate if declared); inhibitor
    1 - (1 - inhibition) ** dose; dissociation = dissociation_rate * dose. Surgery rows give
    ``start`` (the day) and, optionally, ``residual_fraction`` (else the spec's parameter).
    """
    v = internal_values(spec, values)
    n = len(patient_ids)
    per_patient = lambda name: np.broadcast_to(np.asarray(v[name]), (n,))  # noqa: E731
    index = {pid: i for i, pid in enumerate(patient_ids)}
    drugs = table[table["kind"] != "surgery"]
    width = max(1, int(drugs.groupby("patient_id").size().max()) if len(drugs) else 1)
    arrays = {
        f: np.zeros((n, width)) for f in ("start", "end", "effect", "resistance", "tau", "hour")
    }
    arrays["half_life"] = np.ones((n, width))
    kind = np.zeros((n, width), dtype=np.int32)
    surgery_time = np.full(n, np.inf)
    residual = np.ones(n)
    slot = np.zeros(n, dtype=int)
    for row in table.itertuples(index=False):
        i = index[row.patient_id]
        if row.kind == "surgery":
            surgery_time[i] = row.start
            given = getattr(row, "residual_fraction", np.nan)
            residual[i] = given if pd.notna(given) else per_patient("residual_fraction")[i]
            continue
        j = slot[i]
        slot[i] += 1
        dose = 1.0 if pd.isna(row.dose) else float(row.dose)
        effect = per_patient(EFFECT_PARAMETER[row.kind])[i]
        if row.kind == "cytotoxic":
            arrays["effect"][i, j] = effect * dose
            if "resistance_rate" in v:
                arrays["resistance"][i, j] = per_patient("resistance_rate")[i]
        elif row.kind == "shedding_inhibitor":
            arrays["effect"][i, j] = 1.0 - (1.0 - effect) ** dose
        else:
            arrays["effect"][i, j] = effect * dose
        kind[i, j] = int(_KIND_CODES[row.kind])
        arrays["start"][i, j], arrays["end"][i, j] = row.start, row.end
        interval = getattr(row, "dose_interval_days", 0.0)
        arrays["tau"][i, j] = 0.0 if pd.isna(interval) else interval
        hour = getattr(row, "dose_clock_hour", 9.0)
        arrays["hour"][i, j] = 9.0 if pd.isna(hour) else hour
        if arrays["tau"][i, j] > 0:
            arrays["half_life"][i, j] = per_patient("drug_half_life")[i]
    return Treatments(
        kind=jnp.asarray(kind),
        start=jnp.asarray(arrays["start"]),
        end=jnp.asarray(arrays["end"]),
        effect=jnp.asarray(arrays["effect"]),
        resistance=jnp.asarray(arrays["resistance"]),
        dose_interval=jnp.asarray(arrays["tau"]),
        dose_hour=jnp.asarray(arrays["hour"]),
        drug_half_life=jnp.asarray(arrays["half_life"]),
        surgery_time=jnp.asarray(surgery_time),
        residual_fraction=jnp.asarray(residual),
    )
