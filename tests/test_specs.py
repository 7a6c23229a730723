"""Model specs: bundled specs are valid; bad specs are rejected naming the file and key."""

import math
import textwrap

import pytest

from ctcdyn.dynamics import Treatments
from ctcdyn.specs import (
    CATALOGUE,
    UNITS,
    LogNormal,
    SpecError,
    build_model,
    bundled_models,
    load_spec,
    parse_spec,
)

MINIMAL = textwrap.dedent(
    """
    [model]
    name = "tiny"
    primary_growth = "exponential"

    [parameters.primary_burden0]
    unit = "g"
    value = 1.0
    source = "test"
    [parameters.growth_rate]
    unit = "1/day"
    prior = { distribution = "lognormal", median = 0.01, sd_log = 0.5 }
    level = "patient"
    between_patients = 0.3
    source = "test"
    [parameters.shedding_single]
    unit = "1/day"
    value = 1e-6
    source = "test"
    [parameters.shedding_cluster]
    unit = "1/day"
    value = 1e-8
    source = "test"
    [parameters.half_life_single]
    unit = "min"
    prior = { distribution = "lognormal", median = 60.0, sd_log = 0.5 }
    source = "test"
    [parameters.half_life_cluster]
    unit = "h"
    value = 0.25
    source = "test"
    [parameters.cluster_size]
    unit = "1"
    value = 4.0
    source = "test"
    [parameters.efficiency_single]
    unit = "1"
    value = 1e-4
    source = "test"
    [parameters.efficiency_cluster]
    unit = "1"
    prior = { distribution = "beta", a = 1.0, b = 300.0 }
    source = "test"
    [parameters.circadian_amplitude]
    unit = "1"
    value = 1.0
    source = "test"
    [parameters.circadian_peak_hour]
    unit = "h"
    value = 4.0
    source = "test"

    [scenarios.default]
    assay = "cellsearch"
    volume_ml = 7.5
    follow_up_days = 100.0
    draw_days = [0.0, 30.0]
    """
)


def test_minimal_spec_parses():
    spec = parse_spec(MINIMAL, "tiny.toml")
    assert spec.sampled == ["growth_rate", "half_life_single", "efficiency_cluster"]
    assert spec.parameters["growth_rate"].level == "patient"
    assert spec.parameters["half_life_single"].level == "population"
    assert spec.parameters["cluster_size"].level == "fixed"


@pytest.mark.parametrize("name", bundled_models())
def test_bundled_specs_are_valid_and_cite_sources(name):
    spec = load_spec(name)
    assert spec.name == name
    assert "default" in spec.scenarios
    for p in spec.parameters.values():
        assert p.unit in UNITS[CATALOGUE[p.name].dimension]
        assert len(p.source) > 10, f"{name}.{p.name} needs a real source"


def test_bundled_models_include_mbc_and_adjuvant():
    assert {"mbc", "adjuvant"} <= set(bundled_models())


def _broken(old: str, new: str) -> str:
    assert old in MINIMAL, old
    return MINIMAL.replace(old, new, 1)


