"""MRD lead time: schedules against imaging relapse (DESIGN.md section 6).

A small, fast-growing test spec (residual clones of 2 cells doubling in a week, relapse at
1000 cells, a test that samples half the blood) keeps the exact jump engine cheap and puts every
probability in mid-range, where the checks have power. All schedules of one comparison are
simulated on the same virtual patients (common random numbers).
"""

import dataclasses
import json
import math

import jax
import numpy as np
import pytest
from scipy import stats

import ctcdyn
from ctcdyn.dynamics import Jump
from ctcdyn.mrd import (
    ImagingSchedule,
    MonitoringSchedule,
    default_engine,
    default_schedule,
    lead_time,
)
from ctcdyn.observation import Assay
from ctcdyn.specs import parse_spec

SPEC = """
[model]
name = "mrdtest"
primary_growth = "exponential"
metastatic_growth = "exponential"

[parameters]
primary_burden0 = {{ unit = "cells", value = 1.0, source = "test" }}
growth_rate = {{ unit = "1/day", value = 0.1, source = "test" }}
metastatic_burden0 = {{ unit = "cells", value = 2.0, source = "test" }}
metastatic_growth_rate = {{ unit = "1/day", value = 0.1, source = "test" }}
death_rate = {{ unit = "1/day", value = 0.1, source = "test: extinction 1/4 from 2 cells" }}
shedding_single = {{ unit = "1/day", value = {shedding}, source = "test" }}
shedding_cluster = {{ unit = "1/day", value = 0.0, source = "test" }}
half_life_single = {{ unit = "min", value = 60.0, source = "test" }}
half_life_cluster = {{ unit = "min", value = 8.0, source = "test" }}
cluster_size = {{ unit = "1", value = 4.0, source = "test" }}
efficiency_single = {{ unit = "1", value = 0.0, source = "test" }}
efficiency_cluster = {{ unit = "1", value = 0.0, source = "test" }}
circadian_amplitude = {{ unit = "1", value = 1.28, source = "Diamantopoulou 2022" }}
circadian_peak_hour = {{ unit = "h", value = 4.0, source = "Diamantopoulou 2022" }}
residual_fraction = {{ unit = "1", value = 0.0, source = "test" }}
detection_burden = {{ unit = "cells", value = 1000.0, source = "test" }}

[scenarios.default]
assay = "cellsearch"
volume_ml = 7.5
follow_up_days = 70.0
draw_days = [0.0, 6.0, 12.0]
surgery_day = 0.0
detect_relapse = true
"""

#: A test with 4e-6 false CTC per mL: 0.01 per 2.5 L draw.
ASSAY = Assay(
    name="mrdtest",
    recovery=0.8,
    recovery_prior=(8.0, 2.0),
    cluster_recovery=0.8,
    cluster_recovery_prior=(1.0, 1.0),
    background_per_ml=4e-6,
    background_prior=(4e-6, 1.0),
    default_volume_ml=2500.0,
)
HORIZON = 70.0
N = 800
BASE = MonitoringSchedule(
    interval_days=6.0, clock_hour=9.0, assay=ASSAY, horizon_days=HORIZON, name="base"
)
SCHEDULES = [
    BASE,
    dataclasses.replace(BASE, interval_days=3.0, name="denser"),
    dataclasses.replace(BASE, clock_hour=4.0, name="night"),
    dataclasses.replace(BASE, volume_ml=5000.0, name="larger"),
]
ENGINE = default_engine()


def _spec(shedding: float = 0.02):
    return parse_spec(SPEC.format(shedding=shedding), "mrdtest.toml")


def _run(spec, schedules, seed, n=N, engine=ENGINE, **options):
    return lead_time(
        spec,
        schedules,
        jax.random.key(seed),
        n_patients=n,
        engine=engine,
        resolution_days=1.0,
        **options,
    )


@pytest.fixture(scope="module")
def result():
    return _run(_spec(), SCHEDULES, 0)


