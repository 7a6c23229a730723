"""Dynamic survival predictions from a joint fit: exact against numerical integration, and the
directions in which new information must move them."""

import jax
import numpy as np
import pandas as pd
import pytest

from ctcdyn.prognosis import (
    JointFit,
    JointSpec,
    JointTruth,
    MarkerFormulas,
    PredictionError,
    WeibullHazard,
    build_joint_tree,
    joint_data,
    joint_model,
    predict_survival,
    simulate_joint,
)
from ctcdyn.prognosis._quadrature import gauss_legendre

TRUTH = JointTruth()
DRAWS = 2000  # posterior draws of the prediction (all at the truth: see `fixed_fit`)


@pytest.fixture(scope="module")
def fixed_fit():
    """A 'fit' whose posterior puts all its mass on the true parameters, so the prediction's
    only randomness is the patient's random effects, which can be integrated on a grid."""
    draws, patients = simulate_joint(jax.random.key(3), TRUTH, 40)
    spec = JointSpec(
        formulas=MarkerFormulas(marker="y", fixed="y ~ time + x", random="~ time", surv="~ x"),
        family="gaussian",
        assoc=("value",),
        baseline=WeibullHazard(),
    )
    data = joint_data(spec, draws, patients)
    model = joint_model(data)
    values = {
        "beta": TRUTH.beta,
        "sigma": TRUTH.sigma,
        "b_sd": TRUTH.b_sd,
        "b_corr": [TRUTH.b_corr],
        "b": np.zeros((data.n_patients, 2)),
        "gamma": [TRUTH.gamma],
        "alpha": TRUTH.alpha,
        "weibull_shape": TRUTH.weibull_shape,
        "weibull_intercept": TRUTH.weibull_intercept,
    }
    samples = {
        k: np.broadcast_to(np.asarray(v, float), (1, DRAWS, *np.shape(v))).copy()
        for k, v in values.items()
    }
    stats = {"diverging": np.zeros((1, DRAWS), bool)}
    tree = build_joint_tree(model, data, samples, stats)
    return JointFit(tree=tree, model=model, data=data, timings={})


def _cumulative_hazard(t, x, level, slope):
    """H(0, t) of the true Weibull hazard with the current-value link, for arrays of
    (level, slope): substitution w = s^k makes the integrand smooth for Gauss-Legendre."""
    k, lam = TRUTH.weibull_shape, TRUTH.weibull_intercept
    w, weight = gauss_legendre(np.zeros(1), np.asarray([t**k]), 200)
    s = w[0] ** (1.0 / k)
    eta = lam + TRUTH.gamma * x + TRUTH.alpha * (level[..., None] + slope[..., None] * s)
    return np.sum(weight[0] * np.exp(eta), axis=-1)


def _exact(patient: pd.DataFrame, x: float, landmark: float, horizons, conditioned=True):
    """E[S(t0 + h | t0)] over p(b | draws, T > t0) on a fine grid of b (the true parameters)."""
    sd, rho = np.asarray(TRUTH.b_sd), TRUTH.b_corr
    cov = np.array([[1.0, rho], [rho, 1.0]]) * np.outer(sd, sd)
    grid0 = np.linspace(-6 * sd[0], 6 * sd[0], 301)
    grid1 = np.linspace(-6 * sd[1], 6 * sd[1], 301)
    b0, b1 = np.meshgrid(grid0, grid1, indexing="ij")
    b = np.stack([b0, b1], axis=-1)
    log_p = -0.5 * np.einsum("...i,ij,...j->...", b, np.linalg.inv(cov), b)
    beta0, beta_t, beta_x = TRUTH.beta
    level, slope = beta0 + beta_x * x + b0, beta_t + b1
    for t, y in zip(patient["time"], patient["y"], strict=True):
        log_p += -0.5 * ((y - level - slope * t) / TRUTH.sigma) ** 2
    h_t0 = _cumulative_hazard(landmark, x, level, slope)
    if conditioned:
        log_p -= h_t0
    weight = np.exp(log_p - log_p.max())
    weight /= weight.sum()
    return np.array(
        [
            np.sum(weight * np.exp(-(_cumulative_hazard(landmark + h, x, level, slope) - h_t0)))
            for h in horizons
        ]
    )