BAD_SPECS = [
    # (what is wrong, edit to MINIMAL, key that the message must name, words it must contain)
    ("unknown top-level key", ("[model]", "colour = 1\n[model]"), "colour", "unknown key"),
    (
        "unknown model key",
        ('name = "tiny"', 'name = "tiny"\nsolver = "x"'),
        "model.solver",
        "unknown",
    ),
    (
        "unknown parameter",
        (
            "[parameters.cluster_size]",
            '[parameters.mass]\nunit="g"\nvalue=1.0\nsource="x"\n[parameters.cluster_size]',
        ),
        "parameters.mass",
        "unknown parameter",
    ),
    (
        "unknown key in a parameter",
        ('unit = "1/day"\nvalue = 1e-6', 'unit = "1/day"\nvalue = 1e-6\nmedian = 3'),
        "parameters.shedding_single.median",
        "unknown key",
    ),
    (
        "missing unit",
        ('unit = "1/day"\nvalue = 1e-6\n', "value = 1e-6\n"),
        "parameters.shedding_single.unit",
        "missing unit",
    ),
    (
        "unit of the wrong dimension",
        ('unit = "min"', 'unit = "cells"'),
        "parameters.half_life_single.unit",
        "does not fit",
    ),
    (
        "normal prior on a positive parameter",
        (
            '{ distribution = "lognormal", median = 0.01, sd_log = 0.5 }',
            '{ distribution = "normal", mean = 0.01, sd = 0.5 }',
        ),
        "parameters.growth_rate.prior",
        "outside the domain",
    ),
    (
        "lognormal prior on a probability",
        (
            '{ distribution = "beta", a = 1.0, b = 300.0 }',
            '{ distribution = "lognormal", median = 0.01, sd_log = 1.0 }',
        ),
        "parameters.efficiency_cluster.prior",
        "outside the domain",
    ),
    (
        "fixed value outside the domain",
        ("value = 1e-4", "value = 1.5"),
        "parameters.efficiency_single.value",
        "outside the domain",
    ),
    (
        "unknown distribution",
        (
            '{ distribution = "beta", a = 1.0, b = 300.0 }',
            '{ distribution = "cauchy", a = 1.0, b = 300.0 }',
        ),
        "parameters.efficiency_cluster.prior.distribution",
        "unknown distribution",
    ),
    (
        "wrong prior arguments",
        ('{ distribution = "beta", a = 1.0, b = 300.0 }', '{ distribution = "beta", a = 1.0 }'),
        "parameters.efficiency_cluster.prior",
        "takes exactly",
    ),
    (
        "negative prior scale",
        ("sd_log = 0.5 }\nlevel", "sd_log = -0.5 }\nlevel"),
        "parameters.growth_rate.prior",
        "invalid lognormal",
    ),
    (
        "missing source",
        ('source = "test"\n[parameters.cluster_size]', "\n[parameters.cluster_size]"),
        "parameters.half_life_cluster.source",
        "missing source",
    ),
    (
        "patient level without spread",
        ("between_patients = 0.3\n", ""),
        "parameters.growth_rate.between_patients",
        "between-patient",
    ),
    (
        "required parameter missing",
        ('[parameters.cluster_size]\nunit = "1"\nvalue = 4.0\nsource = "test"\n', ""),
        "parameters.cluster_size",
        "required",
    ),
    (
        "bad growth law",
        ('primary_growth = "exponential"', 'primary_growth = "linear"'),
        "model.primary_growth",
        "must be one of",
    ),
    (
        "unsorted draw days",
        ("draw_days = [0.0, 30.0]", "draw_days = [30.0, 0.0]"),
        "scenarios.default.draw_days",
        "sorted",
    ),
    (
        "treatment needing an undeclared parameter",
        (
            "draw_days = [0.0, 30.0]",
            "draw_days = [0.0, 30.0]\n"
            'treatments = [{ kind = "cytotoxic", start = 0.0, end = 10.0 }]',
        ),
        "scenarios.default.treatments[0].kind",
        "kill_rate",
    ),
    (
        "no default scenario",
        ("[scenarios.default]", "[scenarios.other]"),
        "scenarios.default",
        "default scenario",
    ),
]


@pytest.mark.parametrize(("what", "edit", "key", "words"), BAD_SPECS, ids=[b[0] for b in BAD_SPECS])
def test_bad_spec_is_rejected_with_file_and_key(what, edit, key, words):
    with pytest.raises(SpecError) as info:
        parse_spec(_broken(*edit), "bad.toml")
    message = str(info.value)
    matching = [p for p in info.value.problems if f"bad.toml: {key}:" in p]
    assert matching, f"{what}: no problem names {key!r} in:\n{message}"
    assert any(words in p for p in matching), f"{what}: {words!r} not in {matching}"


def test_all_problems_reported_at_once():
    text = _broken('unit = "min"', 'unit = "cells"').replace("value = 1e-4", "value = 2.0")
    with pytest.raises(SpecError) as info:
        parse_spec(text, "two.toml")
    assert len(info.value.problems) == 2


def test_invalid_toml_names_the_file():
    with pytest.raises(SpecError, match=r"broken\.toml: \(file\): not valid TOML"):
        parse_spec("[model\nname=", "broken.toml")


def test_unknown_bundled_model_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"bundled: .*mbc"):
        load_spec("no_such_model")


def test_units_are_converted_once_to_days_and_cells():
    spec = parse_spec(MINIMAL, "tiny.toml")
    values = {"growth_rate": 0.02, "half_life_single": 90.0, "efficiency_cluster": 0.01}
    model = build_model(spec, values, Treatments.none())
    assert math.isclose(float(model.half_life_single), 90.0 / 1440.0)
    assert math.isclose(float(model.half_life_cluster), 0.25 / 24.0)
    assert math.isclose(float(model.primary0), 1e9)  # 1 g
    assert math.isclose(float(model.primary_growth.per_capita_rate(1.0)), 0.02)


def test_prior_rescaling_moves_the_median():
    prior = LogNormal(median_=60.0, sd_log=0.5)
    assert math.isclose(prior.scaled(1 / 1440).median(), 60.0 / 1440)
    assert prior.scaled(2.0).sd_log == prior.sd_log


def test_build_model_refuses_missing_or_unknown_values():
    spec = parse_spec(MINIMAL, "tiny.toml")
    with pytest.raises(ValueError, match="missing for sampled parameters: efficiency_cluster"):
        build_model(spec, {"growth_rate": 0.02, "half_life_single": 60.0}, Treatments.none())
    full = {"growth_rate": 0.02, "half_life_single": 60.0, "efficiency_cluster": 0.01, "mass": 1.0}
    with pytest.raises(ValueError, match="undeclared parameters: mass"):
        build_model(spec, full, Treatments.none())
