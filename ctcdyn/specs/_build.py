"""From a spec and parameter values to the dynamics' objects (units converted here, once)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array, ArrayLike, Float, Int

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

    A spec that declares ``shedding_single_per_division`` and ``shedding_cluster_per_division``
    (CTCs and clusters shed per cell division) gets shedding per cell per day = that x the
    division rate ``growth_rate + death_rate``: a fast-growing tumour sheds more.

    Arrays over patients in ``values`` (and a batched ``treatments``) give a batched model to
    use with ``jax.vmap``.
    """
    v = internal_values(spec, values)
    get = v.get
    zero = jnp.asarray(0.0)
    capacity = get("capacity", jnp.asarray(jnp.inf))
    if "shedding_single_per_division" in v:
        # CTCs per cell division x divisions per cell per day (the birth rate r + d of the
        # exponential law; one rate for every tumour cell, checked when the spec was read).
        divisions = v["growth_rate"] + get("death_rate", zero)
        shedding_single = v["shedding_single_per_division"] * divisions
        shedding_cluster = v["shedding_cluster_per_division"] * divisions
    else:
        shedding_single, shedding_cluster = v["shedding_single"], v["shedding_cluster"]
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
        shedding_single=shedding_single,
        shedding_cluster=shedding_cluster,
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


class TreatmentDesign(eqx.Module):
    """What each patient was given, independent of parameter values (a PyTree of arrays).

    Arrays have shape (patients, slots) (one slot per drug treatment, padded with kind NONE) or
    (patients,) for surgery. :meth:`treatments` turns the design and parameter values (possibly
    traced, e.g. a sampled kill rate inside a NumPyro model) into batched :class:`Treatments`,
    so simulation and fitting share one translation from table rows to effects. The design
    itself may be sliced, batched or vmapped like any PyTree.
    """

    kind: Int[ArrayLike, "patients slots"]
    start: Float[ArrayLike, "patients slots"]
    end: Float[ArrayLike, "patients slots"]
    dose: Float[ArrayLike, "patients slots"]
    dose_interval: Float[ArrayLike, "patients slots"]
    dose_hour: Float[ArrayLike, "patients slots"]
    surgery_time: Float[ArrayLike, " patients"]
    residual_fraction: Float[ArrayLike, " patients"]  # NaN: the spec's residual_fraction

    def max_doses(self) -> int:
        """Most boluses any slot gives (>= 1): the ``max_doses`` an engine needs (concrete only)."""
        tau, start, end = (np.asarray(x) for x in (self.dose_interval, self.start, self.end))
        dosed = tau > 0
        if not dosed.any():
            return 1
        span = np.where(dosed, end - start, 0.0)
        return int(np.max(np.ceil(span / np.where(dosed, tau, 1.0)))) + 1

    def missing_parameters(self, spec: ModelSpec) -> list[str]:
        """Parameters the design needs that ``spec`` does not declare (concrete designs only)."""
        kind = np.asarray(self.kind)
        needed = {
            EFFECT_PARAMETER[name] for name, code in _KIND_CODES.items() if (kind == code).any()
        }
        if (np.asarray(self.dose_interval) > 0).any():
            needed.add("drug_half_life")
        surgery = np.isfinite(np.asarray(self.surgery_time))
        if (surgery & np.isnan(np.asarray(self.residual_fraction))).any():
            needed.add("residual_fraction")
        return sorted(needed - set(spec.parameters))

    def treatments(self, spec: ModelSpec, values: Mapping[str, ArrayLike]) -> Treatments:
        """Batched :class:`Treatments` for parameter ``values`` (spec units; scalars or arrays
        over patients). Traceable: the design and the values may be JAX tracers."""
        v = internal_values(spec, values)
        kind = jnp.asarray(self.kind)
        n = kind.shape[0]

        def per_patient(name: str, default: float) -> Array:
            value = v.get(name, jnp.asarray(default))
            return jnp.broadcast_to(value, (n,))[:, None]

        dose = jnp.asarray(self.dose)
        effect = jnp.zeros(kind.shape)
        for treatment, code in _KIND_CODES.items():
            strength = per_patient(EFFECT_PARAMETER[treatment], 0.0)
            if treatment == "shedding_inhibitor":
                scaled = 1.0 - (1.0 - strength) ** dose
            else:
                scaled = strength * dose
            effect = jnp.where(kind == int(code), scaled, effect)
        cytotoxic = kind == int(TreatmentKind.CYTOTOXIC)
        dosed = jnp.asarray(self.dose_interval) > 0
        residual = jnp.asarray(self.residual_fraction)
        residual = jnp.where(
            jnp.isnan(residual), per_patient("residual_fraction", 1.0)[:, 0], residual
        )
        return Treatments(
            kind=kind,
            start=jnp.asarray(self.start),
            end=jnp.asarray(self.end),
            effect=effect,
            resistance=jnp.where(cytotoxic, per_patient("resistance_rate", 0.0), 0.0),
            dose_interval=jnp.asarray(self.dose_interval),
            dose_hour=jnp.asarray(self.dose_hour),
            drug_half_life=jnp.where(dosed, per_patient("drug_half_life", 1.0), 1.0),
            surgery_time=jnp.asarray(self.surgery_time),
            residual_fraction=residual,
        )


