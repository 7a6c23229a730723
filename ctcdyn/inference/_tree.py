"""Posterior draws -> an ArviZ DataTree with named dims (chain, draw, patient, blood_draw).

Groups: ``posterior`` (reported parameters, not the raw non-centred z), ``sample_stats``,
``log_likelihood`` (ctc and clusters per draw; ``os``, ``pfs`` per patient when the endpoints
were fitted) and ``posterior_predictive`` (ctc and clusters per draw), ``observed_data``
(counts and draw times; NaN where a count is missing), and ``prior`` (the same parameters drawn
from the prior, for prior-to-posterior contraction). Padded blood draws are NaN everywhere.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import xarray as xr
from jaxtyping import PRNGKeyArray

from ._data import FitData, PatientArrays
from ._model import CountModel

#: Posterior draws evaluated per compiled call when computing likelihoods and predictions.
DRAW_BATCH = 64


def _dataset(
    values: Mapping[str, np.ndarray], patients: tuple[str, ...], n_blood_draws: int
) -> xr.Dataset:
    """Variables shaped (chain, draw[, patient[, blood_draw]])."""
    data_vars = {}
    for name, x in values.items():
        dims = ["chain", "draw", "patient", "blood_draw"][: np.ndim(x)]
        data_vars[name] = (dims, np.asarray(x))
    coords = {"patient": list(patients), "blood_draw": np.arange(n_blood_draws)}
    ds = xr.Dataset(data_vars)
    return ds.assign_coords({k: v for k, v in coords.items() if k in ds.dims})


def _padding(data: FitData) -> np.ndarray:
    m = np.shape(data.arrays.time)[1]
    return np.arange(m)[None, :] >= data.n_draws[:, None]


def full_values(
    model: CountModel, draws: Mapping[str, np.ndarray], names: list[str]
) -> dict[str, np.ndarray]:
    """Every sampled parameter over flattened draws (S, ...), population constants added."""
    out = {name: draws[name] for name in names if name in draws}
    size = next(iter(out.values())).shape[0]
    if model.population is not None:
        for name, value in model.population.values.items():
            out[name] = np.full(size, value)
    return out


def pointwise(
    model: CountModel,
    arrays: PatientArrays,
    values: Mapping[str, np.ndarray],
    key: PRNGKeyArray,
) -> dict[str, np.ndarray]:
    """Log-likelihood and replicated counts of every blood draw, for each posterior draw.

    ``values`` have a leading axis of draws S; returns arrays (S, patients, blood_draws).
    """

    size = next(iter(values.values())).shape[0]
    keys = jax.random.split(key, size)
    # Pad the draws to whole batches: lax.map then compiles one vmapped body, not a second
    # copy for the remainder (the body is the dynamics, the likelihood and the count sampler).
    padded = -(-size // DRAW_BATCH) * DRAW_BATCH

    def pad(x):
        x = jnp.asarray(x)
        return jnp.concatenate([x, jnp.repeat(x[-1:], padded - size, axis=0)])

    out = _pointwise_draws(model, arrays, {k: pad(v) for k, v in values.items()}, pad(keys))
    ll_s, ll_c, y_s, y_c = (np.asarray(x[:size]) for x in out[:4])
    return {
        "ll_ctc": ll_s,
        "ll_clusters": ll_c,
        "pp_ctc": y_s.astype(float),
        "pp_clusters": y_c.astype(float),
        **{f"ll_{name}": np.asarray(x[:size]) for name, x in out[4].items()},
    }


@functools.partial(jax.jit, static_argnums=0)
def _pointwise_draws(model: CountModel, arrays: PatientArrays, values, keys):
    # compiled once per model object (CountModel hashes by identity) and shape
    def one(args):
        v, k = args
        ll_s, ll_c, rep = model.pointwise(k, arrays, v)
        return ll_s, ll_c, rep.singles, rep.clusters, model.outcome_log_likelihood(arrays, v)

    return jax.lax.map(one, (values, keys), batch_size=DRAW_BATCH)


def prior_draws(
    model: CountModel, arrays: PatientArrays, key: PRNGKeyArray, n: int
) -> dict[str, np.ndarray]:
    """``n`` draws of the reported parameters from the prior (shape (n, ...))."""
    out = _prior_draws(model, int(jnp.shape(arrays.time)[0]), n, key)
    return {name: np.asarray(value) for name, value in out.items()}


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _prior_draws(model: CountModel, n_patients: int, n: int, key: PRNGKeyArray):
    # compiled: run eagerly, NumPyro's Predictive dispatches every site op by op (~15 s)
    population, patient = model.site_names()
    predictive = numpyro.infer.Predictive(
        model.sample_parameters, num_samples=n, return_sites=population + patient
    )
    return predictive(key, n_patients)


def build_tree(
    model: CountModel,
    data: FitData,
    posterior: Mapping[str, np.ndarray],
    stats: Mapping[str, np.ndarray],
    key: PRNGKeyArray,
    *,
    prior: Mapping[str, np.ndarray] | None = None,
    attrs: Mapping[str, object] | None = None,
) -> xr.DataTree:
    """The fit's DataTree. ``posterior`` and ``stats`` arrays are (chain, draw, ...)."""
    ids = data.patient_ids
    m = np.shape(data.arrays.time)[1]
    population, patient = model.site_names()
    names = population + patient
    chains, draws = next(iter(posterior.values())).shape[:2]
    flat = {k: np.reshape(v, (chains * draws, *np.shape(v)[2:])) for k, v in posterior.items()}
    values = full_values(model, flat, list(model.spec.sampled))
    arrays = jax.tree.map(jnp.asarray, data.arrays)
    point = pointwise(model, arrays, values, key)
    pad = _padding(data)

    def per_draw(x: np.ndarray) -> np.ndarray:
        x = np.where(pad[None], np.nan, x)
        return x.reshape((chains, draws, *x.shape[1:]))

    observed = {}
    for count in ("ctc", "clusters"):
        mask = np.asarray(getattr(data.arrays, f"{count}_mask"))
        observed[count] = np.where(mask & ~pad, np.asarray(getattr(data.arrays, count)), np.nan)
    observed_ds = xr.Dataset(
        {
            "ctc": (("patient", "blood_draw"), observed["ctc"]),
            "clusters": (("patient", "blood_draw"), observed["clusters"]),
            "time": (("patient", "blood_draw"), np.where(pad, np.nan, data.arrays.time)),
        },
        coords={"patient": list(ids), "blood_draw": np.arange(m)},
    )
    groups = {
        "posterior": _dataset({k: posterior[k] for k in names}, ids, m),
        "sample_stats": _dataset(stats, ids, m),
        "log_likelihood": _dataset(
            {
                "ctc": per_draw(point["ll_ctc"]),
                "clusters": per_draw(point["ll_clusters"]),
                **{  # fitted endpoints (--outcomes): one term per patient
                    name: point[f"ll_{name}"].reshape((chains, draws, -1))
                    for name in model.outcomes
                },
            },
            ids,
            m,
        ),
        "posterior_predictive": _dataset(
            {"ctc": per_draw(point["pp_ctc"]), "clusters": per_draw(point["pp_clusters"])}, ids, m
        ),
        "observed_data": observed_ds,
    }
    if prior is not None:
        groups["prior"] = _dataset({k: np.asarray(v)[None] for k, v in prior.items()}, ids, m)
    tree = xr.DataTree.from_dict(groups)
    tree.attrs.update(dict(attrs or {}))
    return tree
