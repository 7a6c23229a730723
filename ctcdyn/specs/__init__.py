"""Model specifications (TOML): structure, parameters with units, priors and sources, scenarios."""

from ._build import (
    TREATMENT_COLUMNS,
    TreatmentDesign,
    build_model,
    internal_values,
    treatment_design,
    treatments_from_table,
)
from ._catalogue import CATALOGUE, UNITS, Domain, ParameterInfo
from ._priors import Beta, Gamma, HalfNormal, LogNormal, Normal, Prior, Uniform
from ._spec import (
    ModelSpec,
    ParameterSpec,
    Scenario,
    SpecError,
    TreatmentPlan,
    bundled_models,
    load_spec,
    models_dir,
    parse_spec,
)

__all__ = [
    "CATALOGUE",
    "TREATMENT_COLUMNS",
    "UNITS",
    "Beta",
    "Domain",
    "Gamma",
    "HalfNormal",
    "LogNormal",
    "ModelSpec",
    "Normal",
    "ParameterInfo",
    "ParameterSpec",
    "Prior",
    "Scenario",
    "SpecError",
    "TreatmentDesign",
    "TreatmentPlan",
    "Uniform",
    "build_model",
    "bundled_models",
    "internal_values",
    "load_spec",
    "models_dir",
    "parse_spec",
    "treatment_design",
    "treatments_from_table",
]
