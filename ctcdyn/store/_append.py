"""A zarr store that grows along ``patient`` one chunk of patients at a time.

A batch run with ``format="zarr"`` appends each finished chunk to ``posterior.zarr`` as it
arrives (in any chunk order), so the run never holds more than one chunk in memory. The store
carries, next to ``patient``, a coordinate :data:`PATIENT_ROW`: each patient's row in the
patients table, so readers can put the patients back in the table's order
(:func:`in_row_order`).

The caller (:class:`~ctcdyn.store.Run`) records the store's committed length (patients) in the
manifest after each append. An append that crashed before that record, or half-way through,
leaves a longer tail, possibly shorter in some arrays than in others; :func:`trim_patients`
cuts every array back to the committed length, so the chunk is appended again, never twice.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

#: The dimension chunks are appended along.
PATIENT_DIM = "patient"
#: Coordinate along ``patient``: the patient's row in the patients table (0-based).
PATIENT_ROW = "patient_row"
#: Group attribute listing the group's variables in the chunks' order (zarr lists them in the
#: file system's order); removed again by :func:`open_store`.
VARIABLE_ORDER = "ctcdyn_variable_order"


class StoreInconsistentError(RuntimeError):
    """A store holds fewer patients than its run recorded (files lost or edited by hand)."""


def append_patients(
    path: Path,
    tree: xr.DataTree,
    *,
    rows: Sequence[int],
    committed: int,
    sizes: Mapping[str, int] | None = None,
    patients_per_block: int | None = None,
) -> int:
    """Append ``tree``'s patients to the store at ``path``; returns its new length.

    Args:
        path: the zarr store (a folder; created by the first append).
        tree: one chunk's DataTree; every group with a ``patient`` dim is appended, groups
            without one (the root's attrs) are written when the store is created.
        rows: the patients' rows in the patients table, in ``tree``'s patient order.
        committed: patients the store holds for sure (recorded by the caller); a longer
            store is trimmed to it first, and 0 starts a new store.
        sizes: lengths to pad dims to (e.g. ``{"blood_draw": 60}``, the cohort's longest
            series: every chunk must have the store's shape outside ``patient``); padding is
            NaN, as when chunks are concatenated.
        patients_per_block: zarr chunk length along ``patient`` of a new store (default:
            this tree's patient count).

    Raises:
        StoreInconsistentError: the store is shorter than ``committed``.
    """
    sizes = dict(sizes or {})
    n_new = len(rows)
    if committed == 0:
        if path.exists():
            shutil.rmtree(path)
        _create(path, tree, rows, sizes, patients_per_block or max(1, n_new))
        return n_new
    trim_patients(path, committed)
    for group in _patient_groups(tree):
        ds = _prepared(_dataset(tree, group), rows, sizes)
        ds = ds.drop_vars([v for v in ds.variables if PATIENT_DIM not in ds[v].dims])
        # an append rewrites the group's attrs: keep the first chunk's, as concatenating does
        ds.attrs = dict(zarr.open_group(path / group.lstrip("/"), mode="r").attrs)
        ds.to_zarr(
            path, group=group.lstrip("/"), mode="a", append_dim=PATIENT_DIM, consolidated=False
        )
    return committed + n_new


def _create(
    path: Path, tree: xr.DataTree, rows: Sequence[int], sizes: Mapping[str, int], block: int
) -> None:
    xr.Dataset(attrs=dict(tree.attrs)).to_zarr(path, mode="w-", consolidated=False)
    for group in tree.groups:
        if group == "/":
            continue
        ds = _dataset(tree, group)
        if PATIENT_DIM in ds.dims:
            ds = _prepared(ds, rows, sizes)
        ds.attrs[VARIABLE_ORDER] = [str(v) for v in ds.data_vars]
        encoding = {
            name: {"chunks": _chunks(ds[name], block)}
            for name in ds.variables
            if PATIENT_DIM in ds[name].dims
        }
        ds.to_zarr(path, group=group.lstrip("/"), mode="w-", consolidated=False, encoding=encoding)


def _chunks(da: xr.DataArray | xr.Variable, block: int) -> tuple[int, ...]:
    return tuple(block if d == PATIENT_DIM else n for d, n in zip(da.dims, da.shape, strict=True))


def _prepared(ds: xr.Dataset, rows: Sequence[int], sizes: Mapping[str, int]) -> xr.Dataset:
    """Pad to ``sizes``, add :data:`PATIENT_ROW`, store patient ids as variable-length text.

    Integer and boolean variables along a dim of ``sizes`` become float64, so that any chunk
    can be padded with NaN (as concatenating chunks of unequal width does).
    """
    if len(rows) != ds.sizes[PATIENT_DIM]:
        raise ValueError(f"{len(rows)} rows for {ds.sizes[PATIENT_DIM]} patients")
    widened = {
        name: da.astype(np.float64)
        for name, da in ds.data_vars.items()
        if set(da.dims) & set(sizes) and da.dtype.kind in "biu"
    }
    ds = ds.assign(widened)
    pad = {d: n for d, n in sizes.items() if d in ds.dims and ds.sizes[d] != n}
    for dim, n in pad.items():
        if ds.sizes[dim] > n:
            raise ValueError(f"dim {dim!r} has {ds.sizes[dim]} entries, more than {n}")
        if dim in ds.indexes:  # as concatenating with an outer join does
            ds = ds.reindex({dim: np.arange(n)})
        else:
            ds = ds.pad({dim: (0, n - ds.sizes[dim])})
    ids = np.asarray([str(p) for p in ds[PATIENT_DIM].values], dtype=object)
    return ds.assign_coords(
        {PATIENT_DIM: ids, PATIENT_ROW: (PATIENT_DIM, np.asarray(rows, dtype=np.int64))}
    )


def trim_patients(path: Path, length: int) -> None:
    """Cut every array along ``patient`` in the store at ``path`` back to ``length``.

    Raises:
        StoreInconsistentError: an array is shorter than ``length``.
    """
    root = zarr.open_group(path, mode="r+")
    for name, array in root.arrays():
        _trim(array, length, name)
    for group_name, group in root.groups():
        for name, array in group.arrays():
            _trim(array, length, f"{group_name}/{name}")


def _trim(array: zarr.Array, length: int, name: str) -> None:
    dims = _dimension_names(array)
    if PATIENT_DIM not in dims:
        return
    axis = dims.index(PATIENT_DIM)
    have = array.shape[axis]
    if have < length:
        raise StoreInconsistentError(
            f"{name} holds {have} patients, fewer than the {length} its run recorded"
        )
    if have > length:
        array.resize(tuple(length if i == axis else n for i, n in enumerate(array.shape)))


def _dimension_names(array: zarr.Array) -> tuple[str, ...]:
    names = getattr(array.metadata, "dimension_names", None)  # zarr format 3
    if names is None:
        names = array.attrs.get("_ARRAY_DIMENSIONS")  # zarr format 2, as xarray writes it
    return tuple(str(n) for n in names) if isinstance(names, list | tuple) else ()


def open_store(path: Path, length: int) -> xr.DataTree:
    """The store at ``path``, lazily (nothing loaded), cut to its first ``length`` patients."""
    tree = xr.open_datatree(path, engine="zarr", consolidated=False)

    def head(ds: xr.Dataset) -> xr.Dataset:
        order = ds.attrs.pop(VARIABLE_ORDER, None)
        if order is not None:
            ds = ds[[v for v in order if v in ds.data_vars]]
        return ds.isel({PATIENT_DIM: slice(0, length)}) if PATIENT_DIM in ds.dims else ds

    return tree.map_over_datasets(head)


def in_row_order(ds: xr.Dataset) -> xr.Dataset:
    """``ds``'s patients in the patients table's order, without :data:`PATIENT_ROW`.

    Patient ids come back as Python strings (object dtype), as from a netCDF file.
    """
    if PATIENT_ROW not in ds.coords:
        return ds
    order = np.argsort(np.asarray(ds[PATIENT_ROW].values), kind="stable")
    ds = ds.isel({PATIENT_DIM: order}).drop_vars(PATIENT_ROW)
    ids = np.asarray([str(p) for p in ds[PATIENT_DIM].values], dtype=object)
    return ds.assign_coords({PATIENT_DIM: ids})


def _patient_groups(tree: xr.DataTree) -> list[str]:
    return [g for g in tree.groups if g != "/" and PATIENT_DIM in _dataset(tree, g).dims]


def _dataset(tree: xr.DataTree, group: str) -> xr.Dataset:
    node = tree[group]
    assert isinstance(node, xr.DataTree)
    return node.to_dataset(inherit=False)
