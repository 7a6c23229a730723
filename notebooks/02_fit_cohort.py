# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Fit a cohort and read the posterior with ArviZ
#
# This notebook fits the hierarchical model of ctcdyn (`docs/inference.md`) to the bundled
# example cohort: 12 virtual patients with metastatic breast cancer and serial CellSearch counts
# on a new line of therapy. Because the cohort is simulated, we know the parameters each patient
# was simulated with (`truth.csv`) and can see what the counts recovered and what they could not.
# The steps: load the data, fit with NUTS, check the diagnostics gate, then read the posterior
# with ArviZ (summary, trace and rank plots, posterior against truth, prior-to-posterior
# contraction, posterior predictive against the observed counts).
#
# Set `CTCDYN_NOTEBOOK_SMALL=1` for a quick run (CI): 2 short chains, which do **not** pass the
# gate. The full settings are the demo's (4 chains of 500 + 500, target acceptance 0.9) and take
# minutes.

# %%
import os

import jax
import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
import arviz as az
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd

import ctcdyn
from ctcdyn.diagnostics import check, contraction
from ctcdyn.examples import example_cohort
from ctcdyn.inference import NUTSSettings, fit, fit_data

jax.config.update("jax_enable_x64", True)
SMALL = os.environ.get("CTCDYN_NOTEBOOK_SMALL") == "1"
if SMALL:
    SETTINGS = NUTSSettings(chains=2, warmup=100, samples=100, target_accept=0.9, max_tree_depth=6)
else:
    SETTINGS = NUTSSettings(chains=4, warmup=500, samples=500, target_accept=0.9)

# %% [markdown]
# ## The data
# `example_cohort("mbc")` gives the paths of the bundled CSV files (their columns are described
# in `docs/data.md`). `read_tables` validates them; `fit_data` arranges them as padded arrays,
# one row per patient.

# %%
paths = example_cohort("mbc")
tables = ctcdyn.read_tables(paths["draws"], paths["patients"], paths["treatments"])
truth = pd.read_csv(paths["truth"], dtype={"patient_id": str}).set_index("patient_id")
spec = ctcdyn.load_spec("mbc")
data = fit_data(spec, tables)
print(tables.draws.head(9).to_string(index=False))

fig, ax = plt.subplots(figsize=(8, 3.5))
for _pid, rows in tables.draws.groupby("patient_id"):
    ax.plot(rows["time"], rows["ctc"] + 0.5, "o-", color="0.4", alpha=0.6, markersize=3)
ax.set_yscale("log")
ax.axhline(5.5, color="k", linestyle=":", label="CellSearch rule: 5 CTC / 7.5 mL")
ax.set_xlabel("days from the start of therapy")
ax.set_ylabel("CTC per tube + 0.5")
ax.legend()
fig.tight_layout()

# %% [markdown]
# ## The fit
# One posterior for the whole cohort: each patient-level parameter varies between patients
# around a population median (`X_median`) with a between-patient SD (`X_sd`); population-level
# parameters (half-lives, circadian rhythm, recovery, count dispersion, ...) are shared. The
# spec says which is which. All chains run in one compiled kernel; the first call spends most
# of its time compiling.

# %%
patient_level = [n for n in spec.sampled if spec.parameters[n].level == "patient"]
print("patient-level:", ", ".join(patient_level))
print("population-level:", ", ".join(n for n in spec.sampled if n not in patient_level))
result = fit(spec, data, jax.random.key(2026), nuts=SETTINGS)
tree = result.tree
print({phase: f"{seconds:.0f} s" for phase, seconds in result.timings.items()})
print(f"sampling: {SETTINGS.chains} chains x {SETTINGS.warmup} warmup + {SETTINGS.samples} draws")

# %% [markdown]
# ## The diagnostics gate
# A fit is reported only when rank-normalised R-hat <= 1.01, bulk and tail ESS >= 400 for every
# parameter, there is no divergent transition and E-BFMI >= 0.3 for every chain (Vehtari et al.
# 2021; Betancourt 2016). With the small settings the gate fails, as it should: 2 chains of 100
# draws cannot give 400 effective draws. A failed gate means the numbers below are a sketch,
# not a result.

# %%
gate = check(tree)
print("gate passed" if gate.passed else "gate FAILED:")
for line in gate.failures:
    print("  ", line)
print(
    f"worst R-hat {gate.worst_r_hat:.3f}, smallest bulk ESS {gate.min_ess_bulk:.0f}, "
    f"divergences {gate.divergences}, smallest E-BFMI {gate.min_bfmi:.2f}"
)

