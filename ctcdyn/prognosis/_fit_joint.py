"""Fit the joint model by NUTS (one problem: the whole cohort) and store it as a run.

The posterior is an ArviZ-style DataTree with named dims: ``beta`` (fixed_term), ``b_sd``
(random_term), ``b_corr`` (random_pair), ``b`` (patient, random_term), ``gamma`` (surv_term),
``alpha``/``alpha_slope``/``alpha_area`` and the baseline hazard's sites; groups
``sample_stats`` (for the diagnostics gate), ``observed_data`` and ``prior``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import xarray as xr
from jaxtyping import PRNGKeyArray

from ..inference import NUTSSettings, run_nuts
from ..store import Run
from ._data import JointData, JointSpec, joint_data, read_joint_tables
from ._formula import ALPHA_NAMES
from ._joint import JointModel, joint_model

#: Draws from the prior kept for prior-to-posterior contraction.
PRIOR_DRAWS = 1000

Progress = Callable[[str, int, int], None]


@dataclasses.dataclass(frozen=True)
class JointFit:
    """A finished joint fit: the DataTree, the model, the data and the seconds each phase took."""

    tree: xr.DataTree
    model: JointModel
    data: JointData
    timings: dict[str, float]


def reported_sites(model: JointModel) -> dict[str, tuple[str, ...]]:
    """Sites of the posterior group and their dims beyond (chain, draw)."""
    sites: dict[str, tuple[str, ...]] = {"beta": ("fixed_term",)}
    if model.family == "gaussian":
        sites["sigma"] = ()
    elif model.family == "negbin":
        sites["phi"] = ()
    sites["b_sd"] = ("random_term",)
    if model.n_random > 1:
        sites["b_corr"] = ("random_pair",)
    sites["b"] = ("patient", "random_term")
    cause = ("cause",) if model.causes > 1 else ()  # competing risks: one hazard per cause
    if model.n_surv:
        sites["gamma"] = (*cause, "surv_term")
    for a in model.assoc:
        sites[ALPHA_NAMES[a]] = cause
    sites.update({k: (*cause, *v) for k, v in model.baseline.sites().items()})
    return sites


def coordinates(model: JointModel, data: JointData) -> dict[str, list[str]]:
    """Coordinates of every named dim of the posterior."""
    random = list(data.design.random_names)
    rows, cols = np.tril_indices(len(random), -1)
    return {
        "fixed_term": list(data.design.fixed_names),
        "random_term": random,
        "random_pair": [f"{random[c]}:{random[r]}" for r, c in zip(rows, cols, strict=True)],
        "patient": list(data.patient_ids),
        "surv_term": list(data.design.surv_names),
        "cause": [str(k) for k in range(1, model.causes + 1)],
        **model.baseline.coords(),
    }


def _dataset(values: Mapping[str, np.ndarray], dims: Mapping[str, tuple[str, ...]], coords):
    ds = xr.Dataset(
        {name: (("chain", "draw", *dims[name]), np.asarray(v)) for name, v in values.items()}
    )
    return ds.assign_coords({k: v for k, v in coords.items() if k in ds.dims})


def build_joint_tree(
    model: JointModel,
    data: JointData,
    samples: Mapping[str, np.ndarray],
    stats: Mapping[str, np.ndarray],
    *,
    prior: Mapping[str, np.ndarray] | None = None,
    attrs: Mapping[str, object] | None = None,
) -> xr.DataTree:
    """The fit's DataTree from draws shaped (chain, draw, ...)."""
    dims = reported_sites(model)
    coords = coordinates(model, data)
    posterior = _dataset({k: samples[k] for k in dims}, dims, coords)
    a = data.arrays
    observed = xr.Dataset(
        {
            "marker": ("measurement", np.asarray(a.y)),
            "time": ("measurement", data.draws[data.spec.formulas.time].to_numpy(dtype=float)),
            "measurement_patient": (
                "measurement",
                np.asarray(data.patient_ids, dtype=object)[np.asarray(a.obs_patient)].astype(str),
            ),
            "event_time": ("patient", data.patients[data.spec.event_time].to_numpy(dtype=float)),
            "event": ("patient", data.patients[data.spec.event].to_numpy(dtype=float)),
        },
        coords={"patient": list(data.patient_ids)},
    )
    groups = {
        "posterior": posterior,
        "sample_stats": xr.Dataset(
            {k: (("chain", "draw"), np.asarray(v)) for k, v in stats.items()}
        ),
        "observed_data": observed,
    }
    if prior is not None:
        groups["prior"] = _dataset(
            {k: np.asarray(v)[None] for k, v in prior.items() if k in dims and k != "b"},
            dims,
            coords,
        )
    tree = xr.DataTree.from_dict(groups)
    tree.attrs.update(dict(attrs or {}))
    return tree


