r"""MRD lead time: when does a CTC test schedule turn positive, relative to imaging relapse?

For each virtual patient after curative surgery (a spec's scenario, or posterior draws of one
patient) the residual disease is simulated with a stochastic engine of
:mod:`ctcdyn.dynamics` (:class:`~ctcdyn.Hybrid` by default: small residual populations are
branching processes, most single-cell seeds die out), on one time grid holding every draw of
every compared schedule, so all schedules see the same patients (common random numbers).

What a test sees. A draw of v mL at time t (clock hour included, so the circadian rhythm of
shedding enters through S(t)) from a circulation holding S(t) single CTCs in V mL of blood
(the engine's sample: Poisson with the periodic fast-clearance mean for the hybrid engine,
tracked cell by cell for the exact jump engine) counts

.. math::

    Y = \mathrm{Binomial}(S(t),\; \min(1, \eta v / V)) + \mathrm{Poisson}(b v),

the observation model of DESIGN.md section 4 (mean eta v/V S + b v) sampled exactly: each
circulating cell is in the tube with probability v / V and counted with probability eta; the
assay adds false positives at b per mL processed. (For a negative-binomial spec the count is
NB2 around the same mean.) A test is positive when Y >= the schedule's threshold. Clusters
are not counted (a few per cent of CTC events, cleared faster).

Endpoints, per patient:

- relapse: the metastatic burden M reaches the detection size (the spec's
  ``detection_burden``, as in ``ctcdyn.simulate``); the crossing time is interpolated
  log-linearly between saved times (exact for exponential growth once M is deterministic) and
  relapse is *found* at the next scan of the :class:`ImagingSchedule` (at once for continuous
  surveillance). Relapse found after the horizon is not a relapse within follow-up.
- first positive test: the earliest draw before the relapse is found with Y >= threshold;
  lead time = relapse day - first-positive day (defined for relapsing patients with a positive
  test before relapse).
- true-signal first positive: the same, counting only positive tests that hold at least one
  tumour-derived CTC (a simulation can tell; a laboratory cannot).
- cured: M = 0 at the horizon (the residual disease went extinct); positive tests of cured
  patients are false positives from the assay background.

Monte-Carlo standard errors of every summary are reported (:meth:`LeadTimeResult.summary`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from .._units import DEFAULT_BLOOD_VOLUME_ML
from ..dynamics import AbstractEngine, Hybrid, solve
from ..observation import sample_counts
from ..simulate import draw_parameters
from ..specs import ModelSpec, build_model, treatment_design
from ._schedule import ImagingSchedule, MonitoringSchedule, default_schedule
from ._summary import summarise

#: Patients simulated per compiled call (bounds memory: chunk x grid x 8 bytes per array).
CHUNK = 512
#: Days per year, for rates per patient-year.
DAYS_PER_YEAR = 365.25


def default_engine() -> Hybrid:
    """The engine :func:`lead_time` uses unless told otherwise.

    :class:`~ctcdyn.Hybrid` with ``threshold = 20`` cells and its branching noise: below the
    threshold every birth and death of the residual clone is simulated; on reaching it the
    clone is replaced by a draw of the limit law of its birth-death process (Kendall 1948:
    extinct with probability (d/b)^20, 0.06 for the ``adjuvant`` spec's median rates
    b = 0.115, d = 0.1 per day, else a gamma of relative sd ~sqrt(14 / 20) = 0.84), then grows
    deterministically. The law of the clone's size once large, hence of its relapse time, is
    that of the exact process for constant rates; a lower threshold is faster (about
    (b + d) / (b - d) = 14 events per cell below it) and only moves the approximation into the
    first weeks after the switch. ``tests/test_hybrid.py`` checks the size law against the
    exact engine, ``tests/test_leadtime.py`` the lead times on a small model. Deterministic
    steps of up to 30 days: Heun in log n is exact for exponential growth, relative error
    O((r h)^3) for Gompertz.
    """
    return Hybrid(threshold=20.0, max_step=30.0)


@dataclasses.dataclass(frozen=True)
class LeadTimeResult:
    """Per-patient outcomes of :func:`lead_time`, and their summaries with MC errors.

    Attributes:
        patients: xarray Dataset with dims ``patient`` and ``schedule``:
            ``crossing_day`` (burden reached detection size; NaN if not by the horizon),
            ``relapse_day`` (found by imaging within the horizon; NaN otherwise),
            ``cured`` (disease extinct at the horizon), ``first_positive_day`` and
            ``first_true_positive_day`` (before relapse; NaN if none), ``lead_days`` and
            ``true_lead_days`` (relapse - first positive), ``n_tests`` and ``n_positive``
            (tests taken before relapse or the horizon, and how many were positive).
        schedules: the monitoring schedules, in the order of the ``schedule`` coordinate.
        imaging: the imaging schedule.
        detection_cells: the detection size used (cells).
        engine: name of the dynamics engine.
    """

    patients: xr.Dataset
    schedules: tuple[MonitoringSchedule, ...]
    imaging: ImagingSchedule
    detection_cells: float
    engine: str

    @property
    def n_patients(self) -> int:
        return int(self.patients.sizes["patient"])

    def select(self, patients: slice | Sequence[int] | np.ndarray) -> LeadTimeResult:
        """The same result restricted to some patients (e.g. to check MC errors by splitting)."""
        return dataclasses.replace(self, patients=self.patients.isel(patient=patients))

    def summary(self) -> pd.DataFrame:
        """One row per schedule: estimates and their Monte-Carlo standard errors (``*_se``).

        Columns: ``p_relapse`` (relapse found within the horizon); ``p_detect_before_imaging``
        (among relapsing patients, a positive test before relapse is found) and its
        complement ``p_missed``; ``p_detect_true`` (the same counting only tests holding a
        tumour CTC); ``median_lead_days``, ``q25_lead_days``, ``q75_lead_days``,
        ``mean_lead_days`` (among detected relapses) and ``median_true_lead_days``;
        ``false_positives_per_year`` (positive tests per patient-year among cured patients:
        assay background only) and ``positives_per_year_no_relapse`` (among all patients
        without relapse, occult disease included); counts ``n_patients``, ``n_relapsed``,
        ``n_cured``.
        """
        rows = [
            summarise(self.patients.isel(schedule=j), s, DAYS_PER_YEAR)
            for j, s in enumerate(self.schedules)
        ]
        return pd.DataFrame(rows, index=pd.Index(self.labels, name="schedule"))

    def to_dataset(self) -> xr.Dataset:
        """:meth:`summary` as an xarray Dataset over the ``schedule`` dimension."""
        return xr.Dataset.from_dataframe(self.summary())

    @property
    def labels(self) -> list[str]:
        return [str(s) for s in self.patients["schedule"].values]

    def to_dict(self) -> dict:
        """JSON-ready summary: settings and per-schedule estimates with MC errors."""
        table = self.summary()
        out = []
        for schedule, (label, row) in zip(self.schedules, table.iterrows(), strict=True):
            settings = {
                "interval_days": schedule.interval_days,
                "clock_hour": schedule.clock_hour,
                "volume_ml": schedule.volume,
                "assay": schedule.assay_spec.name,
                "threshold": schedule.threshold,
                "horizon_days": schedule.horizon_days,
                "first_day": schedule.draw_days()[0] if schedule.draw_days().size else None,
            }
            values = {k: _json_number(v) for k, v in row.items()}
            out.append({"schedule": label, "settings": settings, "estimates": values})
        return {
            "n_patients": self.n_patients,
            "engine": self.engine,
            "imaging": {
                "interval_days": self.imaging.interval_days,
                "detection_cells": self.detection_cells,
            },
            "schedules": out,
        }


def _json_number(x) -> float | int | None:
    if isinstance(x, int | np.integer):
        return int(x)
    x = float(x)
    return None if math.isnan(x) else x


@functools.cache
def _solver(engine: AbstractEngine) -> Callable:
    """One compiled, patient-vmapped solve per engine: M and S on the grid, and ok."""

    def one(model, ts, key):
        traj = solve(model, ts, engine, key=key)
        return traj.metastatic, traj.singles, traj.ok

    return jax.jit(jax.vmap(one, in_axes=(0, None, 0)))


@functools.partial(jax.jit, static_argnames=("family",))
@functools.partial(jax.vmap, in_axes=(0, 0, 0, None, None, 0))
def _tube_counts(
    key: PRNGKeyArray,
    singles: Array,
    fraction: Array,
    background: Array,
    family: str,
    concentration: Array | None,
) -> tuple[Array, Array]:
    """Counts of one patient's draws at every grid time: the tumour CTCs counted, and the total
    with background (vmapped over patients, one key each).

    ``fraction`` = eta v / V (the patient's); ``background`` = b v (per draw).
    """
    k_tumour, k_background, k_nb = jax.random.split(key, 3)
    s = jnp.nan_to_num(jnp.maximum(singles, 0.0))
    p = jnp.clip(fraction, 0.0, 1.0)
    if family == "negbin":
        # NB2 around the same mean; the tumour share of a count is split off binomially.
        total = sample_counts(
            k_nb, p * s + background, family="negbin", concentration=concentration
        ).astype(s.dtype)
        share = p * s / jnp.maximum(p * s + background, 1e-300)
        return jax.random.binomial(k_tumour, total, share).astype(s.dtype), total
    tumour = jax.random.binomial(k_tumour, s, jnp.broadcast_to(p, s.shape)).astype(s.dtype)
    noise = jax.random.poisson(k_background, jnp.broadcast_to(background, s.shape))
    return tumour, tumour + noise.astype(s.dtype)


def _broadcast(tree, n: int):
    """Every leaf with a leading patient axis of length n."""
    return jax.tree.map(
        lambda x: (
            jnp.broadcast_to(x, (n, *jnp.shape(x)[1:]))
            if jnp.ndim(x) and jnp.shape(x)[0] in (1, n)
            else jnp.broadcast_to(x, (n, *jnp.shape(x)))
        ),
        tree,
    )


def _treatments(spec: ModelSpec, scenario: str, values: Mapping[str, Array], n: int):
    """The scenario's surgery and treatments, the same for every patient."""
    plan = spec.scenario(scenario)
    rows = []
    if plan.surgery_day is not None:
        rows.append(
            dict(patient_id="p", kind="surgery", start=plan.surgery_day, end=plan.surgery_day)
        )
    for t in plan.treatments:
        rows.append(
            dict(
                patient_id="p",
                kind=t.kind,
                start=t.start,
                end=t.end,
                dose=t.dose,
                dose_interval_days=t.dose_interval_days,
                dose_clock_hour=t.dose_clock_hour,
            )
        )
    table = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["patient_id", "kind"])
    design = treatment_design(table, ["p"])
    design = jax.tree.map(lambda x: np.repeat(np.asarray(x), n, axis=0), design)
    return design.treatments(spec, values)


