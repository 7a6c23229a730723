"""Virtual cohorts from a model spec: the tables a fit reads, and the truth behind them."""

from ._cohort import Cohort, simulate_cohort, write_cohort
from ._parameters import draw_parameters, from_unconstrained, to_unconstrained

__all__ = [
    "Cohort",
    "draw_parameters",
    "from_unconstrained",
    "simulate_cohort",
    "to_unconstrained",
    "write_cohort",
]