def test_prediction_equals_the_integral_over_the_random_effects(fixed_fit):
    """A patient with few draws, predicted 2 time units after the last one: surviving that long
    says much about their random effects (the check below shows that it matters)."""
    data = fixed_fit.data
    counts = data.draws.groupby("patient_id", sort=False).size()
    pid = str(counts.idxmin())
    patient = data.draws[data.draws["patient_id"] == pid]
    x = float(data.patients.loc[data.patient_ids.index(pid), "x"])
    landmark = float(patient["time"].max()) + 2.0
    pred = predict_survival(
        fixed_fit, pid, jax.random.key(0), horizon=3.0, landmark=landmark, samples=DRAWS
    )
    assert pred.landmark == landmark and pred.draws_used == len(patient) and pred.reliable
    at = [10, 20, 40, 60]  # indices on the 61-point curve: 0.5, 1, 2 and 3 time units later
    horizons = pred.times[at] - landmark
    exact = _exact(patient, x, landmark, horizons)
    mean = pred.survival[:, at].mean(axis=0)
    mc_error = pred.survival[:, at].std(axis=0) / np.sqrt(DRAWS)
    np.testing.assert_array_less(np.abs(mean - exact), 4 * mc_error + 1e-4)
    # the same check fails a prediction that forgets the survival to t0
    forgetting = _exact(patient, x, landmark, horizons, conditioned=False)
    assert np.any(np.abs(mean - forgetting) > 4 * mc_error + 1e-4)
    assert np.all(pred.survival[:, 0] == 1.0) and np.all(np.diff(pred.survival, axis=1) <= 0)


def test_new_draws_update_the_prediction_in_the_direction_of_the_marker(fixed_fit):
    """alpha > 0: a higher marker means a higher hazard. A new draw far above the patient's
    trajectory must lower the predicted survival; one far below must raise it."""
    data = fixed_fit.data
    pid = data.patient_ids[0]
    last = data.draws[data.draws["patient_id"] == pid].iloc[-1]
    curves = {}
    for name, shift in (("high", 3.0), ("low", -3.0)):
        new = pd.DataFrame(
            {"patient_id": [pid], "time": [last["time"] + 0.5], "y": [last["y"] + shift]}
        )
        new["x"] = last["x"]
        pred = predict_survival(
            fixed_fit, pid, jax.random.key(1), horizon=2.0, draws=new, samples=400
        )
        assert pred.landmark == last["time"] + 0.5
        curves[name] = pred.survival.mean(axis=0)
    same = predict_survival(
        fixed_fit, pid, jax.random.key(1), horizon=2.0, landmark=last["time"] + 0.5, samples=400
    ).survival.mean(axis=0)
    assert curves["high"][-1] < same[-1] - 0.05 < curves["low"][-1] - 0.1


def test_a_new_patient_needs_covariates_and_is_predicted_from_them(fixed_fit):
    new = pd.DataFrame({"patient_id": ["NEW1"] * 2, "time": [0.0, 1.0], "y": [1.0, 1.2]})
    new["x"] = 1.0
    with pytest.raises(PredictionError, match="neither in the fit nor"):
        predict_survival(fixed_fit, "NEW1", jax.random.key(0), horizon=1.0, draws=new)
    covariates = pd.DataFrame({"patient_id": ["NEW1"], "x": [1.0]})
    pred = predict_survival(
        fixed_fit,
        "NEW1",
        jax.random.key(0),
        horizon=1.0,
        draws=new,
        patients=covariates,
        samples=200,
    )
    assert pred.draws_used == 2 and pred.landmark == 1.0
    band = pred.band(0.9)
    assert (band["lower"] <= band["median"]).all() and (band["median"] <= band["upper"]).all()
    summary = pred.summary(endpoint="event-free survival", model="joint model", level=0.9)
    assert summary.times_days[0] == 0.0 and summary.median[0] == 1.0


def test_only_joint_fits_predict_survival(tmp_path):
    from ctcdyn.prognosis import open_joint_run
    from ctcdyn.store import Run

    Run.create(
        tmp_path / "run", model="mbc", spec_text="", data={}, seed=0, sampler={}, mode="cohort"
    )
    with pytest.raises(PredictionError, match="fit of the 'mbc' model: survival predictions need"):
        open_joint_run(tmp_path / "run")
