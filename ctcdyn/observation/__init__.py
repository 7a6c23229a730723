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

__all__ = [
    "MIN_MEAN",
    "Assay",
    "Censor",
    "DrawCounts",
    "Family",
    "assay_names",
    "count_distribution",
    "count_log_prob",
    "expected_counts",
    "get_assay",
    "register_assay",
    "sample_counts",
    "simulate_draw",
]
