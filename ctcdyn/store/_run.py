"""A fit's run folder ``fits/RUN/``: manifest, posterior, summary, and the chunks of a batch run.

Layout::

    RUN/
      manifest.json          what was fitted, how, and the outcome (see ._manifest)
      posterior.nc           the whole DataTree (or posterior.zarr, a folder)
      summary.csv            one row per scalar parameter (see summarize)
      chunks/chunk-00012.nc  netCDF batch runs: one file per finished chunk of patients

A zarr batch run has no chunk files: each finished chunk is appended to ``posterior.zarr``
along ``patient`` (see ._append), and the manifest's ``files.posterior.patients`` records how
many patients the store holds for sure.

Every file is written atomically (see ._atomic), and a chunk is recorded in the manifest only
after its file is complete or its append is done, so a crashed batch run resumes from its last
finished chunk (an appended tail that was never recorded is cut off first). One process writes
to a run at a time (manifest updates are read-modify-write).
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
import xarray as xr

from ._append import append_patients, in_row_order, open_store, trim_patients
from ._atomic import write_csv, write_netcdf, write_zarr
from ._manifest import (
    MANIFEST,
    InputFilesError,
    ResumeMismatchError,
    new_manifest,
    read_manifest,
    resume_mismatches,
    sha256_file,
    write_manifest,
)

if TYPE_CHECKING:
    from ..diagnostics import GateResult

#: The dimension that chunks of a batch run are concatenated along.
PATIENT_DIM = "patient"
_FORMATS = {"netcdf": "posterior.nc", "zarr": "posterior.zarr"}


class Run:
    """A run folder. Make one with :meth:`create`, or open an existing one with :meth:`open`."""

    def __init__(self, path: Path | str, manifest: dict[str, Any]):
        self.path = Path(path)
        self._manifest = manifest

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, status={self.status!r})"

    # --- creating and opening -------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: Path | str,
        *,
        model: str,
        spec_text: str,
        data: Mapping[str, Path | str],
        seed: int,
        sampler: Mapping[str, Any],
        mode: str,
        overwrite: bool = False,
        resume: bool = False,
    ) -> Run:
        """Start a run in ``path``, or resume the run there.

        Args:
            path: the run folder (created with its parents if missing).
            model: the model's name.
            spec_text: the model spec's TOML text (stored, and hashed).
            data: input files by role (``{"draws": "draws.csv", ...}``); hashed now.
            seed: the seed of the fit.
            sampler: sampler settings (JSON-serialisable).
            mode: "cohort" or "per_patient".
            overwrite: replace an existing run in ``path`` (a folder that is not a run is never
                deleted).
            resume: continue the run in ``path``: its model, spec, data, seed, sampler settings
                and mode must equal this request, and its finished chunks are kept.

        Raises:
            FileExistsError: ``path`` is a non-empty folder and neither flag allows it.
            ResumeMismatchError: resuming with other inputs or settings than the run's.
        """
        if overwrite and resume:
            raise ValueError("overwrite and resume exclude each other; choose one")
        path = Path(path)
        request = new_manifest(
            model=model, spec_text=spec_text, data=data, seed=seed, sampler=sampler, mode=mode
        )
        if path.exists() and any(path.iterdir()):
            is_run = (path / MANIFEST).is_file()
            if resume and is_run:
                return cls._resume(path, request)
            if overwrite and is_run:
                _remove(path)
            else:
                what = "a run" if is_run else "a folder that is not a ctcdyn run"
                raise FileExistsError(
                    f"{path} already holds {what}. Try 1) another folder"
                    + (
                        ", 2) resume=True to continue it, 3) overwrite=True to replace it"
                        if is_run
                        else ", 2) emptying it yourself"
                    )
                )
        path.mkdir(parents=True, exist_ok=True)
        write_manifest(path, request)
        return cls(path, request)

    @classmethod
    def _resume(cls, path: Path, request: dict[str, Any]) -> Run:
        old = read_manifest(path)
        problems = resume_mismatches(old, request)
        if problems:
            lines = "\n  ".join(problems)
            raise ResumeMismatchError(
                f"cannot resume the run in {path}: it was started with other inputs or "
                f"settings:\n  {lines}\nTry 1) resuming with the original spec, data and "
                "settings, 2) a new run in another folder, or 3) overwrite=True."
            )
        run = cls(path, old)
        run.update_manifest(status="running")
        length = run.appended_patients
        if length:  # an append that crashed before its chunk was recorded leaves a tail
            trim_patients(path / _FORMATS["zarr"], length)
        return run

    @classmethod
    def open(cls, path: Path | str) -> Run:
        """Open the run in ``path``; :class:`NotARunError` when it has no manifest."""
        path = Path(path)
        return cls(path, read_manifest(path))

    # --- manifest -------------------------------------------------------------------------

    @property
    def manifest(self) -> dict[str, Any]:
        """A copy of the manifest (change it with :meth:`update_manifest`)."""
        return copy.deepcopy(self._manifest)

    @property
    def status(self) -> str:
        """ "running", "passed", "failed_gate" or "error"."""
        return self._manifest["status"]

    def update_manifest(self, **changes: Any) -> None:
        """Change top-level manifest keys and rewrite it atomically."""
        manifest = {**self._manifest, **copy.deepcopy(changes)}
        write_manifest(self.path, manifest)
        self._manifest = manifest

    def _record_file(self, role: str, name: str) -> None:
        target = self.path / name
        digest = sha256_file(target) if target.is_file() else None  # a zarr store is a folder
        self.update_manifest(
            files={**self._manifest["files"], role: {"path": name, "sha256": digest}}
        )

    def input_files(self) -> dict[str, Path]:
        """The input files the fit read, by role, after checking each is unchanged.

        Raises:
            InputFilesError: a file is missing or its SHA-256 differs from the fit's.
        """
        paths, problems = {}, []
        for role, entry in self._manifest["data"].items():
            path = Path(entry["path"])
            if not path.is_file():
                problems.append(f"{role}: {path} is missing")
            elif sha256_file(path) != entry["sha256"]:
                problems.append(f"{role}: {path} has changed since the fit (SHA-256 differs)")
            paths[role] = path
        if problems:
            raise InputFilesError(
                f"the run's input files (recorded in {self.path}/{MANIFEST}) are needed again, "
                "but:\n  " + "\n  ".join(problems) + "\nRestore the files the fit used (runs "
                "made by ctcdyn before 2026-11-30 record paths relative to the fit's working "
                "directory: work from there)."
            )
        return paths

    # --- results --------------------------------------------------------------------------

    def write_posterior(
        self, tree: xr.DataTree, format: Literal["netcdf", "zarr"] = "netcdf"
    ) -> Path:
        """Write the whole DataTree as ``posterior.nc`` (netCDF-4) or ``posterior.zarr``."""
        if format not in _FORMATS:
            raise ValueError(f"format must be one of {sorted(_FORMATS)}, got {format!r}")
        name = _FORMATS[format]
        target = self.path / name
        (write_netcdf if format == "netcdf" else write_zarr)(target, tree)
        self._record_file("posterior", name)
        for other in set(_FORMATS.values()) - {name}:  # a stale copy in the other format
            _remove_path(self.path / other)
        return target

    def read_posterior(self) -> xr.DataTree:
        """The posterior DataTree, loaded into memory, patients in the patients table's order.

        That is the tree written by :meth:`write_posterior`, or the chunks appended so far by
        :meth:`append_chunk` (all of them once the run is finished).
        """
        entry = self._manifest["files"].get("posterior")
        if entry is None:
            raise FileNotFoundError(f"the run in {self.path} has no posterior yet")
        if self.appended_patients is None:
            return _read_tree(self.path / entry["path"])
        tree = self.open_posterior().map_over_datasets(in_row_order)
        try:
            return tree.load()
        finally:
            tree.close()

    def open_posterior(self) -> xr.DataTree:
        """The posterior DataTree opened lazily (values are read when used; close it after).

        An appended store (:meth:`append_chunk`) is cut to its recorded patients, in the order
        their chunks were appended, with each patient's row in the patients table as the
        coordinate ``patient_row``; ``tree.map_over_datasets(ctcdyn.store._append.in_row_order)``
        puts them in the table's order.
        """
        entry = self._manifest["files"].get("posterior")
        if entry is None:
            raise FileNotFoundError(f"the run in {self.path} has no posterior yet")
        path = self.path / entry["path"]
        length = self.appended_patients
        if length is not None:
            return open_store(path, length)
        if path.suffix == ".zarr":
            return xr.open_datatree(path, engine="zarr", consolidated=False)
        return xr.open_datatree(path, engine="h5netcdf")

    @property
    def appended_patients(self) -> int | None:
        """Patients recorded in an appended ``posterior.zarr``; None when not appended to."""
        entry = self._manifest["files"].get("posterior") or {}
        length = entry.get("patients")
        return None if length is None else int(length)

    def write_summary(self, summary: pd.DataFrame) -> Path:
        """Write the summary table as ``summary.csv``."""
        target = write_csv(self.path / "summary.csv", summary, float_format="%.6g")
        self._record_file("summary", target.name)
        return target

    def read_summary(self) -> pd.DataFrame:
        """The table written by :meth:`write_summary`."""
        return pd.read_csv(self.path / "summary.csv", dtype={"parameter": str})

    def finalize(
        self,
        tree: xr.DataTree | None,
        summary: pd.DataFrame,
        gate_result: GateResult,
        timings: Mapping[str, float],
        *,
        format: Literal["netcdf", "zarr"] = "netcdf",
    ) -> str:
        """Write the posterior and summary, record the gate and timings; returns the status.

        The status becomes "passed" when the diagnostics gate passed, else "failed_gate".

        Args:
            tree: the posterior to write; None when its chunks were appended
                (:meth:`append_chunk`), which leaves the store as it is.
            summary: the summary table.
            gate_result: the diagnostics gate's result.
            timings: seconds by phase.
            format: how ``tree`` is written ("netcdf" or "zarr").
        """
        if tree is not None:
            self.write_posterior(tree, format=format)
        elif self.appended_patients is None:
            raise ValueError("finalize needs a tree: no chunks were appended to this run")
        else:
            _remove_path(self.path / _FORMATS["netcdf"])  # a stale copy in the other format
        self.write_summary(summary)
        status = "passed" if gate_result.passed else "failed_gate"
        self.update_manifest(
            status=status,
            diagnostics=gate_result.to_dict(),
            timings={**self._manifest["timings"], **{k: float(v) for k, v in timings.items()}},
        )
        return status

    # --- chunks of a batch run --------------------------------------------------------------

    def chunk_path(self, chunk_id: int) -> Path:
        """Where chunk ``chunk_id`` is written: ``chunks/chunk-00012.nc``."""
        if isinstance(chunk_id, bool) or not isinstance(chunk_id, int) or chunk_id < 0:
            raise ValueError(f"chunk_id must be an int >= 0, got {chunk_id!r}")
        return self.path / "chunks" / f"chunk-{chunk_id:05d}.nc"

    def write_chunk(self, chunk_id: int, tree: xr.DataTree) -> Path:
        """Write one finished chunk's DataTree, then record it in the manifest."""
        target = write_netcdf(self.chunk_path(chunk_id), tree)
        self.update_manifest(chunks=sorted({*self._manifest["chunks"], chunk_id}))
        return target

    def append_chunk(
        self,
        chunk_id: int,
        tree: xr.DataTree,
        *,
        rows: Any,
        sizes: Mapping[str, int] | None = None,
        patients_per_block: int | None = None,
    ) -> Path:
        """Append one finished chunk to ``posterior.zarr``, then record it in the manifest.

        The chunk and the store's new length are recorded in one atomic manifest write after
        the append has completed; an append that did not complete, or was not recorded, is cut
        off before the next one (and on resume), so a chunk is never in the store twice.

        Args:
            chunk_id: the chunk's id.
            tree: the chunk's DataTree.
            rows: its patients' rows in the patients table, in the tree's patient order
                (stored as the coordinate ``patient_row``; :meth:`read_posterior` orders by it).
            sizes: lengths to NaN-pad other dims to, the same for every chunk
                (``{"blood_draw": longest series}``).
            patients_per_block: zarr chunk length along ``patient`` when the store is created.
        """
        target = self.path / _FORMATS["zarr"]
        committed = self.appended_patients or 0
        if chunk_id in self._manifest["chunks"]:
            raise ValueError(f"chunk {chunk_id} is already recorded in the run in {self.path}")
        length = append_patients(
            target,
            tree,
            rows=[int(r) for r in rows],
            committed=committed,
            sizes=sizes,
            patients_per_block=patients_per_block,
        )
        entry = {"path": target.name, "sha256": None, "patients": length}
        self.update_manifest(
            chunks=sorted({*self._manifest["chunks"], chunk_id}),
            files={**self._manifest["files"], "posterior": entry},
        )
        return target

    def finished_chunks(self) -> set[int]:
        """Chunks recorded in the manifest whose file exists or that were appended.

        A chunk is recorded only after its file is written or its append is done.
        """
        if self.appended_patients is not None:
            return set(self._manifest["chunks"])
        return {c for c in self._manifest["chunks"] if self.chunk_path(c).is_file()}

    def read_chunks(self) -> xr.DataTree:
        """The finished chunks in chunk order, concatenated along ``patient``.

        Groups with a ``patient`` dim are concatenated (variables without it are taken from
        the first chunk); groups without one are taken from the first chunk. Dims without a
        coordinate whose length differs between chunks (e.g. ``blood_draw``: patients have
        different numbers of blood tests) are padded with NaN.
        """
        ids = sorted(self.finished_chunks())
        if not ids:
            raise FileNotFoundError(f"the run in {self.path} has no finished chunks")
        return concat_patients([_read_tree(self.chunk_path(c)) for c in ids])


