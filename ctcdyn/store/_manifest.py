"""The manifest of a fit: what was fitted, to which data, how, and with what outcome.

``manifest.json`` sits in every run folder. It records the model spec (its TOML text and SHA-256),
the input files (role -> path and SHA-256), the seed and sampler settings, the fitting mode, the
run's status, the diagnostics gate's result, timings, the finished chunks of a batch run and the
result files. It is rewritten atomically on every change.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._version import __version__
from ._atomic import write_json

#: File name of the manifest inside a run folder.
MANIFEST = "manifest.json"
#: Values of the manifest's ``status``.
STATUSES = ("running", "passed", "failed_gate", "approximate", "error")
#: Keys of a manifest, in the order they are written.
KEYS = (
    "ctcdyn_version",
    "created",
    "model",
    "spec_sha256",
    "spec_text",
    "data",
    "seed",
    "sampler",
    "mode",
    "status",
    "diagnostics",
    "timings",
    "chunks",
    "files",
)
#: Keys that must be equal for a run to be resumed (a changed one would mix two fits).
RESUME_KEYS = ("model", "spec_sha256", "data", "seed", "sampler", "mode")


class NotARunError(FileNotFoundError):
    """A folder that is not a fit's run folder (it has no ``manifest.json``)."""


class InputFilesError(RuntimeError):
    """A run's input files are missing or changed since the fit (named in the message)."""


class ResumeMismatchError(ValueError):
    """A resumed run was asked to continue with other inputs or settings than it started."""


def sha256_file(path: Path | str, *, block: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, as 64 hexadecimal digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    """SHA-256 of a text's UTF-8 bytes, as 64 hexadecimal digits."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def new_manifest(
    *,
    model: str,
    spec_text: str,
    data: Mapping[str, Path | str],
    seed: int,
    sampler: Mapping[str, Any],
    mode: str,
) -> dict[str, Any]:
    """A fresh manifest with status "running"; input files are hashed now.

    ``sampler`` must be JSON-serialisable (it is normalised by a JSON round trip, so tuples
    become lists and a resumed run compares like with like).
    """
    return {
        "ctcdyn_version": __version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "model": model,
        "spec_sha256": sha256_text(spec_text),
        "spec_text": spec_text,
        "data": {
            # absolute, so reports and predictions find them from any working directory
            role: {"path": str(Path(path).resolve()), "sha256": sha256_file(path)}
            for role, path in data.items()
        },
        "seed": int(seed),
        "sampler": json.loads(json.dumps(dict(sampler), allow_nan=False)),
        "mode": mode,
        "status": "running",
        "diagnostics": None,
        "timings": {},
        "chunks": [],
        "files": {},
    }


def resume_mismatches(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between a run's manifest and a new request, one line per key.

    Data files are compared by role and SHA-256 only (a moved file with the same bytes is the
    same data).
    """
    problems = []
    for key in RESUME_KEYS:
        a, b = old.get(key), new.get(key)
        if key == "data":
            a = {role: v["sha256"] for role, v in (a or {}).items()}
            b = {role: v["sha256"] for role, v in (b or {}).items()}
        if a != b:
            what = "hash" if key in ("data", "spec_sha256") else "value"
            problems.append(f"{key}: the run has {_short(a)}, the new request {_short(b)} ({what})")
    return problems


def _short(value: Any, width: int = 120) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[: width - 3] + "..."


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of the run in ``folder``; :class:`NotARunError` when there is none."""
    path = folder / MANIFEST
    if not path.is_file():
        raise NotARunError(
            f"{folder} is not a ctcdyn run folder: it has no {MANIFEST}. "
            "Check the path, or start a new run there."
        )
    return json.loads(path.read_text(encoding="utf-8"))


def write_manifest(folder: Path, manifest: Mapping[str, Any]) -> None:
    """Validate and write ``manifest`` atomically into ``folder``."""
    unknown = set(manifest) - set(KEYS)
    if unknown:
        raise ValueError(f"unknown manifest keys {sorted(unknown)}; known keys are {KEYS}")
    if manifest.get("status") not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {manifest.get('status')!r}")
    write_json(folder / MANIFEST, {k: manifest[k] for k in KEYS if k in manifest})
