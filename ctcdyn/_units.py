"""Units and conventions, in one place.

ctcdyn works internally in **days** and **cells**. Specs may give half-lives in minutes or hours;
they are converted here, once, when a spec is read.
"""

from __future__ import annotations

import math

HOURS_PER_DAY = 24.0
MINUTES_PER_DAY = 24.0 * 60.0
#: 1 cm^3 of tumour ~ 1 g ~ 1e9 cells (DESIGN.md section 2).
CELLS_PER_GRAM = 1e9
#: Adult blood volume in mL when body weight is unknown (FACTS.md: about 5 L).
DEFAULT_BLOOD_VOLUME_ML = 5000.0
#: Blood volume per kg of body weight (FACTS.md: 70 mL/kg).
BLOOD_ML_PER_KG = 70.0

#: Multiplicative factors that take a value in the given unit to the internal unit.
TIME_TO_DAYS = {"min": 1.0 / MINUTES_PER_DAY, "h": 1.0 / HOURS_PER_DAY, "day": 1.0}
RATE_TO_PER_DAY = {"1/min": MINUTES_PER_DAY, "1/h": HOURS_PER_DAY, "1/day": 1.0}


def half_life_to_rate(half_life_days: float) -> float:
    """First-order rate constant (1/day) for a half-life in days: k = ln 2 / t_half."""
    return math.log(2.0) / half_life_days


def blood_volume_ml(weight_kg: float | None = None) -> float:
    """Blood volume: 70 mL/kg when the weight is known, else 5000 mL (FACTS.md)."""
    return DEFAULT_BLOOD_VOLUME_ML if weight_kg is None else BLOOD_ML_PER_KG * weight_kg
