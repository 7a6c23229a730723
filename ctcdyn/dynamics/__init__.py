"""Mechanistic CTC dynamics: one model, several engines."""

from ._analytic import Analytic
from ._circadian import Circadian, clock_hour
from ._circulation import daily_mean_circulation, periodic_circulation
from ._engines import ODE, AbstractEngine, FastClearance, solve
from ._example import example_model
from ._growth import AbstractGrowth, Exponential, Gompertz, Logistic
from ._hybrid import Hybrid
from ._jump import Jump
from ._model import CTCModel, State, Trajectory
from ._sde import SDE
from ._treatments import TreatmentKind, Treatments

__all__ = [
    "ODE",
    "SDE",
    "AbstractEngine",
    "AbstractGrowth",
    "Analytic",
    "CTCModel",
    "Circadian",
    "Exponential",
    "FastClearance",
    "Gompertz",
    "Hybrid",
    "Jump",
    "Logistic",
    "State",
    "Trajectory",
    "TreatmentKind",
    "Treatments",
    "clock_hour",
    "daily_mean_circulation",
    "example_model",
    "periodic_circulation",
    "solve",
]
