"""Model builders shared by the dynamics tests (not a test module).

Every builder returns a :class:`CTCModel` whose leaves are all float64/int arrays and whose
treatments always have two slots, so models that differ only in values share one compiled solve
(a new structure or a Python float would recompile: ~5-10 s each).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ctcdyn._units import MINUTES_PER_DAY
from ctcdyn.dynamics import (
    Circadian,
    CTCModel,
    Exponential,
    Gompertz,
    Logistic,
    TreatmentKind,
    Treatments,
)

GROWTH_LAWS = {
    "exponential": lambda: Exponential(rate_per_day=0.02),
    "gompertz": lambda: Gompertz(rate_per_day=0.004, capacity=1e12),
    "logistic": lambda: Logistic(rate_per_day=0.03, capacity=1e11),
}


def arrays(tree):
    """Every leaf as a strongly typed float64 (or integer) array (weak types recompile too)."""

    def convert(leaf):
        leaf = jnp.asarray(leaf)
        return leaf.astype(jnp.float64) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf

    return jax.tree.map(convert, tree)


def treatments(
    kind: TreatmentKind = TreatmentKind.NONE,
    *,
    start: float = 0.0,
    end: float = 0.0,
    effect: float = 0.0,
    resistance: float = 0.0,
    dose_interval: float = 0.0,
    dose_hour: float = 0.0,
    drug_half_life: float = 1.0,
    second: dict | None = None,
    surgery_time: float = math.inf,
    residual_fraction: float = 1.0,
) -> Treatments:
    """Two treatment slots: the one described by the arguments and ``second`` (or none)."""
    first = dict(
        kind=int(kind),
        start=start,
        end=end,
        effect=effect,
        resistance=resistance,
        dose_interval=dose_interval,
        dose_hour=dose_hour,
        drug_half_life=drug_half_life,
    )
    other = dict(first, kind=0, effect=0.0) if second is None else dict(first, **second)
    return Treatments(
        kind=jnp.array([first["kind"], int(other["kind"])], dtype=jnp.int32),
        **{
            name: jnp.array([first[name], other[name]], dtype=jnp.float64)
            for name in first
            if name != "kind"
        },
        surgery_time=jnp.asarray(surgery_time, jnp.float64),
        residual_fraction=jnp.asarray(residual_fraction, jnp.float64),
    )


#: Treatment variants of the conformance table and the fast-vs-ODE comparison.
TREATMENTS = {
    "none": lambda: treatments(),
    "surgery": lambda: treatments(surgery_time=10.3, residual_fraction=0.01),
    "cytotoxic": lambda: treatments(
        TreatmentKind.CYTOTOXIC,
        start=5.0,
        end=40.0,
        effect=0.1,
        resistance=0.02,
        dose_interval=7.0,
        dose_hour=9.0,
        drug_half_life=1.0,
    ),
    "inhibitor": lambda: treatments(
        TreatmentKind.SHEDDING_INHIBITOR,
        start=2.0,
        end=30.0,
        effect=0.5,
        dose_interval=1.0,
        dose_hour=4.0,
        drug_half_life=0.25,
    ),
    "dissociation": lambda: treatments(
        TreatmentKind.CLUSTER_DISSOCIATION, start=3.2, end=25.0, effect=50.0
    ),
}


def model(
    growth: str = "gompertz",
    treatment: str | Treatments = "none",
    **overrides,
) -> CTCModel:
    """The bundled example patient with another growth law or treatment, all leaves arrays."""
    law = GROWTH_LAWS[growth]()
    fields = dict(
        primary_growth=law,
        metastatic_growth=law,
        shedding_single=1e-7,
        shedding_cluster=3e-9,
        half_life_single=30.0 / MINUTES_PER_DAY,
        half_life_cluster=8.0 / MINUTES_PER_DAY,
        cluster_size=4.0,
        efficiency_single=1e-4,
        efficiency_cluster=3e-3,
        circadian=Circadian(amplitude=1.28, peak_hour=4.0),
        treatments=TREATMENTS[treatment]() if isinstance(treatment, str) else treatment,
        primary0=1e9,
        metastatic0=1e8,
    )
    fields.update(overrides)
    return arrays(CTCModel(**fields))


def constant_model(**overrides) -> CTCModel:
    """A constant burden (growth rate 0, no seeding), for circulation-only checks.

    Gompertz with r = 0 rather than Exponential(0): the same structure as the default model,
    so it reuses the same compiled solves.
    """
    fields: dict = dict(
        primary_growth=Gompertz(rate_per_day=0.0, capacity=1e12),
        metastatic_growth=Gompertz(rate_per_day=0.0, capacity=1e12),
        efficiency_single=0.0,
        efficiency_cluster=0.0,
        metastatic0=0.0,
    )
    fields.update(overrides)
    return model(**fields)


#: Every full solve in the default suite uses this many save times (see ``grid``).
N_TIMES = 49


def grid(*times) -> jax.Array:
    """The given times, sorted and padded to ``N_TIMES`` by repeating the last one.

    One grid length means one compiled diffeqsolve per model structure and engine, shared by
    all test files (each compilation costs 5-20 s on the 2-core CI machine).
    """
    ts = np.sort(np.concatenate([np.atleast_1d(np.asarray(t, np.float64)) for t in times]))
    assert ts.size <= N_TIMES, ts.size
    return jnp.asarray(np.concatenate([ts, np.full(N_TIMES - ts.size, ts[-1])]))