def treatment_design(table: pd.DataFrame, patient_ids: Sequence[str]) -> TreatmentDesign:
    """The :class:`TreatmentDesign` of a treatments table, one row per patient in ``patient_ids``.

    ``table`` has the columns of ``treatments.csv`` (DESIGN.md section 9): ``kind`` is one of
    cytotoxic, shedding_inhibitor, cluster_dissociation or surgery; ``dose`` is the relative dose
    (1 = the standard dose whose effect the spec's parameter describes; missing means 1). Surgery
    rows give ``start`` (the day) and, optionally, ``residual_fraction``.
    """
    n = len(patient_ids)
    index = {pid: i for i, pid in enumerate(patient_ids)}
    drugs = table[table["kind"] != "surgery"]
    width = max(1, int(drugs.groupby("patient_id").size().max()) if len(drugs) else 1)
    arrays = {f: np.zeros((n, width)) for f in ("start", "end", "tau")}
    arrays["dose"] = np.ones((n, width))
    arrays["hour"] = np.full((n, width), 9.0)
    kind = np.zeros((n, width), dtype=np.int32)
    surgery_time = np.full(n, np.inf)
    residual = np.ones(n)
    slot = np.zeros(n, dtype=int)
    for row in table.itertuples(index=False):
        i = index[row.patient_id]
        if row.kind == "surgery":
            surgery_time[i] = row.start
            given = getattr(row, "residual_fraction", np.nan)
            residual[i] = given if pd.notna(given) else np.nan
            continue
        j = slot[i]
        slot[i] += 1
        kind[i, j] = int(_KIND_CODES[row.kind])
        arrays["start"][i, j], arrays["end"][i, j] = row.start, row.end
        if pd.notna(row.dose):
            arrays["dose"][i, j] = float(row.dose)
        interval = getattr(row, "dose_interval_days", 0.0)
        arrays["tau"][i, j] = 0.0 if pd.isna(interval) else interval
        hour = getattr(row, "dose_clock_hour", 9.0)
        if pd.notna(hour):
            arrays["hour"][i, j] = hour
    return TreatmentDesign(
        kind=kind,
        start=arrays["start"],
        end=arrays["end"],
        dose=arrays["dose"],
        dose_interval=arrays["tau"],
        dose_hour=arrays["hour"],
        surgery_time=surgery_time,
        residual_fraction=residual,
    )


def treatments_from_table(
    spec: ModelSpec,
    table: pd.DataFrame,
    patient_ids: Sequence[str],
    values: Mapping[str, ArrayLike],
) -> Treatments:
    """Batched :class:`Treatments` (one row per patient, in ``patient_ids`` order).

    Effects: cytotoxic kill = kill_rate * dose (decaying at resistance_rate if declared);
    inhibitor 1 - (1 - inhibition) ** dose; dissociation = dissociation_rate * dose. Surgery
    without a ``residual_fraction`` uses the spec's parameter. See :func:`treatment_design`.
    """
    design = treatment_design(table, patient_ids)
    missing = design.missing_parameters(spec)
    if missing:
        raise ValueError(
            f"{spec.path}: the treatments need parameters the spec does not declare: "
            + ", ".join(missing)
        )
    return design.treatments(spec, values)