def _crossing(ts: np.ndarray, burden: np.ndarray, level: float) -> np.ndarray:
    """First time each row of ``burden`` reaches ``level``, interpolated log-linearly between
    the saved times (exact for exponential growth); NaN where it never does."""
    above = burden >= level
    hit = above.any(axis=1)
    i = np.argmax(above, axis=1)
    rows = np.arange(burden.shape[0])
    j = np.maximum(i - 1, 0)
    t1, m1 = ts[i], burden[rows, i]
    t0, m0 = ts[j], burden[rows, j]
    ok = (i > 0) & (m0 > 0) & (m1 > m0)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.log(level / np.where(ok, m0, 1.0)) / np.log(np.where(ok, m1 / m0, 2.0))
    t = np.where(ok, t0 + np.clip(frac, 0.0, 1.0) * (t1 - t0), t1)
    return np.where(hit, t, np.nan)


def lead_time(
    spec: ModelSpec,
    schedules: MonitoringSchedule | Sequence[MonitoringSchedule] | None,
    key: PRNGKeyArray,
    *,
    n_patients: int,
    imaging: ImagingSchedule | None = None,
    scenario: str = "default",
    engine: AbstractEngine | None = None,
    population: Literal["typical", "prior"] = "typical",
    values: Mapping[str, ArrayLike] | None = None,
    blood_volume_ml: float = DEFAULT_BLOOD_VOLUME_ML,
    resolution_days: float = 30.0,
    chunk_size: int = CHUNK,
    progress: Callable[[int], None] | None = None,
) -> LeadTimeResult:
    """Simulate CTC monitoring schedules against imaging relapse after curative surgery.

    Args:
        spec: a model spec whose scenario has surgery (e.g. ``load_spec("adjuvant")``).
        schedules: one or several :class:`MonitoringSchedule`; ``None`` takes the scenario's
            (:func:`default_schedule`).
        key: PRNG key; the same key gives the same result.
        n_patients: virtual patients (Monte-Carlo size); MC errors shrink as 1/sqrt(n).
        imaging: when relapse is found; continuous surveillance at the spec's detection size
            by default.
        scenario: the spec's scenario (surgery day and any treatments).
        engine: a stochastic dynamics engine; :func:`default_engine` by default.
            :class:`~ctcdyn.Jump` is exact but costs one step per cell event: small
            populations and tests only.
        population: population-level parameters at their prior medians ("typical") or drawn
            from their priors ("prior"); patient-level parameters vary between patients as
            the spec says. Ignored when ``values`` is given.
        values: parameter values (spec units) per virtual patient, arrays of length
            ``n_patients`` or scalars, e.g. posterior draws of one patient
            (:func:`posterior_values`); every sampled parameter of the spec is needed.
        blood_volume_ml: the patients' blood volume V (mL).
        resolution_days: spacing of the extra saves from which the relapse time is
            interpolated (days).
        chunk_size: patients per compiled call (the last chunk is padded to it, so any
            ``n_patients`` compiles once).
        progress: called with the number of patients finished after each chunk.

    Returns:
        A :class:`LeadTimeResult`; ``result.summary()`` is the table of estimates with MC
        errors.

    Example:
        >>> import jax, ctcdyn
        >>> from ctcdyn.mrd import MonitoringSchedule, lead_time
        >>> spec = ctcdyn.load_spec("adjuvant")
        >>> res = lead_time(spec, MonitoringSchedule(interval_days=91), jax.random.key(0),
        ...                 n_patients=50)
        >>> list(res.summary().index)
        ['cellsearch 7.5 mL q91d 09:00 >=1']
    """
    if n_patients < 1:
        raise ValueError(f"n_patients must be >= 1; got {n_patients}.")
    if not resolution_days > 0:
        raise ValueError(f"resolution_days must be > 0; got {resolution_days}.")
    if schedules is None:
        schedules = default_schedule(spec, scenario)
    plan = (schedules,) if isinstance(schedules, MonitoringSchedule) else tuple(schedules)
    if not plan:
        raise ValueError("give at least one MonitoringSchedule.")
    labels = [s.label for s in plan]
    if len(set(labels)) != len(labels):
        raise ValueError(f"schedules need distinct labels (set name=...); got {labels}.")
    imaging = ImagingSchedule() if imaging is None else imaging
    engine = default_engine() if engine is None else engine
    if not engine.stochastic:
        raise ValueError(
            f"{type(engine).__name__} is deterministic; MRD lead time needs a stochastic "
            "engine (Hybrid, Jump): small residual populations are not deterministic."
        )
    detection = imaging.detection(spec)
    horizon = max(s.horizon_days for s in plan)

    k_par, k_dyn, k_obs = jax.random.split(key, 3)
    if values is None:
        values = draw_parameters(spec, n_patients, k_par, population=population)
    else:
        values = _check_values(spec, values, n_patients)
    model = build_model(spec, values, _treatments(spec, scenario, values, n_patients))
    model = _broadcast(model, n_patients)

    # One grid: every schedule's draws, regular saves for the relapse time, the horizon.
    draws = [s.draw_times() for s in plan]
    regular = np.arange(0.0, horizon, resolution_days)
    grid = np.unique(np.concatenate([*draws, regular, [horizon]]))
    columns = [np.searchsorted(grid, d) for d in draws]
    ts = jnp.asarray(grid)

    # Count model per schedule: fraction eta v / V per patient, background b v per draw.
    recovery: ArrayLike | None = values.get("recovery")
    if recovery is None and "recovery" in spec.parameters:
        recovery = spec.parameters["recovery"].value  # a fixed recovery (None if sampled)
    spec_assay = spec.scenario(scenario).assay.lower()
    fractions, backgrounds = [], []
    for s in plan:
        a = s.assay_spec
        eta = recovery if (recovery is not None and a.name == spec_assay) else a.recovery
        eta = jnp.broadcast_to(jnp.asarray(eta, ts.dtype), (n_patients,))
        fractions.append(eta * s.volume / blood_volume_ml)
        backgrounds.append(a.background_per_ml * s.volume)
    dispersion = values.get("dispersion")
    family = spec.count_family

    run = _solver(engine)
    dyn_keys = jax.random.split(k_dyn, n_patients)
    # Patients in order of their expected work, so each compiled (vmapped) loop runs lanes of
    # similar length; results are put back in patient order below.
    order = np.argsort(_expected_events(model, engine), kind="stable")
    model = jax.tree.map(lambda x: x[order], model)
    dyn_keys = dyn_keys[order]
    # One key per patient (not per chunk): the result does not depend on the chunking.
    obs_keys = jax.random.split(k_obs, n_patients)[order]
    fractions = [f[order] for f in fractions]
    concentration = (
        None if dispersion is None else jnp.broadcast_to(dispersion, (n_patients,))[order]
    )
    metastatic, last, ok_all = [], [], []
    tumour_pos: list[list[np.ndarray]] = [[] for _ in plan]
    any_pos: list[list[np.ndarray]] = [[] for _ in plan]
    size = min(chunk_size, n_patients)
    for lo in range(0, n_patients, size):
        hi = min(lo + size, n_patients)
        # Every chunk has one shape (the last is padded with copies of its last patient, then
        # cut): one compilation whatever n_patients, and per-patient keys keep results exact.
        rows = np.minimum(np.arange(lo, lo + size), n_patients - 1)
        chunk = jax.tree.map(lambda x: x[rows], model)  # noqa: B023
        m, singles, ok = run(chunk, ts, dyn_keys[rows])
        for j, s in enumerate(plan):
            cols = jnp.asarray(columns[j])
            # The same keys for every schedule: schedules that share a draw (time, volume,
            # assay) see the same count, so a denser schedule is never worse on a patient.
            tumour, total = _tube_counts(
                obs_keys[rows],
                singles,
                fractions[j][rows],
                jnp.asarray(backgrounds[j], ts.dtype),
                family,
                None if concentration is None else concentration[rows],
            )
            positive = np.asarray(total[: hi - lo, cols] >= s.threshold)
            tumour_pos[j].append(positive & np.asarray(tumour[: hi - lo, cols] >= 1))
            any_pos[j].append(positive)
        m = np.asarray(m)[: hi - lo]
        metastatic.append(m)
        last.append(m[:, -1])
        ok_all.append(np.asarray(ok)[: hi - lo])
        if progress is not None:
            progress(hi)
    ok_np = np.concatenate(ok_all)
    if not ok_np.all():
        raise RuntimeError(
            f"the {type(engine).__name__} engine failed for {int((~ok_np).sum())} of "
            f"{n_patients} patients (event budget spent); raise its max_events or use "
            "Hybrid with a lower threshold."
        )
    back = np.argsort(order)
    burden = np.concatenate(metastatic)[back]
    crossing = _crossing(grid, burden, detection)
    found = imaging.found_at(crossing)
    relapse = np.where(found <= horizon, found, np.nan)
    cured = np.concatenate(last)[back] == 0

    per: dict[str, list[np.ndarray]] = {
        k: [] for k in ("first", "first_true", "n_tests", "n_positive")
    }
    for j, s in enumerate(plan):
        times = grid[columns[j]]
        before = times[None, :] < np.where(np.isnan(relapse), np.inf, relapse)[:, None]
        before &= times[None, :] <= s.horizon_days
        pos = np.concatenate(any_pos[j])[back] & before
        true = np.concatenate(tumour_pos[j])[back] & before
        per["first"].append(_first_time(times, pos))
        per["first_true"].append(_first_time(times, true))
        per["n_tests"].append(before.sum(axis=1))
        per["n_positive"].append(pos.sum(axis=1))
    stack = {k: np.stack(v, axis=1) for k, v in per.items()}
    patient = np.arange(n_patients)
    dims = ("patient", "schedule")
    ds = xr.Dataset(
        {
            "crossing_day": ("patient", crossing),
            "relapse_day": ("patient", relapse),
            "cured": ("patient", cured),
            "first_positive_day": (dims, stack["first"]),
            "first_true_positive_day": (dims, stack["first_true"]),
            "lead_days": (dims, relapse[:, None] - stack["first"]),
            "true_lead_days": (dims, relapse[:, None] - stack["first_true"]),
            "n_tests": (dims, stack["n_tests"]),
            "n_positive": (dims, stack["n_positive"]),
        },
        coords={"patient": patient, "schedule": labels},
        attrs={
            "detection_cells": detection,
            "imaging_interval_days": imaging.interval_days,
            "engine": repr(engine),
            "horizon_days": horizon,
        },
    )
    return LeadTimeResult(
        patients=ds,
        schedules=plan,
        imaging=imaging,
        detection_cells=detection,
        engine=repr(engine),
    )


