"""Spread a cohort fit's patients over this machine's accelerators.

The hierarchical model's log density is a sum over patients; with several local devices (GPUs,
or CPU devices made with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``) the patient
axis of the data is sharded across them (``jax.sharding``), and the compiled sampler computes
each device's patients there and adds the sums across devices. With one device nothing changes.

The patient count must divide evenly among devices. Where it does not, the cohort is padded
with *empty* patients: copies of the first patient whose counts are all masked out. An empty
patient adds no likelihood term, so its non-centred ``z`` draws are independent standard
normals that leave every other parameter's posterior unchanged; they are dropped from the
result.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._data import FitData, PatientArrays

#: Name of the mesh axis the patients are spread over.
AXIS = "patient"
#: Id prefix of the empty patients that even out the shards.
EMPTY_PREFIX = "__empty_"


def shard_patients(data: FitData, devices: list | None = None) -> FitData:
    """``data`` with its patient axis sharded over ``devices`` (default: ``jax.local_devices()``).

    Returns ``data`` unchanged with one device; otherwise the patients first, then any empty
    patients that even out the shards (ids starting with :data:`EMPTY_PREFIX`), with every
    array a sharded ``jax.Array``.
    """
    devices = jax.local_devices() if devices is None else list(devices)
    if len(devices) < 2:
        return data
    data = pad_patients(data, len(devices))
    sharding = NamedSharding(Mesh(np.array(devices), (AXIS,)), PartitionSpec(AXIS))
    arrays = jax.tree.map(lambda x: jax.device_put(x, sharding), data.arrays)
    return dataclasses.replace(data, arrays=arrays)


def pad_patients(data: FitData, multiple: int) -> FitData:
    """Append empty patients (all counts masked) until the count is a multiple of ``multiple``."""
    extra = (-data.n_patients) % multiple
    if extra == 0:
        return data
    empty = data.arrays.rows(np.zeros(extra, dtype=int))
    empty = dataclasses.replace(
        empty,
        ctc_mask=np.zeros_like(empty.ctc_mask),
        clusters_mask=np.zeros_like(empty.clusters_mask),
    )
    arrays: PatientArrays = jax.tree.map(
        lambda a, b: np.concatenate([np.asarray(a), np.asarray(b)]), data.arrays, empty
    )
    return dataclasses.replace(
        data,
        patient_ids=(*data.patient_ids, *(f"{EMPTY_PREFIX}{i}" for i in range(extra))),
        arrays=arrays,
        n_draws=np.concatenate([data.n_draws, np.zeros(extra, dtype=data.n_draws.dtype)]),
        draw_rows=np.concatenate([data.draw_rows, np.full((extra, data.draw_rows.shape[1]), -1)]),
    )
