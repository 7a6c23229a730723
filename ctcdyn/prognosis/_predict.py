r"""Dynamic survival predictions for one patient from a joint fit (the statistical link).

For a patient with marker draws up to a landmark time :math:`t_0` (by default the latest draw),
the prediction is the probability of remaining event-free until :math:`u > t_0`, given what is
known at :math:`t_0`:

.. math::

    \pi_i(u \mid t_0) = P(T_i > u \mid T_i > t_0, y_i(s \le t_0), \mathcal{D})
    = \int \exp\Big(-\int_{t_0}^{u} h_i(v \mid b_i, \theta)\,dv\Big)\,
      p(b_i \mid y_i, T_i > t_0, \theta)\, p(\theta \mid \mathcal{D})\; db_i\, d\theta

(Rizopoulos 2011, Biometrics 67:819; JMbayes2's ``predict``). For every posterior draw
:math:`\theta^{(s)}` of the population parameters the patient's random effects are drawn anew
from their conditional posterior given only the draws up to :math:`t_0` and survival to
:math:`t_0`, so any patient can be predicted without refitting the cohort: one of the fit (its
later follow-up is not used), one with new draws since the fit (the prediction updates as
draws arrive), or a new patient.

:math:`b_i \mid \theta^{(s)}` is drawn by sampling-importance-resampling: the mode and Hessian
of its log density (BFGS) give a multivariate-t proposal (4 degrees of freedom), importance
weights correct it, and one proposal is resampled. The effective number of proposals per draw
is kept (:attr:`SurvivalPrediction.proposal_ess`); a small value means the proposal was poor
and the prediction is flagged. The curve is the median over draws and the band its
quantiles (uncertainty in both the population parameters and the patient's random effects);
the mean over draws is the posterior predictive probability.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pandas as pd
from jax.scipy.optimize import minimize
from jaxtyping import PRNGKeyArray

from ..store import InputFilesError, NotARunError, Run, thinned_draws
from ._data import (
    JointArrays,
    JointData,
    JointSpec,
    _arrays,
    _forms,
    joint_data,
    read_joint_tables,
)
from ._fit_joint import JointFit, reported_sites
from ._formula import ALPHA_NAMES
from ._joint import JointModel, joint_model
from ._quadrature import split_gauss_legendre

if TYPE_CHECKING:
    from ..report import SurvivalSummary

#: Proposals per posterior draw in sampling-importance-resampling of the random effects.
PROPOSALS = 64
#: Degrees of freedom of the multivariate-t proposal (heavier tails than the Laplace normal).
PROPOSAL_DF = 4.0
#: Below this many effective proposals (of :data:`PROPOSALS`) in more than 5% of the draws,
#: the prediction is flagged as unreliable.
MIN_PROPOSAL_ESS = 5.0
#: Marker rows of a patient are padded to a multiple of this (one compile per size class).
PAD_DRAWS = 8
#: Days per time unit of the data, by the names the command line takes.
TIME_UNITS = {"days": 1.0, "weeks": 7.0, "months": 365.25 / 12.0, "years": 365.25}


class PredictionError(ValueError):
    """A prediction cannot be made as asked (message says why and what to do)."""


@dataclasses.dataclass(frozen=True)
class SurvivalPrediction:
    """Posterior event-free probabilities of one patient after a landmark time.

    Attributes:
        patient_id: the patient.
        landmark: t0, the time the prediction conditions on (data's time unit).
        times: (G,) times from t0 on, increasing, ``times[0] == t0`` (data's time unit).
        survival: (S, G) P(T > times | T > t0) for each of S posterior draws.
        proposal_ess: (S,) effective number of importance proposals behind each draw.
        draws_used: marker draws of the patient the prediction used (<= t0).
        days_per_unit: days per time unit of the data (to report times in days).
    """

    patient_id: str
    landmark: float
    times: np.ndarray
    survival: np.ndarray
    proposal_ess: np.ndarray
    draws_used: int
    days_per_unit: float = 1.0

    @property
    def reliable(self) -> bool:
        """Whether the importance sampling of the random effects worked (see module docs)."""
        return bool(np.mean(self.proposal_ess < MIN_PROPOSAL_ESS) <= 0.05)

    def band(self, level: float = 0.9) -> pd.DataFrame:
        """The curve and its credible band: one row per time.

        Columns: ``time`` (data unit), ``days`` (after the landmark), ``mean`` (posterior
        predictive probability), ``median``, ``lower`` and ``upper`` (equal-tailed ``level``).
        """
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level}")
        q = np.quantile(self.survival, [(1 - level) / 2, 0.5, (1 + level) / 2], axis=0)
        return pd.DataFrame(
            {
                "time": self.times,
                "days": (self.times - self.landmark) * self.days_per_unit,
                "mean": self.survival.mean(axis=0),
                "median": q[1],
                "lower": q[0],
                "upper": q[2],
            }
        )

    def summary(self, *, endpoint: str, model: str, level: float = 0.9) -> SurvivalSummary:
        """The report's survival input (:class:`ctcdyn.report.SurvivalSummary`)."""
        from ..report import SurvivalSummary

        b = self.band(level)
        return SurvivalSummary(
            endpoint=endpoint,
            times_days=tuple(b["days"]),
            median=tuple(b["median"]),
            lower=tuple(b["lower"]),
            upper=tuple(b["upper"]),
            level=level,
            model=model,
        )


# --- opening a stored joint fit --------------------------------------------------------------


def open_joint_run(path: Path | str) -> JointFit:
    """A stored joint fit (``ctcdyn fit --marker ...``), with its data re-read and checked.

    Raises:
        PredictionError: not a run, not a joint fit, unfinished, or its input files are
            missing or changed.
    """
    try:
        run = Run.open(path)
    except NotARunError as err:
        raise PredictionError(str(err)) from None
    manifest = run.manifest
    if manifest.get("model") != "joint":
        raise PredictionError(
            f"{run.path} is a fit of the {manifest.get('model')!r} model: survival predictions "
            "need a joint fit of a marker and an event (`ctcdyn fit --marker COLUMN "
            "--event-time ... --event ...`)."
        )
    if manifest["status"] in ("running", "error"):
        raise PredictionError(
            f"the run in {run.path} has status {manifest['status']!r}: it did not finish"
        )
    spec = JointSpec.from_description(json.loads(manifest["spec_text"]))
    try:
        files = run.input_files()
    except InputFilesError as err:
        raise PredictionError(str(err)) from None
    draws, patients, labels = read_joint_tables(files["draws"], files["patients"])
    data = joint_data(spec, draws, patients, labels=labels)
    tree = run.read_posterior()
    fitted = [str(p) for p in np.asarray(tree["posterior"].to_dataset()["patient"])]
    if fitted != list(data.patient_ids):
        raise PredictionError(f"the posterior in {run.path} has other patients than its input")
    return JointFit(tree=tree, model=joint_model(data), data=data, timings={})


# --- the patient's arrays ----------------------------------------------------------------------


def _patient_tables(
    fit: JointFit,
    patient_id: str,
    draws: pd.DataFrame | None,
    patients: pd.DataFrame | None,
) -> tuple[pd.DataFrame, pd.Series]:
    """The patient's marker draws (the fit's, then ``draws``) and covariate row."""
    data, spec = fit.data, fit.data.spec
    if patients is not None and patient_id in set(patients["patient_id"].astype(str)):
        row = patients[patients["patient_id"].astype(str) == patient_id].iloc[0]
    elif patient_id in data.patient_ids:
        row = data.patients.iloc[data.patient_ids.index(patient_id)]
    else:
        raise PredictionError(
            f"patient {patient_id!r} is neither in the fit nor in the given patients table; "
            "give a patients table with the patient's covariates"
        )
    old = data.draws[data.draws["patient_id"] == patient_id]
    new = (
        draws[draws["patient_id"].astype(str) == patient_id].assign(patient_id=patient_id)
        if draws is not None
        else old.iloc[:0]
    )
    t = spec.formulas.time
    combined = pd.concat([old, new], ignore_index=True)
    combined = combined.drop_duplicates(subset=[t], keep="last").sort_values(t)
    return combined.reset_index(drop=True), row


def _patient_arrays(
    fit: JointFit, draws: pd.DataFrame, row: pd.Series, patient_id: str, landmark: float
) -> JointArrays:
    """Arrays of one patient followed without an event up to ``landmark``, in the fit's
    design (codings and knots of the cohort)."""
    spec = fit.data.spec
    entry = float(row[spec.entry]) if spec.entry else 0.0
    # a landmark at entry conditions on nothing; the validator needs follow-up > entry
    censored = max(landmark, entry + 1e-9 * max(1.0, abs(entry)))
    frame = pd.DataFrame([row]).assign(
        patient_id=patient_id, **{spec.event_time: censored, spec.event: 0}
    )
    if spec.event_upper:
        frame[spec.event_upper] = np.nan
    frame = frame.drop(columns=[c for c in ("_entry", "_upper") if c in frame.columns])
    labels = {"draws": f"draws of patient {patient_id}", "patients": f"patient {patient_id}"}
    one = joint_data(spec, draws, frame, labels=labels, design=fit.data.design)
    return _arrays(spec, fit.data.design, one.draws, one.patients, one.patient_ids)


def _horizon_grid(
    data: JointData, frame: pd.DataFrame, times: np.ndarray, nodes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Association designs, baseline features and weights of the quadrature of the cumulative
    hazard over each (times[g-1], times[g]] (one patient)."""
    spec = data.spec
    lower, upper = times[:-1], times[1:]
    where, weights = split_gauss_legendre(lower, upper, spec.baseline.breaks(), nodes)
    flat = where.reshape(1, -1)
    fx, fz = _forms(data.design, spec, frame, flat)
    return fx, fz, spec.baseline.features(flat), weights


# --- posterior draws as the likelihood's parameters ------------------------------------------


def _population(tree, model: JointModel, n: int) -> dict[str, np.ndarray]:
    """``n`` thinned posterior draws of the population parameters, shaped as the model's
    likelihood takes them (a leading draw axis; a cause axis on the hazard's parameters)."""
    post = tree["posterior"].to_dataset()
    sites = {k: thinned_draws(post[k], n) for k in reported_sites(model) if k != "b"}
    s = len(next(iter(sites.values())))
    q = model.n_random
    corr = np.broadcast_to(np.eye(q), (s, q, q)).copy()
    if q > 1:
        rows, cols = np.tril_indices(q, -1)
        corr[:, rows, cols] = sites["b_corr"]
        corr[:, cols, rows] = sites["b_corr"]
    tau = sites["b_sd"]
    cov = tau[:, :, None] * corr * tau[:, None, :]
    per_cause = (lambda v: v) if model.causes > 1 else (lambda v: v[:, None])
    gamma = per_cause(sites["gamma"]) if model.n_surv else np.zeros((s, model.causes, 0))
    alpha = np.stack([per_cause(sites[ALPHA_NAMES[a]]) for a in model.assoc], axis=-1)
    out = {
        "beta": sites["beta"],
        "b_cov": cov,
        "gamma": gamma,
        "alpha": alpha,
        "baseline": {k: per_cause(sites[k]) for k in model.baseline.sites()},
    }
    for k in ("sigma", "phi"):
        if k in sites:
            out[k] = sites[k]
    return out


# --- prediction ----------------------------------------------------------------------------------


def predict_survival(
    fit: JointFit,
    patient_id: str,
    key: PRNGKeyArray,
    *,
    horizon: float,
    landmark: float | None = None,
    draws: pd.DataFrame | None = None,
    patients: pd.DataFrame | None = None,
    samples: int = 500,
    points: int = 61,
    days_per_unit: float = 1.0,
) -> SurvivalPrediction:
    """P(no event by t0 + s | no event by t0, draws up to t0) for s in [0, horizon].

    Args:
        fit: a joint fit (:func:`~ctcdyn.prognosis.fit_joint`, or :func:`open_joint_run`).
        patient_id: the patient: one of the fit, or one in ``patients``.
        key: PRNG key (the random effects' importance sampling).
        horizon: how far after the landmark (data's time unit).
        landmark: t0 (data's time unit); default the patient's latest draw (entry time, or 0,
            when the patient has none). Draws after t0 are not used.
        draws: new marker draws (the draws table's columns); the patient's rows are added to
            those of the fit (a row at a time the fit has replaces it).
        patients: covariates of patients not in the fit (the patients table's columns; event
            columns are not needed).
        samples: posterior draws used (evenly thinned).
        points: times on the curve from t0 to t0 + horizon.
        days_per_unit: days per time unit of the data (for the curve's ``days`` column).

    Returns:
        A :class:`SurvivalPrediction`.

    Raises:
        PredictionError: unknown patient, or a horizon that is not positive.
        ctcdyn.data.InputError: invalid new draws (file, row and column named).
    """
    if not horizon > 0:
        raise PredictionError(f"the horizon must be > 0, got {horizon}")
    spec, model = fit.data.spec, fit.model
    table, row = _patient_tables(fit, patient_id, draws, patients)
    t = spec.formulas.time
    if landmark is None:
        entry = float(row[spec.entry]) if spec.entry else 0.0
        landmark = float(table[t].max()) if len(table) else entry
    table = table[table[t] <= landmark]
    arrays, observed = _padded(_patient_arrays(fit, table, row, patient_id, landmark))
    times = landmark + np.linspace(0.0, horizon, points)
    frame = pd.DataFrame([row]).reset_index(drop=True)
    fx, fz, base, weights = jax.tree.map(
        jnp.asarray, _horizon_grid(fit.data, frame, times, spec.nodes)
    )
    population = jax.tree.map(jnp.asarray, _population(fit.tree, model, samples))
    n_draws = population["beta"].shape[0]
    keys = jax.random.split(key, n_draws)
    grid = (fx, fz, base, weights)
    survival, ess = _sample(model, arrays, jnp.asarray(observed), grid, population, keys)
    return SurvivalPrediction(
        patient_id=patient_id,
        landmark=float(landmark),
        times=times,
        survival=np.asarray(survival),
        proposal_ess=np.asarray(ess),
        draws_used=len(table),
        days_per_unit=days_per_unit,
    )


def landmark_survival(
    fit: JointFit,
    patients: pd.DataFrame,
    draws: pd.DataFrame,
    key: PRNGKeyArray,
    *,
    landmark: float,
    horizons: np.ndarray,
    samples: int = 300,
) -> np.ndarray:
    """Posterior predictive P(no event by landmark + h | no event by the landmark) of many
    patients from their draws up to the landmark: the input of accuracy metrics against held-out
    outcomes (:func:`~ctcdyn.prognosis.compare_with_rule`).

    Args:
        fit: a joint fit.
        patients: the patients to predict (covariates), one row each, in the output's order.
        draws: their marker draws (draws after the landmark are not used).
        key: PRNG key; patient i uses ``fold_in(key, i)``.
        landmark: the time predictions condition on (data's unit), for every patient.
        horizons: times after the landmark (data's unit), increasing.
        samples: posterior draws per patient.

    Returns:
        An array (patients, horizons): the mean over posterior draws at each horizon.
    """
    horizons = np.asarray(horizons, dtype=float)
    out = np.empty((len(patients), len(horizons)))
    for i, pid in enumerate(patients["patient_id"].astype(str)):
        prediction = predict_survival(
            fit,
            pid,
            jax.random.fold_in(key, i),
            horizon=float(horizons[-1]),
            landmark=landmark,
            draws=draws[draws["patient_id"].astype(str) == pid],
            patients=patients,
            samples=samples,
            points=121,
        )
        mean = prediction.survival.mean(axis=0)
        out[i] = np.interp(landmark + horizons, prediction.times, mean)
    return out


def _padded(a: JointArrays) -> tuple[JointArrays, np.ndarray]:
    """The patient's marker rows padded to a multiple of :data:`PAD_DRAWS` (a mask marks the
    real ones), so patients with similar numbers of draws share one compiled program."""
    n = len(a.y)
    size = max(PAD_DRAWS, -(-n // PAD_DRAWS) * PAD_DRAWS)

    def pad(x: np.ndarray) -> np.ndarray:
        return np.concatenate([x, np.zeros((size - n, *x.shape[1:]), dtype=x.dtype)])

    padded = a._replace(y=pad(a.y), obs_patient=pad(a.obs_patient), X=pad(a.X), Z=pad(a.Z))
    return jax.tree.map(jnp.asarray, padded), np.arange(size) < n


@functools.partial(jax.jit, static_argnums=0)
def _sample(model: JointModel, a: JointArrays, observed, grid, population, keys):
    """For each posterior draw: b by sampling-importance-resampling, then the survival curve.
    ``observed`` masks the padding of the marker rows."""
    fx, fz, base, weights = grid

    def one(p, key):
        cov = p["b_cov"]
        p = {k: v for k, v in p.items() if k != "b_cov"}
        prior = dist.MultivariateNormal(jnp.zeros(cov.shape[0]), covariance_matrix=cov)

        def log_density(b):
            pb = {**p, "b": b[None]}
            return (
                prior.log_prob(b)
                + jnp.sum(jnp.where(observed, model.marker_log_lik(a, pb), 0.0))
                + jnp.sum(model.event_log_lik(a, pb))
            )

        b0 = jnp.zeros(cov.shape[0])
        mode = minimize(lambda b: -log_density(b), b0, method="BFGS").x
        hessian = -jax.hessian(log_density)(mode)
        chol = jnp.linalg.cholesky(jnp.linalg.inv((hessian + hessian.T) / 2))
        ok = jnp.all(jnp.isfinite(chol)) & jnp.all(jnp.isfinite(mode))
        loc = jnp.where(ok, mode, b0)
        chol = jnp.where(ok, chol, jnp.linalg.cholesky(cov))
        proposal = dist.MultivariateStudentT(PROPOSAL_DF, loc, scale_tril=chol)
        k_draw, k_pick = jax.random.split(key)
        candidates = proposal.sample(k_draw, (PROPOSALS,))
        log_w = jax.vmap(log_density)(candidates) - proposal.log_prob(candidates)
        log_w = jnp.where(jnp.isfinite(log_w), log_w, -jnp.inf)
        w = jax.nn.softmax(log_w)
        b = candidates[jax.random.categorical(k_pick, log_w)]
        pb = {**p, "b": b[None]}
        log_h = model._log_hazard(fx, fz, base, a, pb)  # (causes, 1, intervals * nodes)
        rate = jnp.exp(log_h).sum(axis=0).reshape(weights.shape)
        cumulative = jnp.concatenate([jnp.zeros(1), jnp.cumsum(jnp.sum(weights * rate, -1))])
        return jnp.exp(-cumulative), 1.0 / jnp.sum(w**2)

    return jax.vmap(one)(population, keys)