def concat_patients(trees: list[xr.DataTree]) -> xr.DataTree:
    """Concatenate DataTrees along ``patient`` group by group (see :meth:`Run.read_chunks`)."""
    first = trees[0]
    groups: dict[str, xr.Dataset] = {}
    for group in first.groups:
        parts = [_dataset(t, group) for t in trees if group in t.groups]
        if any(PATIENT_DIM in ds.dims for ds in parts):
            groups[group] = xr.concat(
                _pad_unindexed(parts),
                dim=PATIENT_DIM,
                data_vars="minimal",
                coords="minimal",
                compat="override",
                join="outer",
            )
        else:
            groups[group] = parts[0]
    return xr.DataTree.from_dict(groups)


def _dataset(tree: xr.DataTree, group: str) -> xr.Dataset:
    node = tree[group]
    assert isinstance(node, xr.DataTree)
    return node.to_dataset(inherit=False)


def _pad_unindexed(parts: list[xr.Dataset]) -> list[xr.Dataset]:
    """Pad dims without a coordinate (other than ``patient``) to their longest length."""
    longest: dict[Hashable, int] = {}
    for ds in parts:
        for dim, n in ds.sizes.items():
            if dim != PATIENT_DIM and dim not in ds.indexes:
                longest[dim] = max(longest.get(dim, 0), n)
    padded = []
    for ds in parts:
        short = {
            d: (0, n - ds.sizes[d]) for d, n in longest.items() if d in ds.sizes and ds.sizes[d] < n
        }
        padded.append(ds.pad(short) if short else ds)
    return padded


def _read_tree(path: Path) -> xr.DataTree:
    if path.suffix == ".zarr":
        tree = xr.open_datatree(path, engine="zarr", consolidated=False)
    else:
        tree = xr.open_datatree(path, engine="h5netcdf")
    try:
        return tree.load()
    finally:
        tree.close()


def _remove_path(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    path.unlink(missing_ok=True)


def _remove(path: Path) -> None:
    """Delete a run folder: rename it aside first, so a crash leaves no half-deleted run."""
    aside = path.with_name(f".{path.name}.removing")
    if aside.exists():
        shutil.rmtree(aside)
    path.rename(aside)
    shutil.rmtree(aside)