def _expected_events(model, engine: AbstractEngine) -> np.ndarray:
    """Rough loop iterations per patient: (b + d) / (b - d) events per net cell while the
    metastatic clone is simulated cell by cell (below the hybrid threshold), for sorting."""
    birth, death = model.metastatic_growth.birth_death(jnp.maximum(model.metastatic0, 1.0))
    birth, death = np.asarray(birth), np.asarray(death)
    net = np.maximum(birth - death, 1e-3 * (birth + death) + 1e-12)
    ceiling = engine.threshold if isinstance(engine, Hybrid) else 1e4
    cells = np.maximum(ceiling - np.asarray(model.metastatic0), 0.0)
    return (birth + death) / net * cells


def _first_time(times: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """Time of the first True per row; NaN where none."""
    any_hit = hits.any(axis=1)
    return np.where(any_hit, times[np.argmax(hits, axis=1)], np.nan)


def _check_values(spec: ModelSpec, values: Mapping[str, ArrayLike], n: int) -> dict[str, Array]:
    out = {}
    for name in spec.sampled:
        if name not in values:
            raise ValueError(
                f"values has no {name!r}; every sampled parameter of {spec.name!r} is needed "
                f"({', '.join(spec.sampled)})."
            )
        x = jnp.asarray(values[name])
        if x.ndim > 1 or (x.ndim == 1 and x.shape[0] != n):
            raise ValueError(
                f"values[{name!r}] must be a scalar or have length n_patients = {n}; "
                f"got shape {x.shape}."
            )
        out[name] = x
    return out
