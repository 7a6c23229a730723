"""Validated tables -> padded arrays that a NumPyro model and a vmapped sampler can use.

Patients have different numbers of draws. Each patient's draws are sorted by time and padded to
the cohort's largest count ``m``; padded entries repeat the last real time (the solver needs
non-decreasing times) and are masked out of the likelihood. One compiled model therefore serves
every patient, whatever their number of draws.

Time of a draw: the integer part of ``time`` is the day (t = 0 is midnight at the start of the
baseline day, the dynamics' origin) and ``clock_hour`` the time of day, so

    t = floor(time) + clock_hour / 24.

Simulated tables (``ctcdyn simulate``) already store ``time`` this way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Bool, Float, Int

from .._units import BLOOD_ML_PER_KG, DEFAULT_BLOOD_VOLUME_ML, HOURS_PER_DAY
from ..data import InputError, Problem, Tables
from ..observation import OUTCOMES, EndpointModel, get_assay
from ..specs import ModelSpec, TreatmentDesign, treatment_design
from ._outcomes import OutcomeArrays, outcome_arrays


class PatientArrays(eqx.Module):
    """The numbers a model needs, with a leading patient axis (a PyTree; slice or vmap it).

    Attributes:
        time: draw times t (days), (patients, draws), padded by repeating the last time.
        volume_ml: blood processed per draw (mL).
        recovery: the registry recovery of each draw's assay (used where ``sampled_recovery``
            is False).
        sampled_recovery: True where the draw's assay is the spec's assay, whose recovery is the
            spec's (possibly sampled) ``recovery`` parameter.
        cluster_recovery, background_per_ml: from the assay registry.
        ctc, clusters: observed counts (0 where missing or padded).
        ctc_mask, clusters_mask: True where a count was observed.
        ctc_censor, clusters_censor: censoring flags (0 exact, 1 ">= y", -1 "<= y").
        blood_volume_ml: the patient's blood volume (70 mL/kg of ``weight_kg``, else 5000 mL).
        design: the patient's treatments.
        outcomes: recorded death and progression (:class:`OutcomeArrays`), when the fit
            includes them (``ctcdyn fit --outcomes``); None otherwise.
    """

    time: Float[ArrayLike, "patients draws"]
    volume_ml: Float[ArrayLike, "patients draws"]
    recovery: Float[ArrayLike, "patients draws"]
    sampled_recovery: Bool[ArrayLike, "patients draws"]
    cluster_recovery: Float[ArrayLike, "patients draws"]
    background_per_ml: Float[ArrayLike, "patients draws"]
    ctc: Float[ArrayLike, "patients draws"]
    ctc_mask: Bool[ArrayLike, "patients draws"]
    ctc_censor: Int[ArrayLike, "patients draws"]
    clusters: Float[ArrayLike, "patients draws"]
    clusters_mask: Bool[ArrayLike, "patients draws"]
    clusters_censor: Int[ArrayLike, "patients draws"]
    blood_volume_ml: Float[ArrayLike, " patients"]
    design: TreatmentDesign
    outcomes: OutcomeArrays | None = None

    @property
    def n_patients(self) -> int:
        return int(jnp.shape(self.time)[0])

    def rows(self, index) -> PatientArrays:
        """A subset of patients (index array or slice), keeping the patient axis."""
        return jax.tree.map(lambda x: x[index], self)


@dataclasses.dataclass(frozen=True)
class FitData:
    """A cohort ready to fit: patient ids, the draws as padded arrays, and the source tables.

    Attributes:
        patient_ids: in the order of the arrays' patient axis.
        arrays: :class:`PatientArrays` (NumPy leaves).
        n_draws: real (unpadded) draws per patient.
        draw_rows: for each (patient, draw) the row of the input draws table, -1 for padding.
        tables: the validated input tables.
        outcomes: the clinical endpoints fitted with the counts ("os", "pfs"; none by default).
    """

    patient_ids: tuple[str, ...]
    arrays: PatientArrays
    n_draws: np.ndarray
    draw_rows: np.ndarray
    tables: Tables
    outcomes: tuple[str, ...] = ()

    @property
    def n_patients(self) -> int:
        return len(self.patient_ids)

    def max_doses(self) -> int:
        return self.arrays.design.max_doses()


def _padded(groups: list[np.ndarray], width: int, fill: float, dtype) -> np.ndarray:
    out = np.full((len(groups), width), fill, dtype=dtype)
    for i, g in enumerate(groups):
        out[i, : g.size] = g
    return out


def fit_data(
    spec: ModelSpec,
    tables: Tables,
    *,
    labels: Mapping[str, str] | None = None,
    outcomes: tuple[str, ...] = (),
) -> FitData:
    """Arrange validated ``tables`` for fitting ``spec``.

    ``outcomes`` ("os", "pfs", "relapse") adds the patients' recorded endpoints, fitted
    jointly with the counts through the spec's :class:`~ctcdyn.observation.EndpointModel`
    (their columns are listed in :mod:`ctcdyn.inference._outcomes`); the spec must define each
    of them.

    Patients come in the order of the patients table; a patient without draws is refused (there
    is nothing to fit). Raises :class:`~ctcdyn.data.InputError` for draws before the model's
    origin and for treatments whose parameters the spec lacks; ``labels`` names the files
    in its messages (``{"draws": "data/draws.csv", ...}``).
    """
    label = {"draws": "draws", "patients": "patients", "treatments": "treatments"}
    label.update(labels or {})
    draws = tables.draws
    problems: list[Problem] = []
    day = np.floor(draws["time"].to_numpy(float))
    t = day + draws["clock_hour"].to_numpy(float) / HOURS_PER_DAY
    for idx in np.flatnonzero(day < 0):
        problems.append(
            Problem(
                label["draws"],
                int(idx) + 2,
                "time",
                "must be >= 0 to fit (days from the start of the baseline day)",
                f"{draws['time'].iat[idx]:g}",
            )
        )
    ids = tuple(tables.patients["patient_id"].astype(str))
    with_draws = set(draws["patient_id"])
    for i, pid in enumerate(ids):
        if pid not in with_draws:
            problems.append(
                Problem(label["patients"], i + 2, "patient_id", "patient has no draws to fit", pid)
            )
    design = treatment_design(tables.treatments, ids)
    missing = design.missing_parameters(spec)
    if missing:
        problems.append(
            Problem(
                label["treatments"],
                None,
                "kind",
                f"the model {spec.name!r} lacks the parameters these treatments need: "
                + ", ".join(missing),
            )
        )
    endpoints = EndpointModel.from_spec(spec) if outcomes else None
    for name in outcomes:
        for rule in endpoints.fittable(name) if name in OUTCOMES else []:  # type: ignore[union-attr]
            problems.append(Problem(str(spec.path), None, None, rule))
    if problems:
        raise InputError(problems)

    frame = draws.assign(_t=t, _row=np.arange(len(draws)))
    frame = frame.sort_values(["patient_id", "_t"], kind="stable")
    grouped = dict(tuple(frame.groupby("patient_id", sort=False)))
    per = [grouped[pid] for pid in ids]
    n_draws = np.array([len(g) for g in per])
    m = int(n_draws.max())

    spec_assay = spec.scenario("default").assay if spec.scenarios else None
    registry = {name: get_assay(name) for name in frame["assay"].unique()}

    def column(values, fill, dtype=float):
        return _padded([np.asarray(v) for v in values], m, fill, dtype)

    time = column([g["_t"] for g in per], np.nan)
    time = np.where(np.isnan(time), np.nanmax(time, axis=1, keepdims=True), time)
    assay_of = [g["assay"].to_numpy() for g in per]

    def assay_field(field: str) -> np.ndarray:
        return column(
            [[float(getattr(registry[a], field)) for a in names] for names in assay_of], 1.0
        )

    def counts(name: str):
        observed = [g[name] for g in per]
        mask = column([v.notna() for v in observed], False, bool)
        values = column([v.fillna(0).to_numpy(float) for v in observed], 0.0)
        censor = column([g[f"{name}_censor"].to_numpy() for g in per], 0, np.int8)
        return values, mask, censor.astype(np.int32)

    ctc, ctc_mask, ctc_censor = counts("ctc")
    clusters, clusters_mask, clusters_censor = counts("clusters")
    patients = tables.patients.set_index("patient_id").loc[list(ids)]
    if "weight_kg" in patients:
        blood = BLOOD_ML_PER_KG * patients["weight_kg"].to_numpy(float)
    else:
        blood = np.full(len(ids), DEFAULT_BLOOD_VOLUME_ML)
    arrays = PatientArrays(
        time=time,
        volume_ml=column([g["volume_ml"] for g in per], 1.0),
        recovery=assay_field("recovery"),
        sampled_recovery=column([names == spec_assay for names in assay_of], False, bool),
        cluster_recovery=assay_field("cluster_recovery"),
        background_per_ml=assay_field("background_per_ml"),
        ctc=ctc,
        ctc_mask=ctc_mask,
        ctc_censor=ctc_censor,
        clusters=clusters,
        clusters_mask=clusters_mask,
        clusters_censor=clusters_censor,
        blood_volume_ml=blood,
        design=design,
        # the patients table's order is the arrays' order: its row numbers name the file's rows
        outcomes=outcome_arrays(tables.patients, outcomes, label["patients"]) if outcomes else None,
    )
    draw_rows = column([g["_row"] for g in per], -1, np.int64)
    return FitData(
        patient_ids=ids,
        arrays=arrays,
        n_draws=n_draws,
        draw_rows=draw_rows,
        tables=tables,
        outcomes=tuple(outcomes),
    )