# %% [markdown]
# ## Summary, trace and rank plots
# The fit is an ArviZ `DataTree`; ArviZ reads it directly. Shown: the population medians of the
# patient-level parameters. The trace plot shows each chain's density and its draws; the rank
# plot is the sharper check of mixing: when the chains sample the same distribution, the ranks
# of each chain's draws among all draws are uniform (flat bars).

# %%
medians = [f"{name}_median" for name in patient_level]
print(az.summary(tree, var_names=medians).to_string())
az.plot_trace_dist(tree, var_names=medians)
az.plot_rank(tree, var_names=medians)

# %% [markdown]
# ## Posterior against the truth, per patient
# Each point is one patient: the posterior median with its 90% interval against the value the
# patient was simulated with (`truth.csv`), on log scales. A parameter the counts inform has
# short intervals along the diagonal; one they do not inform has intervals as wide as the
# population distribution. With calibrated intervals about 90% of the truths fall inside.

# %%
fig, axes = plt.subplots(1, len(patient_level), figsize=(3 * len(patient_level), 3.4))
for ax, name in zip(np.atleast_1d(axes), patient_level, strict=True):
    draws = tree["posterior"][name]
    q05, q50, q95 = (draws.quantile(q, dim=("chain", "draw")).values for q in (0.05, 0.5, 0.95))
    true = truth.loc[list(draws["patient"].values), name].to_numpy()
    inside = int(np.sum((true >= q05) & (true <= q95)))
    ax.errorbar(true, q50, yerr=[q50 - q05, q95 - q50], fmt="o", color="k", markersize=3)
    lims = [min(true.min(), q05.min()), max(true.max(), q95.max())]
    ax.plot(lims, lims, ":", color="0.5")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_title(f"{name}\n{inside}/{true.size} truths in the 90% interval", fontsize=8)
    ax.set_xlabel("truth")
np.atleast_1d(axes)[0].set_ylabel("posterior median, 90% interval")
fig.tight_layout()

# %% [markdown]
# ## What the data informed: prior-to-posterior contraction
# Contraction is 1 - var(posterior) / var(prior), on the log scale for positive parameters:
# near 1 the data pinned the parameter down, near 0 the posterior is the prior. Counts identify
# the product of shedding, half-life, burden and recovery, not each factor, so some of them
# stay near their priors; reports must show those as prior-dominated. (The cohort was simulated
# with population-level parameters at their prior medians, so a posterior that stayed at its
# prior also looks "right" against the truth: only contraction says whether the data spoke.)
# The figure shows the prior and the posterior of the two most and the two least informed
# population-level parameters.

# %%
table = contraction(tree)
print(table[["parameter", "n", "prior_sd", "posterior_sd", "contraction"]].to_string(index=False))
print("prior-dominated:", ", ".join(table.loc[table["prior_dominated"], "parameter"]) or "none")
shared = table[table["n"] == 1].sort_values("contraction")
az.plot_prior_posterior(tree, var_names=[*shared["parameter"][:2], *shared["parameter"][-2:]])

# %% [markdown]
# ## Posterior predictive against the observed counts
# New counts drawn from the fitted model at each patient's draw times (`posterior_predictive`)
# should cover what was observed: about 90% of the observed counts should lie in their 90%
# predictive intervals (more with a wide posterior, as from short chains). Shown for four
# patients; the coverage is over the whole cohort.

# %%
observed = tree["observed_data"]["ctc"]
times = tree["observed_data"]["time"]
predicted = tree["posterior_predictive"]["ctc"].fillna(0.0)  # padded draws are NaN
low, high = (predicted.quantile(q, dim=("chain", "draw")) for q in (0.05, 0.95))
real = observed.notnull()
covered = ((observed >= low) & (observed <= high)).where(real)
print(f"observed counts in their 90% predictive interval: {float(covered.mean()):.0%}")

fig, axes = plt.subplots(1, 4, figsize=(13, 3), sharey=True)
for ax, pid in zip(axes, tree["posterior"]["patient"].values[:4], strict=True):
    keep = real.sel(patient=pid).values
    t = times.sel(patient=pid).values[keep]
    ax.fill_between(
        t,
        low.sel(patient=pid).values[keep] + 0.5,
        high.sel(patient=pid).values[keep] + 0.5,
        color="0.85",
        label="90% predictive",
    )
    ax.plot(t, observed.sel(patient=pid).values[keep] + 0.5, "ko", markersize=4, label="observed")
    ax.set_yscale("log")
    ax.set_title(str(pid), fontsize=9)
    ax.set_xlabel("days")
axes[0].set_ylabel("CTC per tube + 0.5")
axes[0].legend(fontsize=7)
fig.tight_layout()
