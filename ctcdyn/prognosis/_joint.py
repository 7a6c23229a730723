r"""The joint model of a longitudinal marker and an event (the statistical link, JMbayes2-style).

Marker submodel (linear mixed trajectory, Gaussian / Poisson / negative binomial):

.. math::

    m_i(t) = x_i(t)'\beta + z_i(t)' b_i, \qquad
    b_i \sim N(0, \mathrm{diag}(\tau) L L' \mathrm{diag}(\tau)),\;
    L \sim \mathrm{LKJCholesky}(2),

    y_{ij} \sim N(m_i(t_{ij}), \sigma^2) \;|\; \mathrm{Poisson}(e^{m_i(t_{ij})}) \;|\;
    \mathrm{NegBin}(\text{mean } e^{m_i(t_{ij})}, \text{concentration } \phi).

Hazard (relative-risk submodel):

.. math::

    h_i(t) = h_0(t) \exp\big(w_i'\gamma + \textstyle\sum_k \alpha_k f_k(m_i, t)\big),

with f = current value m_i(t), slope dm_i/dt, or area :math:`\int_0^t m_i(s) ds` (sites
``alpha``, ``alpha_slope``, ``alpha_area``), h_0 from :mod:`._hazard`. The cumulative hazard
over (entry, T] is a Gauss–Legendre sum (15 nodes by default). Log-likelihood of the
follow-up: :math:`\delta_i \log h_i(T_i) - \int_{e_i}^{T_i} h_i`, right censoring
(:math:`\delta_i = 0`) and left truncation (delayed entry :math:`e_i`) included; an event known
only to lie in (L, R] adds :math:`-\int_{e_i}^{L} h_i + \log(1 - e^{-\int_L^R h_i})`.
With K competing causes, each has its own hazard h_ki (baseline, gamma, alpha; a ``cause``
plate) and the log-likelihood is :math:`\log h_{c_i i}(T_i) - \sum_k \int_{e_i}^{T_i} h_{ki}`
(cause-specific hazards).

The random effects are sampled centred by default (b_i directly: the better geometry when each
patient has several informative measurements, as in the PBC data) or non-centred
(:math:`b_i = \mathrm{diag}(\tau) L u_i,\; u_i \sim N(0, I)`), and the fixed effects for
mean-centred covariates (reported for the covariates as given).

Priors are weakly informative and scaled to the data (as rstanarm's autoscaling): fixed
effects ~ N(0, 2.5 s_y / s_x) (intercept N(mean y, 10 s_y)), tau_k ~ HalfNormal(2.5 s_y / s_z),
sigma ~ Exponential(1 / s_y), gamma ~ N(0, 2.5 / s_w), alpha_k ~ N(0, 2.5 / s_f), where s are
sample SDs (s_y = 1 on the log scale of count markers).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from ._data import JointArrays, JointData
from ._formula import ALPHA_NAMES
from ._hazard import BaselineHazard

#: LKJ shape of the random-effects correlation prior (2: mild shrinkage towards 0).
LKJ_CONCENTRATION = 2.0
#: The random effects' SD priors are HalfNormal(TAU_PRIOR_MULTIPLE x the coefficient's natural
#: scale s_y / s_z) (rstanarm's autoscaling).
TAU_PRIOR_MULTIPLE = 2.5


@dataclasses.dataclass(frozen=True)
class JointModel:
    """The NumPyro model of a cohort (call it with :class:`JointArrays`).

    Attributes hold the shapes and prior scales (tuples, so the model hashes and compiled
    samplers are reused across fits of equal models).
    """

    family: str
    baseline: BaselineHazard
    assoc: tuple[str, ...]
    n_patients: int
    beta_loc: tuple[float, ...]
    beta_scale: tuple[float, ...]
    tau_scale: tuple[float, ...]
    gamma_scale: tuple[float, ...]
    alpha_scale: tuple[float, ...]
    y_scale: float
    beta_start: tuple[float, ...]
    sigma_start: float
    x_mean: tuple[float, ...] = ()
    intercept_index: int = -1
    centred: bool = True
    causes: int = 1
    theta_start: tuple[float, ...] = ()

    @property
    def n_fixed(self) -> int:
        return len(self.beta_loc)

    @property
    def n_random(self) -> int:
        return len(self.tau_scale)

    @property
    def n_surv(self) -> int:
        return len(self.gamma_scale)

    @property
    def coefficient_units(self) -> jnp.ndarray:
        """The natural scale of each random-effect coefficient (s_y / s_z, see module docs):
        with time in days a slope is ~1/365 of the same slope per year."""
        return jnp.asarray(self.tau_scale) / TAU_PRIOR_MULTIPLE

    # --- the model ---------------------------------------------------------------------

    def sample_parameters(self, absorb: jnp.ndarray | None = None) -> dict:
        """Sample every parameter; returns the values the likelihood needs.

        ``absorb`` (patients, q, p): fixed effects absorbed by the random effects' means
        (hierarchical centring; :func:`~ctcdyn.prognosis._data.absorption`); none when None.
        """
        if absorb is None:
            absorb = jnp.zeros((self.n_patients, self.n_random, self.n_fixed))
        out: dict = {}
        # fixed effects are sampled for covariates centred at their means (intercept at the
        # mean marker level: far less correlated), and reported for the covariates as given
        # sampled in units of their prior scales (as every site below): the sampler's start
        # jitter and first mass matrix are then unit-free, whatever the data's time unit
        scale = jnp.asarray(self.beta_scale)
        beta_std = numpyro.sample(
            "beta_std", dist.Normal(jnp.asarray(self.beta_loc) / scale, 1.0).to_event(1)
        )
        centred_beta = beta_std * scale
        out["beta"] = numpyro.deterministic("beta", self._uncentre(centred_beta))
        if self.family == "gaussian":
            out["sigma"] = numpyro.sample("sigma", dist.Exponential(1.0 / self.y_scale))
        elif self.family == "negbin":
            out["phi"] = numpyro.sample("phi", dist.LogNormal(np.log(5.0), 2.0))
        q = self.n_random
        tau = numpyro.sample("b_sd", dist.HalfNormal(jnp.asarray(self.tau_scale)).to_event(1))
        if q > 1:
            chol = numpyro.sample("b_corr_chol", dist.LKJCholesky(q, LKJ_CONCENTRATION))
            corr = chol @ chol.T
            rows, cols = np.tril_indices(q, -1)
            numpyro.deterministic("b_corr", corr[rows, cols])
        else:
            chol = jnp.ones((1, 1))
        scale_tril = tau[:, None] * chol
        if self.centred:
            # hierarchical centring: each patient's coefficients theta_i = A_i beta + b_i are
            # sampled around the fixed effects they absorb (see ._data.absorption)
            mean = jnp.einsum("nqp,p->nq", absorb, out["beta"])
            unit = self.coefficient_units
            theta = unit * numpyro.sample(
                "b_theta_std",
                dist.MultivariateNormal(
                    mean / unit, scale_tril=scale_tril / unit[:, None]
                ).to_event(1),
            )
            out["b"] = numpyro.deterministic("b", theta - mean)
        else:
            u = numpyro.sample("b_z", dist.Normal(jnp.zeros((self.n_patients, q)), 1.0).to_event(2))
            out["b"] = numpyro.deterministic("b", u @ scale_tril.T)
        if self.causes > 1:
            with numpyro.plate("cause", self.causes):  # one hazard per competing cause
                out.update(self._sample_hazard())
        else:
            out.update(jax.tree.map(lambda x: x[None], self._sample_hazard()))
        return out

    def _sample_hazard(self) -> dict:
        """gamma (r,), alpha (F,) and the baseline's parameters of one hazard."""
        if self.n_surv:
            gamma = numpyro.sample(
                "gamma", dist.Normal(0.0, jnp.asarray(self.gamma_scale)).to_event(1)
            )
        else:
            gamma = jnp.zeros((self.causes, 0)) if self.causes > 1 else jnp.zeros(0)
        alpha = jnp.stack(
            [
                numpyro.sample(ALPHA_NAMES[a], dist.Normal(0.0, s))
                for a, s in zip(self.assoc, self.alpha_scale, strict=True)
            ],
            axis=-1,
        )
        return {"gamma": gamma, "alpha": alpha, "baseline": self.baseline.sample()}

    def _uncentre(self, centred_beta: jnp.ndarray) -> jnp.ndarray:
        # x'beta = (x - mean)'beta_c with the intercept absorbing mean'beta_c
        if self.intercept_index < 0:
            return centred_beta
        shift = jnp.sum(jnp.asarray(self.x_mean) * centred_beta)  # x_mean is 0 at the intercept
        return centred_beta.at[self.intercept_index].add(-shift)

    def _centre(self, beta: np.ndarray) -> np.ndarray:
        out = np.array(beta, dtype=float)
        if self.intercept_index >= 0:
            out[self.intercept_index] += float(np.dot(self.x_mean, beta))
        return out

    def marker_log_lik(self, a: JointArrays, p: dict) -> jnp.ndarray:
        """Log-likelihood of each marker measurement (obs,)."""
        eta = a.X @ p["beta"] + jnp.sum(a.Z * p["b"][a.obs_patient], axis=-1)
        if self.family == "gaussian":
            return dist.Normal(eta, p["sigma"]).log_prob(a.y)
        if self.family == "poisson":
            return dist.Poisson(jnp.exp(eta)).log_prob(a.y)
        return dist.NegativeBinomial2(jnp.exp(eta), p["phi"]).log_prob(a.y)

    def _log_hazard(self, fx, fz, base, a: JointArrays, p: dict) -> jnp.ndarray:
        """log h_ki of each cause k at points with association designs fx (F, n, ..., p) and
        fz (F, n, ..., q), baseline features ``base`` (n, ..., nf): shape (causes, n, ...)."""
        extra = fx.ndim - 3  # quadrature axis or none
        b = p["b"].reshape(p["b"].shape[0], *([1] * extra), p["b"].shape[1])
        forms = fx @ p["beta"] + jnp.sum(fz * b, axis=-1)  # (F, n, ...)
        linked = jnp.tensordot(p["alpha"], forms, axes=1)  # (causes, n, ...)
        lin = (p["gamma"] @ a.W.T).reshape(*p["gamma"].shape[:1], -1, *([1] * extra))
        log_h0 = jax.vmap(lambda bp: self.baseline.log_hazard(bp, base))(p["baseline"])
        return log_h0 + lin + linked

    def event_log_lik(self, a: JointArrays, p: dict) -> jnp.ndarray:
        """Log-likelihood of each patient's follow-up (n,)."""
        log_h_T = self._log_hazard(a.fx_T, a.fz_T, a.base_T, a, p)
        cum = jnp.sum(a.w_q * jnp.exp(self._log_hazard(a.fx_q, a.fz_q, a.base_q, a, p)), -1)
        ll = jnp.sum(a.is_event * log_h_T - cum, axis=0)
        if a.w_r.shape[-1]:  # interval censoring (one cause only)
            log_h_r = self._log_hazard(a.fx_r, a.fz_r, a.base_r, a, p)[0]
            cum_r = jnp.sum(a.w_r * jnp.exp(log_h_r), -1)
            safe = jnp.where(a.is_interval > 0, cum_r, 1.0)
            ll = ll + a.is_interval * jnp.log(-jnp.expm1(-safe))
        return jnp.asarray(ll)

    def __call__(self, arrays: JointArrays) -> None:
        p = self.sample_parameters(jnp.asarray(arrays.absorb))
        numpyro.factor("marker", jnp.sum(self.marker_log_lik(arrays, p)))
        numpyro.factor("event", jnp.sum(self.event_log_lik(arrays, p)))

    # --- sampler start and reporting -----------------------------------------------------

    def initial_values(self, _size: int | None = None) -> dict[str, np.ndarray]:
        """Start of every chain (constrained values; the sampler jitters them)."""
        q = self.n_random
        unit = np.asarray(self.tau_scale) / TAU_PRIOR_MULTIPLE
        out = {
            "beta_std": self._centre(np.asarray(self.beta_start)) / np.asarray(self.beta_scale),
            "b_sd": unit,
            "b_theta_std" if self.centred else "b_z": (
                np.asarray(self.theta_start).reshape(self.n_patients, q) / unit
                if self.centred and self.theta_start
                else np.zeros((self.n_patients, q))
            ),
        }
        if self.family == "gaussian":
            out["sigma"] = np.asarray(self.sigma_start)
        elif self.family == "negbin":
            out["phi"] = np.asarray(5.0)
        if q > 1:
            out["b_corr_chol"] = np.eye(q)
        hazard = {ALPHA_NAMES[a]: np.asarray(0.0) for a in self.assoc}
        if self.n_surv:
            hazard["gamma"] = np.zeros(self.n_surv)
        hazard.update(self.baseline.initial_values())
        if self.causes > 1:
            hazard = {k: np.broadcast_to(v, (self.causes, *np.shape(v))) for k, v in hazard.items()}
        return {**out, **hazard}


