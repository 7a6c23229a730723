"""Model specifications: TOML files that declare a model's structure, parameters and scenarios.

A spec is validated completely when it is read: an unknown key, a missing unit, a unit that does
not fit the parameter, a prior outside the parameter's domain or a scenario that uses an
undeclared parameter is reported with the file and the key (all problems at once), and nothing
is built from a spec with errors. The file format is described in ``docs/specs.md``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from ._catalogue import CATALOGUE, UNITS
from ._priors import PRIORS, Prior

Level = Literal["patient", "population", "fixed"]
GROWTH_LAWS = ("exponential", "gompertz", "logistic")
#: Shedding is declared per tumour cell per day, or per cell division (``docs/specs.md``).
SHEDDING_PER_CELL = ("shedding_single", "shedding_cluster")
SHEDDING_PER_DIVISION = ("shedding_single_per_division", "shedding_cluster_per_division")
TREATMENT_KINDS = ("cytotoxic", "shedding_inhibitor", "cluster_dissociation")
#: Parameter that gives the effect of each treatment kind (per unit of relative dose).
EFFECT_PARAMETER = {
    "cytotoxic": "kill_rate",
    "shedding_inhibitor": "inhibition",
    "cluster_dissociation": "dissociation_rate",
}
_ALWAYS_REQUIRED = (
    "primary_burden0",
    "growth_rate",
    "half_life_single",
    "half_life_cluster",
    "cluster_size",
    "efficiency_single",
    "efficiency_cluster",
    "circadian_amplitude",
    "circadian_peak_hour",
)


class SpecError(ValueError):
    """A model spec broke one or more rules; ``problems`` lists them as 'file: key: message'."""

    def __init__(self, path: Path | str, problems: list[tuple[str, str]]):
        self.path = Path(path)
        self.problems = [f"{self.path}: {key}: {msg}" for key, msg in problems]
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        super().__init__(
            f"invalid model spec {self.path} ({count}):\n  " + "\n  ".join(self.problems)
        )


@dataclasses.dataclass(frozen=True)
class ParameterSpec:
    """One declared parameter. ``prior`` and ``value`` are in the spec's own ``unit``.

    ``level``: "patient" (varies between patients around a population median: on the log scale
    for positive parameters, logit for probabilities, with standard deviation
    ``between_patients``), "population" (one value for the cohort, with a prior) or "fixed"
    (a constant ``value``).
    """

    name: str
    unit: str
    to_internal: float
    level: Level
    prior: Prior | None
    value: float | None
    between_patients: float
    source: str
    description: str

    def typical(self) -> float:
        """The fixed value, or the prior median (spec units)."""
        if self.value is not None:
            return self.value
        assert self.prior is not None
        return self.prior.median()


@dataclasses.dataclass(frozen=True)
class TreatmentPlan:
    """A treatment every patient of a scenario receives (days from baseline)."""

    kind: str
    start: float
    end: float
    dose: float = 1.0
    dose_interval_days: float = 0.0
    dose_clock_hour: float = 9.0


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A named setting to simulate: draw schedule, assay, treatments, follow-up, endpoints."""

    name: str
    description: str
    assay: str
    volume_ml: float
    follow_up_days: float
    draw_days: tuple[float, ...]
    draw_jitter_days: float
    draw_clock_hour: float
    draw_clock_hour_sd: float
    treatments: tuple[TreatmentPlan, ...]
    surgery_day: float | None
    progression_factor: float | None
    detect_relapse: bool
    imaging_days: tuple[float, ...] = ()
    imaging_jitter_days: float = 0.0


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A validated model spec (see :func:`load_spec`)."""

    path: Path
    sha256: str
    name: str
    title: str
    primary_growth: str
    metastatic_growth: str
    count_family: str
    parameters: Mapping[str, ParameterSpec]
    scenarios: Mapping[str, Scenario]

    def parameter(self, name: str) -> ParameterSpec:
        if name not in self.parameters:
            raise KeyError(f"{self.path}: model {self.name!r} declares no parameter {name!r}")
        return self.parameters[name]

    def scenario(self, name: str = "default") -> Scenario:
        if name not in self.scenarios:
            known = ", ".join(sorted(self.scenarios))
            raise ValueError(f"{self.path}: no scenario {name!r}; known scenarios: {known}")
        return self.scenarios[name]

    @property
    def sampled(self) -> list[str]:
        """Names of the parameters that are not fixed (patient- or population-level)."""
        return [n for n, p in self.parameters.items() if p.level != "fixed"]


# -- reading and validation ------------------------------------------------------------------

_MODEL_KEYS = {"name", "title", "primary_growth", "metastatic_growth", "count_family"}
_PARAM_KEYS = {"unit", "prior", "value", "level", "between_patients", "source", "description"}
_SCENARIO_KEYS = {
    "description",
    "assay",
    "volume_ml",
    "follow_up_days",
    "draw_days",
    "draw_jitter_days",
    "draw_clock_hour",
    "draw_clock_hour_sd",
    "treatments",
    "surgery_day",
    "progression_factor",
    "detect_relapse",
    "imaging_days",
    "imaging_jitter_days",
}
_TREATMENT_KEYS = {f.name for f in dataclasses.fields(TreatmentPlan)}


class _Problems(list):
    def add(self, key: str, message: str) -> None:
        self.append((key, message))

    def unknown(self, table: Mapping[str, Any], allowed: set[str], where: str) -> None:
        for key in sorted(set(table) - allowed):
            hint = ", ".join(sorted(allowed))
            self.add(f"{where}.{key}" if where else key, f"unknown key (allowed: {hint})")


def _number(problems: _Problems, key: str, value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        problems.add(key, f"must be a finite number, got {value!r}")
        return None
    return float(value)


def _read_prior(problems: _Problems, key: str, table: Any) -> Prior | None:
    if not isinstance(table, Mapping) or "distribution" not in table:
        problems.add(
            key,
            'must be a table with a "distribution" key, e.g. '
            '{ distribution = "lognormal", median = 1.0, sd_log = 0.5 }',
        )
        return None
    name = table["distribution"]
    if name not in PRIORS:
        problems.add(
            f"{key}.distribution", f"unknown distribution {name!r} (known: {', '.join(PRIORS)})"
        )
        return None
    cls, fields = PRIORS[name]
    args = {k: v for k, v in table.items() if k != "distribution"}
    if set(args) != set(fields):
        problems.add(
            key, f"{name} takes exactly {', '.join(fields)}; got {', '.join(args) or 'nothing'}"
        )
        return None
    checked = {fields[k]: _number(problems, f"{key}.{k}", v) for k, v in args.items()}
    values = {k: v for k, v in checked.items() if v is not None}
    if len(values) < len(checked):
        return None
    prior = cls(**values)
    try:
        prior.scipy()
        ok = math.isfinite(prior.median())
    except (ValueError, ZeroDivisionError):
        ok = False
    scale_like = [v for f, v in values.items() if f not in ("mean", "low", "high", "median_")]
    if (
        not ok
        or any(v <= 0 for v in scale_like)
        or (name == "uniform" and values["low"] >= values["high"])
    ):
        problems.add(key, f"invalid {name} prior {dict(args)}")
        return None
    return prior


def _read_parameter(problems: _Problems, name: str, table: Any) -> ParameterSpec | None:
    key = f"parameters.{name}"
    if name not in CATALOGUE:
        problems.add(key, f"unknown parameter (known: {', '.join(sorted(CATALOGUE))})")
        return None
    if not isinstance(table, Mapping):
        problems.add(key, "must be a table")
        return None
    problems.unknown(table, _PARAM_KEYS, key)
    info = CATALOGUE[name]
    units = UNITS[info.dimension]
    unit = table.get("unit")
    if unit is None:
        problems.add(f"{key}.unit", f"missing unit (one of: {', '.join(units)})")
        return None
    if unit not in units:
        problems.add(
            f"{key}.unit",
            f"unit {unit!r} does not fit a {info.dimension}; use one of: {', '.join(units)}",
        )
        return None
    if not table.get("source"):
        problems.add(f"{key}.source", "missing source: cite where the prior or value comes from")
    has_prior, has_value = "prior" in table, "value" in table
    if has_prior == has_value:
        problems.add(key, "give exactly one of `prior` (to sample it) or `value` (to fix it)")
        return None
    level: Level = table.get("level", "population" if has_prior else "fixed")
    if level not in ("patient", "population", "fixed"):
        problems.add(f"{key}.level", f'must be "patient", "population" or "fixed", got {level!r}')
        return None
    if (level == "fixed") == has_prior:
        problems.add(f"{key}.level", "a fixed parameter takes `value`; a sampled one takes `prior`")
        return None
    low, high = info.domain.bounds
    prior = value = None
    if has_prior:
        prior = _read_prior(problems, f"{key}.prior", table["prior"])
        if prior is not None:
            factor = units[unit]
            lo, hi = prior.support()
            if lo < low / factor or hi > high / factor:
                problems.add(
                    f"{key}.prior",
                    f"{prior.describe()} has support [{lo:g}, {hi:g}] "
                    f"outside the domain of {name} ([{low:g}, {high:g}], "
                    f"{info.domain.name.lower()})",
                )
    else:
        value = _number(problems, f"{key}.value", table["value"])
        if value is not None and not (low <= value * units[unit] <= high):
            problems.add(
                f"{key}.value", f"{value:g} is outside the domain of {name} ([{low:g}, {high:g}])"
            )
    between = 0.0
    if level == "patient":
        if "between_patients" not in table:
            problems.add(
                f"{key}.between_patients",
                "a patient-level parameter needs the between-patient "
                "sd (log scale for positive parameters, logit for probabilities)",
            )
        else:
            between = _number(problems, f"{key}.between_patients", table["between_patients"]) or 0.0
            if between <= 0:
                problems.add(f"{key}.between_patients", "must be > 0")
    elif "between_patients" in table:
        problems.add(
            f"{key}.between_patients", "only patient-level parameters vary between patients"
        )
    return ParameterSpec(
        name,
        unit,
        units[unit],
        level,
        prior,
        value,
        between,
        str(table.get("source", "")),
        str(table.get("description", info.description)),
    )


def _read_scenario(
    problems: _Problems, name: str, table: Any, declared: set[str]
) -> Scenario | None:
    key = f"scenarios.{name}"
    if not isinstance(table, Mapping):
        problems.add(key, "must be a table")
        return None
    problems.unknown(table, _SCENARIO_KEYS, key)
    for required in ("assay", "volume_ml", "follow_up_days", "draw_days"):
        if required not in table:
            problems.add(f"{key}.{required}", "missing")
    if any(k not in table for k in ("assay", "volume_ml", "follow_up_days", "draw_days")):
        return None
    days = table["draw_days"]
    if (
        not isinstance(days, list)
        or not days
        or any(_number(problems, f"{key}.draw_days", d) is None for d in days)
    ):
        problems.add(f"{key}.draw_days", "must be a non-empty list of days")
        return None
    if sorted(days) != days or days[0] < 0:
        problems.add(f"{key}.draw_days", "must be sorted and >= 0")
    plans = []
    for i, t in enumerate(table.get("treatments", [])):
        tkey = f"{key}.treatments[{i}]"
        problems.unknown(t, _TREATMENT_KEYS, tkey)
        kind = t.get("kind")
        if kind not in TREATMENT_KINDS:
            problems.add(
                f"{tkey}.kind", f"must be one of {', '.join(TREATMENT_KINDS)}, got {kind!r}"
            )
            continue
        if EFFECT_PARAMETER[kind] not in declared:
            problems.add(
                f"{tkey}.kind", f"{kind} needs parameter {EFFECT_PARAMETER[kind]!r}, not declared"
            )
        if t.get("dose_interval_days", 0) and "drug_half_life" not in declared:
            problems.add(
                f"{tkey}.dose_interval_days", "dosed treatments need parameter 'drug_half_life'"
            )
        try:
            plan = TreatmentPlan(
                kind=kind,
                **{k: float(v) for k, v in t.items() if k in _TREATMENT_KEYS and k != "kind"},
            )
        except (TypeError, ValueError) as err:
            problems.add(tkey, str(err))
            continue
        if plan.end < plan.start:
            problems.add(f"{tkey}.end", f"end ({plan.end:g}) is before start ({plan.start:g})")
        plans.append(plan)
    surgery = table.get("surgery_day")
    if surgery is not None and "residual_fraction" not in declared:
        problems.add(
            f"{key}.surgery_day", "surgery needs parameter 'residual_fraction', not declared"
        )
    detect = bool(table.get("detect_relapse", False))
    if detect and "detection_burden" not in declared:
        problems.add(f"{key}.detect_relapse", "needs parameter 'detection_burden', not declared")
    progression = table.get("progression_factor")
    if (
        progression is not None
        and (_number(problems, f"{key}.progression_factor", progression) or 0) <= 1
    ):
        problems.add(f"{key}.progression_factor", "must be > 1 (burden relative to baseline)")
    imaging = _read_imaging(problems, key, table)
    return Scenario(
        name=name,
        description=str(table.get("description", "")),
        assay=str(table["assay"]),
        volume_ml=float(table["volume_ml"]),
        follow_up_days=float(table["follow_up_days"]),
        draw_days=tuple(float(d) for d in days),
        draw_jitter_days=float(table.get("draw_jitter_days", 0.0)),
        draw_clock_hour=float(table.get("draw_clock_hour", 9.0)),
        draw_clock_hour_sd=float(table.get("draw_clock_hour_sd", 0.0)),
        treatments=tuple(plans),
        surgery_day=None if surgery is None else float(surgery),
        progression_factor=None if progression is None else float(progression),
        detect_relapse=detect,
        imaging_days=imaging,
        imaging_jitter_days=float(table.get("imaging_jitter_days", 0.0)),
    )


def _read_imaging(problems: _Problems, key: str, table: Mapping[str, Any]) -> tuple[float, ...]:
    """``imaging_days``: days of the scans that assess progression (needs progression_factor)."""
    if "imaging_days" not in table:
        if "imaging_jitter_days" in table:
            problems.add(f"{key}.imaging_jitter_days", "needs imaging_days")
        return ()
    days = table["imaging_days"]
    if (
        not isinstance(days, list)
        or not days
        or any(_number(problems, f"{key}.imaging_days", d) is None for d in days)
    ):
        problems.add(f"{key}.imaging_days", "must be a non-empty list of days")
        return ()
    if sorted(days) != days or days[0] <= 0:
        problems.add(f"{key}.imaging_days", "must be sorted and > 0 (baseline imaging is day 0)")
    if table.get("progression_factor") is None:
        problems.add(f"{key}.imaging_days", "scans assess progression: set progression_factor")
    jitter = table.get("imaging_jitter_days", 0.0)
    if (_number(problems, f"{key}.imaging_jitter_days", jitter) or 0.0) < 0:
        problems.add(f"{key}.imaging_jitter_days", "must be >= 0")
    return tuple(float(d) for d in days)


def parse_spec(text: str, path: Path | str = "<string>") -> ModelSpec:
    """Validate a spec from its TOML text (``path`` is used in messages only)."""
    problems = _Problems()
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SpecError(path, [("(file)", f"not valid TOML: {err}")]) from None
    problems.unknown(doc, {"model", "parameters", "scenarios"}, "")
    model = doc.get("model", {})
    problems.unknown(model, _MODEL_KEYS, "model")
    for key in ("name", "primary_growth"):
        if key not in model:
            problems.add(f"model.{key}", "missing")
    for key in ("primary_growth", "metastatic_growth"):
        if model.get(key, "exponential") not in GROWTH_LAWS:
            problems.add(
                f"model.{key}", f"must be one of {', '.join(GROWTH_LAWS)}, got {model[key]!r}"
            )
    family = model.get("count_family", "poisson")
    if family not in ("poisson", "negbin"):
        problems.add("model.count_family", f'must be "poisson" or "negbin", got {family!r}')

    params = {}
    for name, table in doc.get("parameters", {}).items():
        parsed = _read_parameter(problems, name, table)
        if parsed is not None:
            params[name] = parsed
    declared = set(doc.get("parameters", {}))
    _check_shedding(problems, model, declared)
    required = set(_ALWAYS_REQUIRED)
    if model.get("primary_growth") in ("gompertz", "logistic"):
        required.add("capacity")
    if family == "negbin":
        required.add("dispersion")
    for name in sorted(required - declared):
        problems.add(f"parameters.{name}", "required by this model's structure but not declared")

    scenarios = {}
    for name, table in doc.get("scenarios", {}).items():
        parsed_s = _read_scenario(problems, name, table, declared)
        if parsed_s is not None:
            scenarios[name] = parsed_s
    if "default" not in doc.get("scenarios", {}):
        problems.add("scenarios.default", "every spec needs a default scenario")
    if problems:
        raise SpecError(path, list(problems))
    return ModelSpec(
        path=Path(path),
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        name=str(model["name"]),
        title=str(model.get("title", model["name"])),
        primary_growth=str(model["primary_growth"]),
        metastatic_growth=str(model.get("metastatic_growth", model["primary_growth"])),
        count_family=family,
        parameters=params,
        scenarios=scenarios,
    )


def _check_shedding(problems: _Problems, model: Mapping[str, Any], declared: set[str]) -> None:
    """Shedding per cell per day, or per cell division: one complete pair, not both.

    Per-division shedding needs one division rate for every tumour cell, so exponential growth
    of the primary and the metastases at the same rate (``growth_rate``).
    """
    per_cell = [n for n in SHEDDING_PER_CELL if n in declared]
    per_division = [n for n in SHEDDING_PER_DIVISION if n in declared]
    if per_cell and per_division:
        problems.add(
            f"parameters.{per_division[0]}",
            f"declare shedding per cell ({', '.join(SHEDDING_PER_CELL)}) or per division "
            f"({', '.join(SHEDDING_PER_DIVISION)}), not both",
        )
        return
    for name in SHEDDING_PER_DIVISION if per_division else SHEDDING_PER_CELL:
        if name not in declared:
            problems.add(
                f"parameters.{name}", "required by this model's structure but not declared"
            )
    if not per_division:
        return
    laws = (model.get("primary_growth"), model.get("metastatic_growth", "exponential"))
    if any(law != "exponential" for law in laws):
        problems.add(
            f"parameters.{per_division[0]}",
            "shedding per division needs exponential growth of the primary and the metastases "
            "(the division rate of a Gompertz or logistic tumour depends on its size)",
        )
    if "metastatic_growth_rate" in declared:
        problems.add(
            f"parameters.{per_division[0]}",
            "shedding per division needs one division rate for all tumour cells: remove "
            "metastatic_growth_rate (metastases then grow at growth_rate)",
        )


def models_dir() -> Path:
    """Folder of the bundled specs: ``ctcdyn/models`` in a wheel, ``models/`` in a checkout."""
    packaged = Path(__file__).resolve().parent.parent / "models"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "models"


def bundled_models() -> list[str]:
    return sorted(p.stem for p in models_dir().glob("*.toml"))


def load_spec(name_or_path: str | Path) -> ModelSpec:
    """Read and validate a spec: a bundled model's name (``"mbc"``) or a path to a TOML file."""
    path = Path(name_or_path)
    if not path.suffix:
        candidate = models_dir() / f"{name_or_path}.toml"
        if not candidate.exists():
            raise ValueError(
                f"no bundled model {name_or_path!r}; bundled: {', '.join(bundled_models())} "
                "(or pass the path to a .toml spec)"
            )
        path = candidate
    if not path.exists():
        raise FileNotFoundError(f"model spec {path} does not exist")
    return parse_spec(path.read_text(), path)
