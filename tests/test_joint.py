"""Joint longitudinal–survival models (statistical link): quadrature, baselines, formulas,
likelihood against independent integrals, input validation, and parameter recovery."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import integrate
from scipy.interpolate import BSpline
from typer.testing import CliRunner

from ctcdyn.cli import app
from ctcdyn.data import InputError
from ctcdyn.prognosis import (
    BSplineHazard,
    JointSpec,
    JointTruth,
    MarkerFormulas,
    PiecewiseHazard,
    WeibullHazard,
    gauss_legendre,
    joint_data,
    joint_model,
    simulate_joint,
)

runner = CliRunner()


# --- quadrature and baseline hazards ---------------------------------------------------------


def test_gauss_legendre_is_exact_for_polynomials_of_degree_2n_minus_1():
    nodes, weights = gauss_legendre(np.array([0.5, -1.0]), np.array([3.0, 2.0]), 4)
    for degree in range(8):
        got = np.sum(weights * nodes**degree, axis=-1)
        want = (np.array([3.0, 2.0]) ** (degree + 1) - np.array([0.5, -1.0]) ** (degree + 1)) / (
            degree + 1
        )
        np.testing.assert_allclose(got, want, rtol=1e-12)
    _, w = gauss_legendre(np.array([2.0]), np.array([2.0]))
    assert np.all(w == 0.0)  # an empty interval contributes nothing


def test_bspline_basis_is_a_partition_of_unity_and_held_beyond_the_last_knot():
    h = BSplineHazard(segments=5, degree=3).place(
        np.array([1.0, 4.0, 8.0]), np.ones(3), np.zeros(3)
    )
    t = np.linspace(0.0, 8.0, 57)
    np.testing.assert_allclose(h.features(t).sum(axis=-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(h.features(np.array([9.0, 30.0])), h.features(np.array([8.0, 8.0])))
    assert h.features(np.zeros((2, 0))).shape == (2, 0, h.n_basis)


def test_piecewise_features_pick_the_piece_holding_each_time():
    h = PiecewiseHazard(cuts=(1.0, 3.0))
    np.testing.assert_array_equal(
        h.features(np.array([0.2, 1.0, 2.9, 3.5])).argmax(-1), [0, 1, 1, 2]
    )


# --- formulas evaluated at any time ---------------------------------------------------------


def _tables():
    draws = pd.DataFrame(
        {
            "patient_id": ["a", "a", "a", "b", "b", "c"],
            "time": [0.0, 1.0, 2.0, 0.0, 1.5, 0.0],
            "y": [0.1, 0.5, 0.9, -0.3, 0.2, 1.0],
            "sex": ["f", "f", "f", "m", "m", "f"],
        }
    )
    patients = pd.DataFrame(
        {
            "patient_id": ["a", "b", "c"],
            "sex": ["f", "m", "f"],
            "age": [50.0, 61.0, 70.0],
            "event_time": [2.5, 3.0, 1.2],
            "event": [1, 0, 1],
            "entry": [0.0, 0.5, 0.0],
            "upper": [np.nan, np.nan, 2.0],
        }
    )
    return draws, patients


def test_association_designs_give_value_slope_and_area_of_the_trajectory():
    draws, patients = _tables()
    f = MarkerFormulas("y", "y ~ sex * time + I(time**2)", "~ time", "~ sex")
    design = f.build(draws, patients)
    assert design.fixed_names == ("Intercept", "sex[T.m]", "time", "I(time ** 2)", "sex[T.m]:time")
    beta = np.array([0.3, -0.2, 0.5, 0.1, 0.4])
    b = np.array([[0.2, -0.1], [0.0, 0.3], [-0.4, 0.05]])
    t = np.array([[0.5, 2.0], [1.0, 3.0], [0.7, 0.9]])
    male = np.array([0.0, 1.0, 0.0])[:, None]

    def m(tt):
        return 0.3 - 0.2 * male + (0.5 + 0.4 * male) * tt + 0.1 * tt**2 + b[:, :1] + b[:, 1:] * tt

    def combine(form):
        x, z = design.association(patients, t, form)
        return x @ beta + np.sum(z * b[:, None, :], axis=-1)

    np.testing.assert_allclose(combine("value"), m(t), rtol=1e-12)
    slope = 0.5 + 0.4 * male + 0.2 * t + b[:, 1:]
    np.testing.assert_allclose(combine("slope"), slope, rtol=1e-6)
    area = (0.3 - 0.2 * male + b[:, :1]) * t + (0.5 + 0.4 * male + b[:, 1:]) * t**2 / 2
    area += 0.1 * t**3 / 3
    np.testing.assert_allclose(combine("area"), area, rtol=1e-10)
    assert design.surv_names == ("sex[T.m]",)
    np.testing.assert_array_equal(design.surv_matrix(patients)[:, 0], [0.0, 1.0, 0.0])


# --- the likelihood against independent integrals -------------------------------------------


def _reference_event_log_lik(spec, data, p):
    """Follow-up log-likelihood by adaptive quadrature (scipy) of a hazard written out by hand
    for the trajectory m(t) = b0 + b_sex male + b_t t + u0 + u1 t (no formulaic, no features)."""
    beta, u = np.asarray(p["beta"]), np.asarray(p["b"])
    base = data.spec.baseline
    if isinstance(base, WeibullHazard):
        k, lam = float(p["weibull_shape"]), float(p["weibull_intercept"])

        def log_h0(t):
            return np.log(k) + (k - 1.0) * np.log(t) + lam
    elif isinstance(base, PiecewiseHazard):
        levels = np.asarray(p["log_hazard_piece"])

        def log_h0(t):
            return levels[np.searchsorted(base.cuts, t, side="right")]
    else:
        knots = np.r_[
            np.zeros(base.degree),
            np.linspace(0, base.upper, base.segments + 1),
            np.full(base.degree, base.upper),
        ]
        spline = BSpline(knots, np.asarray(p["spline_coef"]), base.degree)

        def log_h0(t):
            return float(spline(min(t, base.upper)))

    out = []
    for i, row in data.patients.iterrows():
        male = float(row["sex"] == "m")
        level = beta[0] + beta[1] * male + u[i, 0]
        slope = beta[2] + u[i, 1]
        forms = {
            "value": lambda t, a=level, b=slope: a + b * t,
            "slope": lambda t, b=slope: b,
            "area": lambda t, a=level, b=slope: a * t + b * t**2 / 2,
        }
        w = float(p["gamma"][0]) * row["age"]

        def log_h(t, w=w, forms=forms):
            linked = sum(float(p["alpha"][k]) * forms[f](t) for k, f in enumerate(spec.assoc))
            return log_h0(t) + w + linked

        def cum(lo, hi, log_h=log_h):
            inside = [c for c in base.breaks() if lo < c < hi] or None
            f = lambda s: np.exp(log_h(s))  # noqa: E731
            return integrate.quad(f, lo, hi, points=inside, epsabs=0, epsrel=1e-11)[0]

        entry, lower = row["_entry"], row["event_time"]
        if np.isfinite(row["_upper"]):
            upper = row["_upper"]
            out.append(-cum(entry, lower) + np.log(-np.expm1(-cum(lower, upper))))
        else:
            out.append(row["event"] * log_h(lower) - cum(entry, lower))
    return np.array(out)


@pytest.mark.parametrize(
    ("baseline", "assoc", "rtol"),
    [
        (WeibullHazard(), ("value",), 1e-4),
        (WeibullHazard(), ("slope", "area"), 1e-4),
        (BSplineHazard(segments=3, degree=2), ("value", "slope"), 1e-3),
        # jumps of the baseline are quadrature breaks: exact to rounding
        (PiecewiseHazard(cuts=(0.8, 1.7)), ("value", "area"), 1e-6),
    ],
)
def test_event_log_lik_matches_adaptive_quadrature(baseline, assoc, rtol):
    # right censoring, left truncation (patient b enters at 0.5) and an interval-censored
    # event (patient c: in (1.2, 2.0]) in one cohort
    draws, patients = _tables()
    spec = JointSpec(
        MarkerFormulas("y", "y ~ sex + time", "~ time", "~ age"),
        entry="entry",
        event_upper="upper",
        assoc=assoc,
        baseline=baseline,
    )
    data = joint_data(spec, draws, patients)
    model = joint_model(data)
    p = {
        "beta": jnp.array([0.2, -0.3, 0.4]),
        "b": jnp.array([[0.1, 0.2], [-0.2, 0.1], [0.3, -0.1]]),
        "gamma": jnp.array([[0.01]]),  # (causes, terms)
        "alpha": jnp.array([[0.7, -0.3][: len(assoc)]]),  # (causes, forms)
    }
    if isinstance(baseline, WeibullHazard):
        base = {"weibull_shape": jnp.array([1.3]), "weibull_intercept": jnp.array([-2.0])}
    elif isinstance(baseline, PiecewiseHazard):
        base = {"log_hazard_piece": jnp.array([[-2.0, -1.2, -2.5]])}
    else:
        base = {"spline_coef": jnp.linspace(-2.5, -1.0, data.spec.baseline.n_basis)[None]}
    arrays = jax.tree.map(jnp.asarray, data.arrays)
    got = np.asarray(model.event_log_lik(arrays, p | {"baseline": base}))
    flat = p | {"gamma": p["gamma"][0], "alpha": p["alpha"][0]}
    want = _reference_event_log_lik(data.spec, data, flat | {k: v[0] for k, v in base.items()})
    np.testing.assert_allclose(got, want, rtol=rtol)


def test_competing_risks_add_cause_specific_hazards():
    # patient a dies of cause 1 at 2.5, c of cause 2 at 1.2, b is censored at 3.0 (entry 0.5):
    # log L = log h_cause(T) - sum over causes of the cumulative hazards
    draws, patients = _tables()
    patients = patients.assign(event=[1, 0, 2])
    spec = JointSpec(
        MarkerFormulas("y", "y ~ sex + time", "~ time", "~ age"),
        entry="entry",
        causes=2,
        baseline=WeibullHazard(),
    )
    data = joint_data(spec, draws, patients)
    model = joint_model(data)
    common = {
        "beta": jnp.array([0.2, -0.3, 0.4]),
        "b": jnp.array([[0.1, 0.2], [-0.2, 0.1], [0.3, -0.1]]),
    }
    causes = [
        {"gamma": 0.01, "alpha": 0.7, "weibull_shape": 1.3, "weibull_intercept": -2.0},
        {"gamma": -0.02, "alpha": -0.4, "weibull_shape": 0.9, "weibull_intercept": -1.0},
    ]
    p = common | {
        "gamma": jnp.array([[c["gamma"]] for c in causes]),
        "alpha": jnp.array([[c["alpha"]] for c in causes]),
        "baseline": {
            k: jnp.array([c[k] for c in causes]) for k in ("weibull_shape", "weibull_intercept")
        },
    }
    got = np.asarray(model.event_log_lik(jax.tree.map(jnp.asarray, data.arrays), p))
    one = dataclasses.replace(spec, causes=1)
    parts = []
    for k, c in enumerate(causes, start=1):
        single = patients.assign(event=(patients["event"] == k).astype(int))
        ref = {**common, "gamma": [c["gamma"]], "alpha": [c["alpha"]]}
        ref |= {"weibull_shape": c["weibull_shape"], "weibull_intercept": c["weibull_intercept"]}
        parts.append(_reference_event_log_lik(one, joint_data(one, draws, single), ref))
    np.testing.assert_allclose(got, parts[0] + parts[1], rtol=1e-4)
    with pytest.raises(InputError, match=r"must be 0 or a cause 1\.\.2"):
        joint_data(spec, draws, patients.assign(event=[3, 0, 1]))


# --- input validation -----------------------------------------------------------------------


def test_bad_tables_name_file_row_and_column():
    draws, patients = _tables()
    draws.loc[4, "time"] = 3.5  # after patient b's censoring at 3.0
    draws.loc[1, "sex"] = "m"  # varies within patient a
    patients.loc[0, "event"] = 2
    spec = JointSpec(MarkerFormulas("y", "y ~ sex + time", "~ 1", "~ age"))
    with pytest.raises(InputError) as err:
        joint_data(spec, draws, patients, labels={"draws": "long.csv", "patients": "p.csv"})
    assert "p.csv, row 2, column 'event': must be 0 or 1" in str(err.value)
    patients.loc[0, "event"] = 1
    with pytest.raises(InputError) as err:
        joint_data(spec, draws, patients, labels={"draws": "long.csv", "patients": "p.csv"})
    text = str(err.value)
    assert "long.csv, row 3, column 'sex': covariates of the marker formulas" in text, text
    assert "long.csv, row 6, column 'time': draw after the patient's event" in text
    with pytest.raises(InputError, match="column 'weight': column of the marker formulas"):
        joint_data(JointSpec(MarkerFormulas("y", "y ~ weight")), draws, patients)
    with pytest.raises(ValueError, match="not the marker column"):
        MarkerFormulas("y", "z ~ time")


# --- simulation, recovery, and the command line ---------------------------------------------

TRUTH = JointTruth()


@pytest.fixture(scope="module")
def recovery_run(tmp_path_factory):
    """One CLI fit of a simulated cohort with known parameters (Weibull baseline)."""
    folder = tmp_path_factory.mktemp("joint")
    draws, patients = simulate_joint(jax.random.key(11), TRUTH, 250, follow_up=10.0)
    draws.to_csv(folder / "long.csv", index=False)
    patients.to_csv(folder / "patients.csv", index=False)
    result = runner.invoke(
        app,
        [
            "fit",
            "--draws", str(folder / "long.csv"),
            "--patients", str(folder / "patients.csv"),
            "--marker", "y",
            "--family", "gaussian",
            "--fixed", "y ~ time + x",
            "--random", "~ time",
            "--surv", "~ x",
            "--event-time", "event_time",
            "--event", "event",
            "--assoc", "value",
            "--baseline", "weibull",
            "--chains", "4",
            "--warmup", "400",
            "--samples", "400",
            "--out", str(folder / "run"),
        ],
    )  # fmt: skip
    return folder, result, patients


def test_cli_fit_writes_a_joint_run_with_alpha_in_the_summary(recovery_run):
    folder, result, patients = recovery_run
    assert result.exit_code == 0, result.output
    assert "alpha" in result.output
    summary = pd.read_csv(folder / "run" / "summary.csv")
    names = set(summary["parameter"])
    assert {"alpha", "gamma[x]", "weibull_shape", "weibull_intercept", "sigma"} <= names
    assert {"beta[Intercept]", "beta[time]", "beta[x]", "b_corr[Intercept:time]"} <= names
    assert f"b[{patients['patient_id'][0]},Intercept]" in names
    manifest = json.loads((folder / "run" / "manifest.json").read_text())
    assert manifest["model"] == "joint"
    assert manifest["status"] in ("passed", "failed_gate")
    assert json.loads(manifest["spec_text"])["assoc"] == ["value"]


def test_recovers_the_association_and_baseline_hazard(recovery_run):
    folder, result, _ = recovery_run
    assert result.exit_code == 0, result.output
    s = pd.read_csv(folder / "run" / "summary.csv").set_index("parameter")
    truth = {
        "alpha": TRUTH.alpha,
        "gamma[x]": TRUTH.gamma,
        "weibull_shape": TRUTH.weibull_shape,
        "weibull_intercept": TRUTH.weibull_intercept,
        "beta[Intercept]": TRUTH.beta[0],
        "beta[time]": TRUTH.beta[1],
        "beta[x]": TRUTH.beta[2],
        "sigma": TRUTH.sigma,
        "b_sd[Intercept]": TRUTH.b_sd[0],
        "b_sd[time]": TRUTH.b_sd[1],
    }
    for name, value in truth.items():
        z = (s.loc[name, "mean"] - value) / s.loc[name, "sd"]
        # 10 checks at |z| < 3.5: a correct sampler fails this with probability < 0.5%
        assert abs(z) < 3.5, (
            f"{name}: posterior {s.loc[name, 'mean']:.3f} ± {s.loc[name, 'sd']:.3f}, truth {value}"
        )
    assert s.loc["alpha", "q5"] > 0.3  # the association is detected, not just covered


def test_diagnose_counts_only_the_random_effects_as_per_patient_rows(recovery_run):
    folder, result, patients = recovery_run
    assert result.exit_code == 0, result.output
    shown = runner.invoke(app, ["diagnose", str(folder / "run")], terminal_width=200)
    lines = shown.output.splitlines()
    cut = next(i for i, line in enumerate(lines) if line.strip().startswith("b["))
    population = "\n".join(lines[:cut])
    for name in ("beta[time]", "b_sd[time]", "b_corr[Intercept:time]", "gamma[x]", "alpha"):
        assert name in population
    assert f"of {2 * len(patients)} per-patient rows" in shown.output


def test_cli_predict_writes_the_curve_the_patient_report_reads(recovery_run, tmp_path):
    """`ctcdyn predict` on the stored run: refuses a run that failed its gate unless told,
    prints the curve, and writes a SurvivalSummary JSON and a plot."""
    import shutil

    from ctcdyn.report import SurvivalSummary

    folder, result, patients = recovery_run
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    shutil.copytree(folder / "run", run)
    manifest = json.loads((run / "manifest.json").read_text())
    pid = str(patients["patient_id"][0])
    args = ["predict", str(run), "--patient", pid, "--horizon", "730", "--time-unit", "years"]
    args += ["--samples", "200", "--out", str(tmp_path / "s.json")]
    args += ["--plot", str(tmp_path / "s.png")]
    (run / "manifest.json").write_text(json.dumps({**manifest, "status": "failed_gate"}))
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1 and "not to be trusted" in refused.output
    assert not (tmp_path / "s.json").exists()
    (run / "manifest.json").write_text(json.dumps({**manifest, "status": "passed"}))
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    summary = SurvivalSummary.from_dict(json.loads((tmp_path / "s.json").read_text()))
    assert summary.times_days[0] == 0.0 and summary.times_days[-1] == pytest.approx(730.0)
    assert summary.median[0] == 1.0 and summary.median[-1] < summary.median[1]
    assert (tmp_path / "s.png").stat().st_size > 10_000
    unknown = runner.invoke(app, [*args[:2], "--patient", "NOPE", "--time-unit", "years"])
    assert unknown.exit_code == 2 and "neither in the fit" in unknown.output


def test_cli_refuses_incomplete_or_bad_joint_input_before_fitting(tmp_path):
    draws, patients = _tables()
    draws.to_csv(tmp_path / "long.csv", index=False)
    patients.assign(event=[1, 0, 5]).to_csv(tmp_path / "p.csv", index=False)
    common = ["fit", "--draws", str(tmp_path / "long.csv"), "--patients", str(tmp_path / "p.csv")]
    common += ["--out", str(tmp_path / "run"), "--marker", "y"]
    result = runner.invoke(app, [*common, "--fixed", "y ~ time"])
    assert result.exit_code == 2
    assert "--marker needs --event-time, --event as well" in result.output
    both = ["--fixed", "y ~ time", "--event-time", "event_time", "--event", "event"]
    result = runner.invoke(app, [*common, *both])
    assert result.exit_code == 2
    assert "row 4, column 'event': must be 0 or 1" in result.output
    result = runner.invoke(app, [*common, *both, "--assoc", "value,curvature"])
    assert result.exit_code == 2
    assert "association 'value,curvature' not understood" in result.output
    assert not (tmp_path / "run").exists()  # nothing written


@pytest.mark.parametrize("family", ["gaussian", "poisson", "negbin"])
def test_marker_log_lik_of_each_family_matches_scipy(family):
    from scipy import stats

    draws, patients = _tables()
    draws = draws.assign(y=[0, 3, 7, 1, 2, 12])
    spec = JointSpec(MarkerFormulas("y", "y ~ time", "~ 1"), family=family)
    data = joint_data(spec, draws, patients)
    model = joint_model(data)
    p = {"beta": jnp.array([0.4, 0.6]), "b": jnp.array([[0.2], [-0.5], [0.1]])}
    p |= {"sigma": jnp.asarray(1.7), "phi": jnp.asarray(2.5)}
    got = np.asarray(model.marker_log_lik(jax.tree.map(jnp.asarray, data.arrays), p))
    u = np.array([0.2, -0.5, 0.1])[data.arrays.obs_patient]
    eta = 0.4 + 0.6 * data.draws["time"].to_numpy() + u
    y = data.arrays.y
    if family == "gaussian":
        want = stats.norm.logpdf(y, eta, 1.7)
    elif family == "poisson":
        want = stats.poisson.logpmf(y, np.exp(eta))
    else:  # mean mu, concentration phi: scipy's n = phi, p = phi / (phi + mu)
        want = stats.nbinom.logpmf(y, 2.5, 2.5 / (2.5 + np.exp(eta)))
    # NumPyro's negative binomial goes through a log-beta function accurate to ~1e-7
    np.testing.assert_allclose(got, want, rtol=1e-10 if family != "negbin" else 1e-6)
    if family != "gaussian":
        with pytest.raises(InputError, match="whole number >= 0"):
            joint_data(spec, draws.assign(y=[0.5, 3, 7, 1, 2, 12]), patients)


def test_absorption_maps_fixed_effects_into_the_random_effects_they_shift():
    from ctcdyn.prognosis._data import absorption

    draws, patients = _tables()
    f = MarkerFormulas("y", "y ~ sex * time + I(time**2)", "~ time")
    design = f.build(draws, patients)
    a = absorption(design, patients, draws["time"].to_numpy())
    male = np.array([0.0, 1.0, 0.0])
    # fixed: Intercept, sex[T.m], time, I(time ** 2), sex[T.m]:time; random: Intercept, time
    np.testing.assert_array_equal(
        a[:, 0, :], np.stack([np.ones(3), male, 0 * male, 0 * male, 0 * male], 1)
    )
    np.testing.assert_array_equal(
        a[:, 1, :], np.stack([0 * male, 0 * male, np.ones(3), 0 * male, male], 1)
    )


@pytest.mark.slow
def test_recovers_a_negative_binomial_marker_and_its_association():
    from ctcdyn.inference import NUTSSettings
    from ctcdyn.prognosis import fit_joint
    from ctcdyn.store import summarize

    truth = JointTruth(beta=(1.5, 0.1, -0.5), b_sd=(0.6, 0.1), family="negbin", phi=4.0)
    draws, patients = simulate_joint(jax.random.key(5), truth, 250, follow_up=10.0)
    spec = JointSpec(
        MarkerFormulas("y", "y ~ time + x", "~ time", "~ x"),
        family="negbin",
        baseline=WeibullHazard(),
    )
    fit = fit_joint(
        joint_data(spec, draws, patients),
        jax.random.key(1),
        nuts=NUTSSettings(chains=4, warmup=500, samples=500),
    )
    s = summarize(fit.tree).set_index("parameter")
    expected = {
        "alpha": truth.alpha,
        "phi": truth.phi,
        "beta[Intercept]": truth.beta[0],
        "beta[time]": truth.beta[1],
        "beta[x]": truth.beta[2],
        "weibull_shape": truth.weibull_shape,
        "weibull_intercept": truth.weibull_intercept,
        "gamma[x]": truth.gamma,
    }
    for name, value in expected.items():
        z = (s.loc[name, "mean"] - value) / s.loc[name, "sd"]
        assert abs(z) < 3.5, (
            f"{name}: {s.loc[name, 'mean']:.3f} ± {s.loc[name, 'sd']:.3f}, truth {value}"
        )