def _prior(model: JointModel, key: PRNGKeyArray, n: int) -> dict[str, np.ndarray]:
    sites = [s for s in reported_sites(model) if s != "b"]
    predictive = numpyro.infer.Predictive(
        model.sample_parameters, num_samples=n, return_sites=sites
    )
    out = predictive(key)
    return {k: np.asarray(v) for k, v in out.items()}


def fit_joint(
    data: JointData,
    key: PRNGKeyArray,
    *,
    nuts: NUTSSettings | None = None,
    progress: Progress | None = None,
    model: JointModel | None = None,
) -> JointFit:
    """Sample the joint model's posterior for ``data`` with NUTS.

    Args:
        data: the cohort (:func:`~ctcdyn.prognosis.joint_data`).
        key: PRNG key; the same key, data and settings give the same draws.
        nuts: sampler settings (chains, warmup, samples, ...).
        progress: called as ``progress(phase, done, total)``.
        model: the :class:`JointModel` (default :func:`joint_model` of ``data``).

    Returns:
        A :class:`JointFit`.
    """
    nuts = NUTSSettings() if nuts is None else nuts
    model = joint_model(data) if model is None else model
    arrays = jax.tree.map(jnp.asarray, data.arrays)
    batch = jax.tree.map(lambda x: x[None], arrays)
    k_fit, k_prior = jax.random.split(key)
    report = (lambda d, t: progress("nuts", d, t)) if progress else None
    started = time.perf_counter()
    result = run_nuts(model, batch, k_fit, nuts, progress=report)
    timings = {"sampling": time.perf_counter() - started}
    started = time.perf_counter()
    samples = {k: v[0] for k, v in result.samples.items()}
    stats = {k: v[0] for k, v in result.stats.items()}
    attrs = {
        "mode": "cohort",
        "method": "nuts",
        "model": "joint",
        "family": data.spec.family,
        "assoc": ",".join(data.spec.assoc),
        "baseline": data.spec.baseline.kind,
        "warmup_divergences": int(result.warmup_divergences.sum()),
    }
    prior = _prior(model, k_prior, PRIOR_DRAWS)
    tree = build_joint_tree(model, data, samples, stats, prior=prior, attrs=attrs)
    timings["postprocessing"] = time.perf_counter() - started
    return JointFit(tree=tree, model=model, data=data, timings=timings)


def fit_joint_run(
    spec: JointSpec,
    files: Mapping[str, Path | str],
    out: Path | str,
    *,
    seed: int = 0,
    nuts: NUTSSettings | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Run:
    """Fit ``spec`` to the tables in ``files`` and store the run in ``out`` (``fits/RUN``).

    Args:
        spec: the joint spec.
        files: ``{"draws": ..., "patients": ...}`` (CSV or Parquet).
        out: the run folder.
        seed: PRNG seed.
        nuts: sampler settings.
        overwrite: replace a finished run in ``out``.
        progress: called as ``progress(phase, done, total)``.

    Returns:
        The finished :class:`~ctcdyn.store.Run` (status "passed" or "failed_gate").

    Raises:
        ctcdyn.data.InputError: invalid tables (nothing is written).
    """
    from ..diagnostics import check
    from ..store import summarize

    nuts = NUTSSettings() if nuts is None else nuts
    paths = {role: Path(p) for role, p in files.items()}
    draws, patients, labels = read_joint_tables(paths["draws"], paths["patients"])
    data = joint_data(spec, draws, patients, labels=labels)
    run = Run.create(
        out,
        model="joint",
        spec_text=json.dumps(data.spec.describe(), indent=2),
        data=paths,
        seed=seed,
        sampler={"method": "nuts", **dataclasses.asdict(nuts)},
        mode="cohort",
        overwrite=overwrite,
    )
    started = time.perf_counter()
    result = fit_joint(data, jax.random.key(seed), nuts=nuts, progress=progress)
    summary = summarize(result.tree)
    timings = {**result.timings, "total": time.perf_counter() - started}
    run.finalize(result.tree, summary, check(result.tree, summary), timings)
    return run
