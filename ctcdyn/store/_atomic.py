"""Atomic writes: a crash never leaves a half-written file under its final name.

Every writer here writes to a hidden temporary name in the destination folder (same file
system, so the rename cannot copy), flushes it to disk with ``fsync``, and only then renames it
over the final name with :func:`os.replace`, which POSIX makes atomic for files. Readers
therefore see either the old complete file or the new complete one. If the writer raises, the
temporary is removed and the old file (if any) is left untouched.

A zarr store is a folder, and no file system renames a folder over a non-empty one atomically:
the new store is written to a temporary folder, the old one (if any) is renamed aside, the new
one renamed into place, and the old one deleted. A crash can leave the final name missing for
an instant, or a hidden ``.NAME.old-*`` folder behind, but never a partial store under the final
name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temporary(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary file path; on success it is synced and renamed to ``path``.

    Examples:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_path(out) as tmp:
        ...     _ = tmp.write_text("done")
        >>> out.read_text()
        'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path, "tmp")
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """Yield a temporary folder; on success its files are synced and it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path, "tmp")
    try:
        yield tmp
        for root, _, files in os.walk(tmp):
            for name in files:
                _fsync_file(Path(root) / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = _temporary(path, "old")
        os.replace(path, old)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    if old is not None and old.is_dir():
        shutil.rmtree(old)
    elif old is not None:
        old.unlink()


def write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    return _write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: Path | str, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return _write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path | str, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (NaN is refused: JSON has no NaN)."""
    return write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def write_csv(path: Path | str, df: pd.DataFrame, **kwargs: Any) -> Path:
    """Write ``df`` as CSV atomically (``index=False`` unless given); returns the path."""
    kwargs.setdefault("index", False)
    return _write(path, lambda tmp: df.to_csv(tmp, **kwargs))


def write_netcdf(path: Path | str, tree: xr.DataTree) -> Path:
    """Write ``tree`` as one netCDF-4 file (h5netcdf engine, all groups) atomically."""
    return _write(path, lambda tmp: tree.to_netcdf(tmp, engine="h5netcdf"))


def write_zarr(path: Path | str, tree: xr.DataTree) -> Path:
    """Write ``tree`` as a zarr store (a folder), replacing any store at ``path`` safely."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        tree.to_zarr(tmp, mode="w", consolidated=False)
    return path


def _write(path: Path | str, write: Callable[[Path], object]) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        write(tmp)
    return path
