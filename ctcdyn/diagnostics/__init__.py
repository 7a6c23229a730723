"""Sampler diagnostics: the gate a fit must pass, and posterior contraction against the prior."""

from ._contraction import CONTRACTION_COLUMNS, INFORMED, PRIOR_DOMINATED, contraction
from ._gate import MAX_LISTED, Gate, GateResult, bfmi, check

__all__ = [
    "CONTRACTION_COLUMNS",
    "INFORMED",
    "MAX_LISTED",
    "PRIOR_DOMINATED",
    "Gate",
    "GateResult",
    "bfmi",
    "check",
    "contraction",
]
