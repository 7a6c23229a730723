"""The parameters a model spec may declare: their dimension, domain and meaning.

This table is the contract between specs (TOML) and the dynamics: a spec with a parameter that
is not here is rejected, and every parameter here maps onto one field of the model, the
observation model or a treatment effect. Units in specs are converted to ctcdyn's internal units
(days, cells) once, when the spec is read.
"""

from __future__ import annotations

import dataclasses
import enum
import math

from .._units import HOURS_PER_DAY, MINUTES_PER_DAY


class Domain(enum.Enum):
    """Where a parameter's values live; priors must put all their mass inside it."""

    POSITIVE = (0.0, math.inf)
    PROBABILITY = (0.0, 1.0)
    CLOCK = (0.0, 24.0)
    REAL = (-math.inf, math.inf)

    @property
    def bounds(self) -> tuple[float, float]:
        return self.value


#: Dimension -> {unit as written in a spec: factor to the internal unit}.
UNITS: dict[str, dict[str, float]] = {
    "rate": {"1/day": 1.0, "1/h": HOURS_PER_DAY, "1/min": MINUTES_PER_DAY, "1/week": 1.0 / 7.0},
    "duration": {"day": 1.0, "h": 1.0 / HOURS_PER_DAY, "min": 1.0 / MINUTES_PER_DAY},
    "cells": {"cells": 1.0, "g": 1e9},
    "volume": {"mL": 1.0, "L": 1000.0},
    "clock": {"h": 1.0},
    "dimensionless": {"1": 1.0},
}


@dataclasses.dataclass(frozen=True)
class ParameterInfo:
    dimension: str
    domain: Domain
    description: str


_P = ParameterInfo
CATALOGUE: dict[str, ParameterInfo] = {
    # tumour
    "primary_burden0": _P("cells", Domain.POSITIVE, "primary tumour cells at baseline"),
    "metastatic_burden0": _P("cells", Domain.POSITIVE, "metastatic cells at baseline"),
    "growth_rate": _P("rate", Domain.POSITIVE, "growth rate r of the primary tumour"),
    "capacity": _P("cells", Domain.POSITIVE, "carrying capacity K (Gompertz, logistic)"),
    "metastatic_growth_rate": _P("rate", Domain.POSITIVE, "growth rate of metastases"),
    "metastatic_capacity": _P("cells", Domain.POSITIVE, "carrying capacity of metastases"),
    "death_rate": _P("rate", Domain.POSITIVE, "intrinsic cell death (turnover), jump engines"),
    # shedding and circulation
    "shedding_single": _P("rate", Domain.POSITIVE, "single CTCs shed per tumour cell per day"),
    "shedding_cluster": _P("rate", Domain.POSITIVE, "CTC clusters shed per tumour cell per day"),
    # or per division: shedding per cell per day = this x (growth_rate + death_rate)
    "shedding_single_per_division": _P(
        "dimensionless", Domain.POSITIVE, "single CTCs shed per tumour cell division"
    ),
    "shedding_cluster_per_division": _P(
        "dimensionless", Domain.POSITIVE, "CTC clusters shed per tumour cell division"
    ),
    "half_life_single": _P("duration", Domain.POSITIVE, "circulation half-life of single CTCs"),
    "half_life_cluster": _P("duration", Domain.POSITIVE, "circulation half-life of clusters"),
    "cluster_size": _P("dimensionless", Domain.POSITIVE, "mean cells per cluster"),
    "efficiency_single": _P("dimensionless", Domain.PROBABILITY, "lesions per cleared single"),
    "efficiency_cluster": _P("dimensionless", Domain.PROBABILITY, "lesions per cleared cluster"),
    "circadian_amplitude": _P("dimensionless", Domain.POSITIVE, "kappa: peak/(peak+6h) = e^kappa"),
    "circadian_peak_hour": _P("clock", Domain.CLOCK, "clock hour of peak shedding"),
    # treatment effects (per unit of relative dose in treatments.csv)
    "kill_rate": _P("rate", Domain.POSITIVE, "extra death rate under cytotoxic therapy"),
    "resistance_rate": _P("rate", Domain.POSITIVE, "decay rate of the kill rate (resistance)"),
    "inhibition": _P("dimensionless", Domain.PROBABILITY, "fraction of shedding inhibited"),
    "dissociation_rate": _P("rate", Domain.POSITIVE, "cluster break-up rate under the drug"),
    "drug_half_life": _P("duration", Domain.POSITIVE, "elimination half-life of dosed drugs"),
    "residual_fraction": _P("dimensionless", Domain.PROBABILITY, "primary left after surgery"),
    # observation
    "recovery": _P("dimensionless", Domain.PROBABILITY, "assay recovery of single CTCs"),
    "dispersion": _P("dimensionless", Domain.POSITIVE, "negative-binomial concentration"),
    # clinical endpoints
    "detection_burden": _P("cells", Domain.POSITIVE, "burden visible on imaging"),
    "lethal_burden": _P("cells", Domain.POSITIVE, "burden at which the patient dies"),
    "lethal_burden_spread": _P(
        "dimensionless", Domain.POSITIVE, "between-patient SD of the log lethal burden"
    ),
    "other_death_rate": _P("rate", Domain.POSITIVE, "death from causes the burden does not track"),
    "progression_spread": _P(
        "dimensionless", Domain.POSITIVE, "between-patient SD of the log progression threshold"
    ),
    "other_progression_rate": _P(
        "rate", Domain.POSITIVE, "progression the total burden does not track (new lesions)"
    ),
    "other_relapse_rate": _P(
        "rate", Domain.POSITIVE, "relapse the lesion model does not track (locoregional)"
    ),
}
