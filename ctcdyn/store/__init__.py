"""The fits store: run folders with a manifest, the posterior, a summary, and batch chunks.

Everything is written atomically, so a crash never leaves a partial file that looks complete.
"""

from ._atomic import (
    atomic_dir,
    atomic_path,
    write_bytes,
    write_csv,
    write_json,
    write_netcdf,
    write_text,
    write_zarr,
)
from ._draws import thinned_draws
from ._manifest import (
    MANIFEST,
    STATUSES,
    InputFilesError,
    NotARunError,
    ResumeMismatchError,
    sha256_file,
    sha256_text,
)
from ._run import Run, concat_patients
from ._summary import SUMMARY_COLUMNS, summarize

__all__ = [
    "MANIFEST",
    "STATUSES",
    "SUMMARY_COLUMNS",
    "InputFilesError",
    "NotARunError",
    "ResumeMismatchError",
    "Run",
    "atomic_dir",
    "atomic_path",
    "concat_patients",
    "sha256_file",
    "sha256_text",
    "summarize",
    "thinned_draws",
    "write_bytes",
    "write_csv",
    "write_json",
    "write_netcdf",
    "write_text",
    "write_zarr",
]
