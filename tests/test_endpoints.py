"""The mechanistic endpoint model: simulation and likelihood agree, and bad input is refused.

The survival functions of :class:`ctcdyn.observation.EndpointModel` are checked against the
simulator's endpoints (``ctcdyn.simulate._endpoints``) for one burden path and many patients'
thresholds: with daily assessment the two are the same law, so the empirical survival must match
within binomial error. The likelihood's interval algebra is checked by summing the probability
of every possible record to one.
"""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import ctcdyn
from ctcdyn.data import InputError
from ctcdyn.inference._outcomes import outcome_arrays, outcome_log_likelihood
from ctcdyn.observation import EndpointModel, burden_records
from ctcdyn.simulate._endpoints import endpoint_table

jax.config.update("jax_enable_x64", True)

DAYS = np.arange(0.0, 731.0)


def _log_burden(t, growth=0.015, kill=0.03, resistance=0.015, log_b0=22.33):
    """Log burden of a growing disease under a kill that fades (mbc's form; 22.33 = log 5e9)."""
    t = jnp.asarray(t, float)
    return log_b0 + growth * t - kill / resistance * (1.0 - jnp.exp(-resistance * t))


@pytest.fixture(scope="module")
def spec():
    return ctcdyn.load_spec("mbc")


def _simulate(spec, log_burden, n, key, scans=None):
    plan = dataclasses.replace(spec.scenario("default"), imaging_days=())
    burden = np.broadcast_to(np.exp(log_burden), (n, log_burden.size))
    return endpoint_table(spec, plan, DAYS, np.zeros_like(burden), burden, scans, key=key)


def test_simulated_survival_follows_the_endpoint_model(spec):
    """Death and PFS of 40,000 patients with one burden path (falls, then regrows past the
    lethal burden's range): empirical survival every 10 days within 4 binomial SE (a fixed
    key: the 144 comparisons are the same on every run)."""
    endpoints = EndpointModel.from_spec(spec)
    log_b = _log_burden(DAYS, growth=0.03, kill=0.06, log_b0=math.log(2e11))
    n = 40_000
    table = _simulate(spec, log_b, n, jax.random.key(3))
    record, rise = (np.asarray(x) for x in burden_records(jnp.asarray(log_b)))
    s_death = np.exp(endpoints.log_survival_death(record, DAYS))
    s_prog = np.exp(endpoints.log_survival_progression(rise, DAYS))
    checked = 0
    for day in range(10, 730, 10):
        alive = np.mean(table["os_time"] > day)
        free = np.mean(table["pfs_time"] > day)
        for observed, expected in ((alive, s_death[day]), (free, s_prog[day] * s_death[day])):
            se = math.sqrt(max(expected * (1 - expected), 1 / n) / n)
            assert abs(observed - expected) < 4 * se, (day, observed, expected)
            checked += 0.05 < expected < 0.95
    assert checked >= 8  # the path makes both endpoints uncertain over the checked days


def test_the_endpoint_model_matters_to_the_check(spec):
    """The same comparison fails when the likelihood forgets the other-cause deaths."""
    endpoints = dataclasses.replace(EndpointModel.from_spec(spec), other_death_rate=0.0)
    log_b = _log_burden(DAYS, growth=0.005, log_b0=math.log(1e9))  # far below lethal: other causes
    n = 40_000
    table = _simulate(spec, log_b, n, jax.random.key(4))
    record, _ = burden_records(jnp.asarray(log_b))
    expected = float(np.exp(endpoints.log_survival_death(record, DAYS))[700])
    observed = np.mean(table["os_time"] > 700)
    assert abs(observed - expected) > 4 * math.sqrt(expected * (1 - expected) / n) + 1e-3


def test_the_threshold_law_matters_to_the_check(spec):
    """Normal thresholds of the same SD (written out here with scipy, not taken from the package)
    fail the comparison of the first test: it sees the law's shape, not only its spread."""
    from scipy.stats import norm

    endpoints = EndpointModel.from_spec(spec)
    log_b = _log_burden(DAYS, growth=0.03, kill=0.06, log_b0=math.log(2e11))
    n = 40_000
    table = _simulate(spec, log_b, n, jax.random.key(3))
    record = np.maximum.accumulate(np.asarray(log_b))
    normal = norm.cdf(
        (math.log(endpoints.lethal_burden) - record) / endpoints.lethal_spread
    ) * np.exp(-endpoints.other_death_rate * DAYS)
    z = [
        (np.mean(table["os_time"] > day) - normal[day])
        / math.sqrt(max(normal[day] * (1 - normal[day]), 1 / n) / n)
        for day in range(10, 730, 10)
    ]
    assert np.max(np.abs(z)) > 8


