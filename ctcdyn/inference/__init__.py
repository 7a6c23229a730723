"""Bayesian fits of serial CTC counts (NumPyro): data, model, samplers, and the fit itself."""

from ._buckets import ChunkPlan, bucket_widths, plan_chunks
from ._data import FitData, PatientArrays, fit_data
from ._executor import DaskExecutor, Executor, LocalExecutor
from ._fit import FitResult, count_model, fit
from ._job import fit_run
from ._model import SD_PRIOR_SD_LOG, CountModel, Population, fit_engine
from ._nuts import NUTSResult, NUTSSettings, run_nuts
from ._shard import shard_patients
from ._svi import SVISettings, run_svi
from ._tree import build_tree

__all__ = [
    "SD_PRIOR_SD_LOG",
    "ChunkPlan",
    "CountModel",
    "DaskExecutor",
    "Executor",
    "FitData",
    "FitResult",
    "LocalExecutor",
    "NUTSResult",
    "NUTSSettings",
    "PatientArrays",
    "Population",
    "SVISettings",
    "bucket_widths",
    "build_tree",
    "count_model",
    "fit",
    "fit_data",
    "fit_engine",
    "fit_run",
    "plan_chunks",
    "run_nuts",
    "run_svi",
    "shard_patients",
]