def test_schedule_times_and_validation():
    s = MonitoringSchedule(interval_days=91.0, clock_hour=4.0, horizon_days=365.0)
    np.testing.assert_allclose(s.draw_times(), np.array([91, 182, 273, 364]) + 4.0 / 24.0)
    assert s.volume == 7.5 and s.label == "cellsearch 7.5 mL q91d 04:00 >=1"
    with pytest.raises(ValueError, match="Unknown assay"):
        MonitoringSchedule(assay="nope")
    with pytest.raises(ValueError, match="threshold"):
        MonitoringSchedule(threshold=0)
    with pytest.raises(ValueError, match="clock_hour"):
        MonitoringSchedule(clock_hour=24.0)
    scans = ImagingSchedule(interval_days=90.0)
    np.testing.assert_allclose(
        scans.found_at(np.array([10.0, 90.0, 91.0, np.nan])), [90, 90, 180, np.nan]
    )
    assert ImagingSchedule().found_at(np.array([12.5]))[0] == 12.5


def test_default_schedule_of_the_adjuvant_scenario():
    s = default_schedule(ctcdyn.load_spec("adjuvant"))
    assert (s.interval_days, s.clock_hour, s.volume, s.threshold) == (91.0, 9.0, 7.5, 1)
    assert s.assay_spec.name == "cellsearch" and s.horizon_days == 1825.0
    assert s.draw_times()[0] == pytest.approx(91.375) and len(s.draw_times()) == 20


def test_refuses_deterministic_engine_and_missing_values():
    spec = _spec()
    with pytest.raises(ValueError, match="stochastic"):
        lead_time(spec, BASE, jax.random.key(0), n_patients=2, engine=ctcdyn.FastClearance())
    adjuvant = ctcdyn.load_spec("adjuvant")
    with pytest.raises(ValueError, match="values has no"):
        lead_time(adjuvant, None, jax.random.key(0), n_patients=2, values={})


def test_result_is_labelled_and_consistent(result):
    ds = result.patients
    assert ds.sizes == {"patient": N, "schedule": len(SCHEDULES)}
    assert list(ds["schedule"].values) == [s.label for s in SCHEDULES]
    relapsed = ~np.isnan(ds["relapse_day"].values)
    # Lead times exist only for relapsing patients with a positive test before relapse.
    lead = ds["lead_days"].values
    assert np.all(np.isnan(lead[~relapsed]))
    assert np.all(lead[~np.isnan(lead)] > 0)
    # A true-signal positive is a positive: it can come no earlier than the first positive.
    first, first_true = ds["first_positive_day"].values, ds["first_true_positive_day"].values
    both = ~np.isnan(first_true)
    assert np.all(first[both] <= first_true[both])
    # Cured patients (extinct clone) never relapse; about 1/4 of clones of 2 cells die out
    # when b = 2d (extinction probability (d/b)^2).
    cured = ds["cured"].values
    assert not np.any(cured & relapsed)
    p, se = cured.mean(), math.sqrt(0.25 * 0.75 / N)
    assert abs(p - 0.25) < 4 * se, p
    table = result.summary()
    assert list(table.index) == [s.label for s in SCHEDULES]
    for name in ("p_detect_before_imaging", "median_lead_days", "false_positives_per_year"):
        assert np.all(np.isfinite(table[name])) and np.all(table[f"{name}_se"] > 0)
    assert set(result.to_dataset().data_vars) >= {"p_detect_before_imaging", "median_lead_days"}


def _detected(result, name):
    ds = result.patients.sel(schedule=name)
    return ~np.isnan(ds["lead_days"].values[~np.isnan(ds["relapse_day"].values)])


def test_denser_draws_never_lower_detection(result):
    # Draws every 3 days include every draw of the 6-day schedule with the same counts, so
    # per patient the denser schedule detects whenever the sparser one does.
    base, denser = _detected(result, "base"), _detected(result, "denser")
    assert np.all(denser >= base)
    assert denser.mean() > base.mean()


@pytest.mark.parametrize("better", ["night", "larger"])
def test_night_draws_and_larger_volume_raise_detection(result, better):
    # Paired over the same patients: the difference must exceed 3 SE of a paired proportion.
    base, other = _detected(result, "base"), _detected(result, better)
    diff = other.astype(float) - base.astype(float)
    se = diff.std(ddof=1) / math.sqrt(diff.size)
    assert diff.mean() > 3 * se, (diff.mean(), se)


def test_false_positives_among_cured_match_the_assay_background(result):
    # A cured patient has no CTC: each test is positive with P(Poisson(b v) >= 1).
    table = result.summary()
    for s in SCHEDULES:
        per_test = 1.0 - math.exp(-ASSAY.background_per_ml * s.volume)
        expected = len(s.draw_times()) * per_test / (HORIZON / 365.25)
        row = table.loc[s.label]
        z = (row["false_positives_per_year"] - expected) / row["false_positives_per_year_se"]
        assert abs(z) < 4, (s.label, row["false_positives_per_year"], expected)