def _sd(x: np.ndarray) -> np.ndarray:
    s = np.std(x, axis=0) if len(x) > 1 else np.zeros(x.shape[1:])
    return np.where(s > 1e-12, s, 1.0)


def joint_model(data: JointData, *, centred: bool = True) -> JointModel:
    """The :class:`JointModel` of ``data``, its priors scaled to the data (see module docs).

    ``centred`` chooses how the random effects are sampled: centred (b_i directly, the
    better geometry when each patient has several informative measurements) or non-centred
    (b_i = diag(tau) L u_i, better when the data say little about each patient).
    """
    a, spec = data.arrays, data.spec
    names = data.design.fixed_names
    X, y = np.asarray(a.X), np.asarray(a.y)
    if spec.family == "gaussian":
        target, s_y = y, float(_sd(y[:, None])[0])
    else:
        target, s_y = np.log(y + 0.5), 1.0
    intercept = np.array([n == "Intercept" for n in names])
    loc = np.where(intercept, float(np.mean(target)) if len(target) else 0.0, 0.0)
    scale = np.where(intercept, 10.0 * s_y, 2.5 * s_y / _sd(X))
    # least squares start of the fixed effects (on the link scale for counts)
    start, *_ = np.linalg.lstsq(X, target, rcond=None) if len(y) else (loc,)
    resid = target - X @ start if len(y) else np.zeros(1)
    z_sd = np.where(
        np.asarray([n == "Intercept" for n in data.design.random_names]), 1.0, _sd(np.asarray(a.Z))
    )
    # association scale: SD of each form at the event times under the least squares fit
    f_sd = [float(_sd((np.asarray(a.fx_T[k]) @ start)[:, None])[0]) for k in range(len(spec.assoc))]
    has_intercept = bool(intercept.any())
    x_mean = np.where(intercept, 0.0, X.mean(axis=0)) if has_intercept and len(y) else 0 * loc
    return JointModel(
        family=spec.family,
        baseline=spec.baseline,
        assoc=spec.assoc,
        n_patients=data.n_patients,
        beta_loc=tuple(float(v) for v in loc),
        beta_scale=tuple(float(v) for v in scale),
        tau_scale=tuple(float(TAU_PRIOR_MULTIPLE * s_y / s) for s in z_sd),
        gamma_scale=tuple(float(2.5 / s) for s in _sd(np.asarray(a.W))) if a.W.shape[1] else (),
        alpha_scale=tuple(2.5 / s for s in f_sd),
        y_scale=s_y,
        beta_start=tuple(float(v) for v in start),
        sigma_start=float(max(np.std(resid), 1e-3 * s_y)) if spec.family == "gaussian" else 1.0,
        x_mean=tuple(float(v) for v in x_mean),
        intercept_index=int(np.flatnonzero(intercept)[0]) if has_intercept else -1,
        centred=centred,
        causes=spec.causes,
        theta_start=tuple(np.einsum("nqp,p->nq", np.asarray(a.absorb), start).ravel().tolist()),
    )