def _records_table(os_rows, pfs_rows):
    rows = [
        {"os_time": o, "os_event": e, "pfs_time": p, "pfs_event": pe, "pfs_last_scan": s}
        for (o, e), (p, pe, s) in zip(os_rows, pfs_rows, strict=True)
    ]
    return pd.DataFrame(rows)


def test_probabilities_of_every_possible_record_sum_to_one(spec):
    """OS: death on day d = 1..T or alive at T; PFS: progression found at scan k or none by the
    last scan. The burden grows, so the records of the path are the same on every row's grid."""
    endpoints = EndpointModel.from_spec(spec)
    horizon = 400
    os_rows = [(d, 1) for d in range(1, horizon + 1)] + [(horizon, 0)]
    scans = [0, 70, 140, 210, 280, 350]
    pfs_rows = [(scans[k], 1, scans[k - 1]) for k in range(1, len(scans))] + [(350, 0, 350)]

    def total(outcome, rows):
        table = _records_table(
            rows if outcome == "os" else [(horizon, 0)] * len(rows),
            rows if outcome == "pfs" else [(1, 0, 0)] * len(rows),
        )
        arrays = outcome_arrays(table, (outcome,))
        log_b = jnp.asarray(_log_burden(arrays.times, growth=0.02, kill=0.0, log_b0=26.0))
        ll = outcome_log_likelihood(endpoints, (outcome,), arrays, log_b)[outcome]
        return float(jnp.sum(jnp.exp(ll)))

    # what is left is S(0): patients whose lethal burden is below B(0), or whose f_i < 1
    alive = float(np.exp(endpoints.log_survival_death(jnp.asarray(26.0), 0.0)))
    assert total("os", os_rows) == pytest.approx(alive, abs=1e-9)
    free = float(np.exp(endpoints.log_survival_progression(jnp.asarray(0.0), 0.0)))
    assert total("pfs", pfs_rows) == pytest.approx(free, abs=1e-9)
    assert alive < 1 - 1e-4 and free < 1 - 1e-5  # so the check sees a lost or doubled interval


def test_the_likelihood_is_finite_for_every_record(spec):
    """A death while the burden falls, or a progression during a response, is unlikely under
    the burden path but possible (other causes): the log-likelihood is finite, its gradient too."""
    endpoints = EndpointModel.from_spec(spec)
    table = _records_table([(50, 1), (730, 0)], [(50, 1, 0), (700, 0, 700)])
    arrays = outcome_arrays(table, ("os", "pfs"))

    def total(kill):
        log_b = _log_burden(arrays.times, kill=kill)
        ll = outcome_log_likelihood(endpoints, ("os", "pfs"), arrays, log_b)
        return sum(jnp.sum(v) for v in ll.values())

    value, grad = jax.value_and_grad(total)(0.05)
    assert np.isfinite(value) and np.isfinite(grad)


def test_outcome_columns_are_validated(spec):
    table = _records_table([(100, 1), (0, 0)], [(120, 1, 50), (80, 1, 80)])
    with pytest.raises(InputError) as err:
        outcome_arrays(table.drop(columns="pfs_last_scan"), ("os", "pfs"), label="p.csv")
    assert "pfs_last_scan" in str(err.value) and "p.csv" in str(err.value)
    with pytest.raises(InputError) as err:
        outcome_arrays(table, ("os", "pfs"), label="p.csv")
    message = str(err.value)
    assert "row 3" in message and "os_time" in message  # os_time 0
    assert "pfs_last_scan" in message  # progression found at the last scan's day
    assert "row 2" in message and "must be <= os_time" in message  # PFS after death


def test_a_spec_without_spreads_cannot_fit_outcomes(spec):
    endpoints = dataclasses.replace(EndpointModel.from_spec(spec), lethal_spread=0.0)
    assert endpoints.fittable("os") and not endpoints.fittable("pfs")
    adjuvant = EndpointModel.from_spec(ctcdyn.load_spec("adjuvant"))
    assert "no os endpoint" in adjuvant.fittable("os")[0]


