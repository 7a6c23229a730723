"""Observation model: what a blood test sees (DESIGN.md section 4)."""

from ._assays import Assay, assay_names, get_assay, register_assay
from ._blood_draw import DrawCounts, expected_counts, simulate_draw
from ._counts import (
    MIN_MEAN,
    Censor,
    Family,
    count_distribution,
    count_log_prob,
    sample_counts,
)
from ._endpoints import (
    OUTCOMES,
    EndpointModel,
    PatientThresholds,
    burden_records,
    log_burden,
    log_interval,
)
from ._relapse import RelapseModel, kill_integral, seeding_rate

__all__ = [
    "MIN_MEAN",
    "OUTCOMES",
    "Assay",
    "Censor",
    "DrawCounts",
    "EndpointModel",
    "Family",
    "PatientThresholds",
    "RelapseModel",
    "assay_names",
    "burden_records",
    "count_distribution",
    "count_log_prob",
    "expected_counts",
    "get_assay",
    "kill_integral",
    "log_burden",
    "log_interval",
    "register_assay",
    "sample_counts",
    "seeding_rate",
    "simulate_draw",
]
