"""A ready-made model for examples and doctests: a 1 g metastatic breast tumour, no treatment."""

from __future__ import annotations

from .._units import MINUTES_PER_DAY
from ._circadian import Circadian
from ._growth import Gompertz
from ._model import CTCModel
from ._treatments import Treatments


def example_model() -> CTCModel:
    """A plausible untreated patient (values from FACTS.md; see models/mbc.toml for sources)."""
    return CTCModel(
        primary_growth=Gompertz(rate_per_day=0.004, capacity=1e12),
        metastatic_growth=Gompertz(rate_per_day=0.004, capacity=1e12),
        shedding_single=1e-7,  # effective, into peripheral blood (calibration gap, DESIGN.md 4)
        shedding_cluster=3e-9,
        half_life_single=30.0 / MINUTES_PER_DAY,  # Aceto 2014 (mouse), 25-30 min
        half_life_cluster=8.0 / MINUTES_PER_DAY,  # Aceto 2014 (mouse), 6-10 min
        cluster_size=4.0,
        efficiency_single=1e-4,  # ~0.01% per CTC (review)
        efficiency_cluster=3e-3,  # ~30x singles (Aceto 2014: 23-50x)
        circadian=Circadian(amplitude=1.28, peak_hour=4.0),  # Diamantopoulou 2022: ratio 3.6
        treatments=Treatments.none(),
        primary0=1e9,
        metastatic0=1e8,
    )