def test_a_fit_with_outcomes_stores_them_and_gives_survival_curves(tmp_path):
    """``ctcdyn fit --outcomes os,pfs`` end to end at toy sampler settings: the manifest and the
    log-likelihood hold the endpoints, and a report's survival curve starts at the patient's
    last contact (probability 1 there, falling after); a patient whose events have happened
    gets a reason instead of a curve."""
    from typer.testing import CliRunner

    from ctcdyn.cli import app
    from ctcdyn.report import open_fitted
    from ctcdyn.report._survival import NoSurvival, mechanistic_survival

    spec = ctcdyn.load_spec("mbc")
    paths = ctcdyn.simulate_cohort(spec, 8, jax.random.key(12)).write(tmp_path / "cohort")
    patients = pd.read_csv(paths["patients"])
    alive = patients.loc[patients["os_event"] == 0, "patient_id"]
    ended = patients.loc[(patients["os_event"] == 1) & (patients["pfs_event"] == 1), "patient_id"]
    assert len(alive) and len(ended)  # this seed gives both kinds

    base = ["fit", "--model", "mbc", "--draws", str(paths["draws"]), "--patients",
            str(paths["patients"]), "--treatments", str(paths["treatments"])]  # fmt: skip
    runner = CliRunner()
    bad = runner.invoke(app, [*base, "--out", str(tmp_path / "bad"), "--outcomes", "os,rfs"])
    assert bad.exit_code == 2 and "--outcomes" in bad.output
    out = tmp_path / "fit"
    result = runner.invoke(
        app,
        [*base, "--out", str(out), "--outcomes", "os,pfs", "--chains", "1", "--warmup", "40",
         "--samples", "40", "--max-tree-depth", "5", "--seed", "3"],
    )  # fmt: skip
    assert result.exit_code in (0, 1), result.output  # 1: the toy settings fail the gate
    fitted = open_fitted(out)
    assert fitted.manifest["sampler"]["outcomes"] == ["os", "pfs"]
    assert fitted.model.outcomes == ("os", "pfs")
    ll = fitted.tree["log_likelihood"].to_dataset()
    assert ll["os"].dims == ("chain", "draw", "patient") and np.isfinite(ll["pfs"]).all()

    curve = mechanistic_survival(
        fitted, str(alive.iloc[0]), jax.random.key(0), horizon_days=180.0, level=0.9, n_samples=20
    )
    assert not isinstance(curve, NoSurvival) and curve is not None
    progressed = patients.set_index("patient_id").loc[alive.iloc[0], "pfs_event"] == 1
    assert curve.endpoint == ("overall" if progressed else "progression-free") + " survival"
    assert curve.median[0] == pytest.approx(1.0) and curve.median[-1] < 1.0
    assert np.all(np.diff(curve.median) <= 1e-12)
    assert curve.times_days[0] >= 0
    none = mechanistic_survival(
        fitted, str(ended.iloc[0]), jax.random.key(0), horizon_days=180.0, level=0.9, n_samples=20
    )
    assert isinstance(none, NoSurvival) and "have happened" in none.reason

    # the cohort report's risk histogram and its in-sample count of deaths
    from ctcdyn.report._cohort import _death_risk

    risk = _death_risk(fitted)
    assert risk is not None and risk[1]
    assert "expected by the fit" in next(iter(risk[1].values()))
    # ctcdyn predict on such a run: refused for a failed gate, marked with --ignore-gate
    if fitted.status != "passed":
        refused = runner.invoke(app, ["predict", str(out), "--patient", str(alive.iloc[0])])
        assert refused.exit_code == 1 and "--ignore-gate" in refused.output
    curve_file = tmp_path / "curve.json"
    printed = runner.invoke(
        app,
        ["predict", str(out), "--patient", str(alive.iloc[0]), "--horizon", "90",
         "--samples", "50", "--ignore-gate", "--out", str(curve_file)],
    )  # fmt: skip
    assert printed.exit_code == 0, printed.output
    assert "overall survival" in printed.output or "progression-free" in printed.output
    written = json.loads(curve_file.read_text())
    assert (fitted.status == "passed") != ("NOT FOR PATIENT CARE" in written["model"])
    new_draws = runner.invoke(
        app, ["predict", str(out), "--patient", "P0001", "--draws", str(paths["draws"])]
    )
    assert new_draws.exit_code == 2 and "Refit" in new_draws.output