def test_zero_shedding_never_detects():
    blank = dataclasses.replace(ASSAY, background_per_ml=0.0)
    schedules = [dataclasses.replace(s, assay=blank) for s in SCHEDULES]
    res = _run(_spec(shedding=0.0), schedules, 1)
    assert int(res.patients["n_positive"].sum()) == 0
    table = res.summary()
    assert np.all(table["p_detect_before_imaging"] == 0.0)
    assert np.all(table["n_relapsed"] > 0)  # relapses still happen, unseen by the test


def test_mc_errors_match_replicate_spread_and_shrink_as_root_n(result):
    # Split the patients into k independent replicates of m: the spread of the replicate
    # estimates must match the reported SE (chi-square test on the variance), and the SE of
    # the whole (n = k m) must be about 1/sqrt(k) of a replicate's.
    k, m = 20, N // 20
    parts = [result.select(slice(i * m, (i + 1) * m)).summary().loc["base"] for i in range(k)]
    whole = result.summary().loc["base"]
    for name in ("p_relapse", "p_detect_before_imaging", "mean_lead_days"):
        estimates = np.array([p[name] for p in parts])
        reported = np.sqrt(np.mean([p[f"{name}_se"] ** 2 for p in parts]))
        statistic = (k - 1) * estimates.var(ddof=1) / reported**2
        p_value = 2 * min(stats.chi2.cdf(statistic, k - 1), stats.chi2.sf(statistic, k - 1))
        assert p_value > 1e-3, (name, estimates.std(ddof=1), reported)
        assert 0.5 / math.sqrt(k) < whole[f"{name}_se"] / reported < 2.0 / math.sqrt(k)
    # The distribution-free SE of the median shrinks the same way.
    quarter = result.select(slice(0, N // 4)).summary().loc["base", "median_lead_days_se"]
    assert 0.3 < whole["median_lead_days_se"] / quarter < 0.75


def test_exact_jump_and_hybrid_engines_agree():
    # Residual clones of 2 cells to relapse at 1000: the exact engine tracks every cell and
    # every CTC; the default hybrid switches at 20 cells (drawing the rest of the branching
    # noise at once), is deterministic above and draws CTCs as Poisson.
    spec = _spec()
    n = 400
    exact = _run(spec, SCHEDULES, 2, n=n, engine=Jump(max_events=200_000))
    hybrid = _run(spec, SCHEDULES, 3, n=n)
    a, b = exact.summary().loc["base"], hybrid.summary().loc["base"]
    for name in ("p_relapse", "p_detect_before_imaging", "mean_lead_days"):
        z = (a[name] - b[name]) / math.hypot(a[f"{name}_se"], b[f"{name}_se"])
        assert abs(z) < 4, (name, a[name], b[name])
    lead_a = exact.patients["lead_days"].sel(schedule="base").values
    lead_b = hybrid.patients["lead_days"].sel(schedule="base").values
    ks = stats.ks_2samp(lead_a[~np.isnan(lead_a)], lead_b[~np.isnan(lead_b)])
    assert ks.pvalue > 1e-3, ks


def test_same_key_same_result_whatever_the_chunking(result):
    # Chunks of 400 instead of 512 + 288 (the shape the engine comparison compiled).
    again = _run(_spec(), SCHEDULES, 0, chunk_size=400)
    for name in ("relapse_day", "first_positive_day", "n_positive"):
        np.testing.assert_array_equal(again.patients[name], result.patients[name])


@pytest.mark.slow
def test_adjuvant_default_schedule_median_lead_time_is_seven_to_nine_weeks():
    """The review: CTCs detectable 7-9 weeks before clinical manifestation of relapse.

    Schedule (``default_schedule(adjuvant)``): CellSearch, 7.5 mL, 09:00, every 91 days from
    day 91 to day 1825, positive at >= 1 CTC; relapse found when the metastatic burden
    reaches 1e9 cells (continuous surveillance, clinical manifestation); typical population.
    The lead time compared is that of the first positive test holding a tumour CTC (the first
    positive of any origin is dominated by assay background; docs/mrd.md). Passes when the
    95% interval of the median overlaps 7-9 weeks. No parameter of the spec was fitted to
    this band (docs/mrd.md, "Calibration"); the model's median sits near its upper edge
    (8.7-9.1 weeks over five runs of 8000), so a change that lengthens lead times by a week
    fails here.
    """
    spec = ctcdyn.load_spec("adjuvant")
    res = lead_time(spec, None, jax.random.key(2024), n_patients=8000)
    row = res.summary().iloc[0]
    weeks = row["median_true_lead_days"] / 7.0
    se = row["median_true_lead_days_se"] / 7.0
    assert 7.0 - 1.96 * se <= weeks <= 9.0 + 1.96 * se, (weeks, se)


def test_cli_compare_prints_json_and_writes_the_figure(tmp_path):
    from typer.testing import CliRunner

    from ctcdyn.cli import app

    spec = tmp_path / "mrdtest.toml"
    spec.write_text(SPEC.format(shedding=0.02))
    figure = tmp_path / "compare.png"
    args = ["leadtime", "--model", str(spec), "--n", "16", "--seed", "3", "--volume", "2500"]
    compare = ["--compare", "name=morning,hour=9", "--compare", "name=night,hour=4"]
    result = CliRunner().invoke(app, [*args, *compare, "--plot", str(figure), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [s["schedule"] for s in payload["schedules"]] == ["morning", "night"]
    night = payload["schedules"][1]
    assert night["settings"]["clock_hour"] == 4.0 and night["settings"]["volume_ml"] == 2500.0
    assert {"p_detect_before_imaging", "p_detect_before_imaging_se"} <= set(night["estimates"])
    assert figure.stat().st_size > 0
    bad = CliRunner().invoke(app, [*args, "--compare", "hour"])
    assert bad.exit_code == 2 and "key=value" in bad.output


def test_posterior_values_resample_one_patients_draws():
    import xarray as xr

    from ctcdyn.mrd._posterior import posterior_values

    spec = ctcdyn.load_spec("adjuvant")
    chains, draws, patients = 2, 50, ["A", "B"]
    rng = np.random.default_rng(0)
    data = {}
    for name in spec.sampled:
        if spec.parameters[name].level == "patient":
            # Patient B's draws are 1000x patient A's: a wrong selection cannot go unseen.
            x = rng.uniform(1.0, 2.0, (chains, draws, 1)) * np.array([1.0, 1000.0])
            data[name] = (("chain", "draw", "patient"), x)
        elif name != "recovery":
            data[name] = (("chain", "draw"), rng.uniform(0.1, 0.2, (chains, draws)))
    posterior = xr.Dataset(data, coords={"patient": patients})
    values = posterior_values(
        spec, posterior, "B", 300, jax.random.key(0), population={"recovery": 0.5}
    )
    assert set(values) == set(spec.sampled)
    assert all(v.shape == (300,) for v in values.values())
    b = posterior["metastatic_burden0"].sel(patient="B").values.ravel()
    assert np.isin(values["metastatic_burden0"], b).all()
    assert np.all(values["recovery"] == 0.5)  # held fixed by the fit, not in the posterior
    with pytest.raises(ValueError, match="no patient 'C'"):
        posterior_values(spec, posterior, "C", 3, jax.random.key(0))


def test_cli_writes_a_monitoring_suggestion_the_report_reads(tmp_path):
    from typer.testing import CliRunner

    from ctcdyn.cli import app
    from ctcdyn.report import MonitoringSuggestion

    spec = tmp_path / "mrdtest.toml"
    spec.write_text(SPEC.format(shedding=0.02))
    out = tmp_path / "suggestion.json"
    args = ["leadtime", "--model", str(spec), "--n", "64", "--seed", "3", "--volume", "2500"]
    compare = ["--compare", "name=night,hour=4", "--compare", "name=morning,hour=9"]
    result = CliRunner().invoke(app, [*args, *compare, "--suggestion", str(out)])
    assert result.exit_code == 0, result.output
    suggestion = MonitoringSuggestion.from_dict(json.loads(out.read_text()))
    assert suggestion.schedule.startswith("2500 mL") and "at 04:00" in suggestion.schedule
    assert "morning: P(positive before imaging)" in suggestion.rationale
    assert suggestion.lead_time_days_lower <= suggestion.lead_time_days_median
    assert 0.0 < suggestion.p_positive_before_imaging <= 1.0
