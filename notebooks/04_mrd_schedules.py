# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # MRD: designing a CTC monitoring schedule after curative surgery
#
# After an R0 resection, occult residual disease may grow back. A CTC test schedule is worth
# something if it turns positive before the relapse is seen, often enough, and without too many
# false alarms. This notebook uses `ctcdyn.mrd` (`docs/mrd.md`) on the bundled `adjuvant` model:
# how early the documented default schedule detects relapse (the lead time), and how night
# draws, a larger blood volume (diagnostic leukapheresis) and monthly tests change that.
#
# Every virtual patient's residual clone is a branching process cell by cell while small (most
# small clones die out) and grows deterministically once large (the `Hybrid` engine); what a
# tube counts is sampled from the circulation at the clock hour of the draw, plus the assay's
# background. Every number comes with its Monte-Carlo standard error. Set
# `CTCDYN_NOTEBOOK_SMALL=1` for a quick run (400 virtual patients instead of 4000: the MC errors
# are about three times larger).

# %%
import dataclasses
import os

import jax
import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
import matplotlib.pyplot as plt
import numpy as np

import ctcdyn
from ctcdyn.mrd import default_schedule, lead_time, plot_comparison

jax.config.update("jax_enable_x64", True)
SMALL = os.environ.get("CTCDYN_NOTEBOOK_SMALL") == "1"
N_PATIENTS = 400 if SMALL else 4000

# %% [markdown]
# ## The schedules
# The scenario's default (`default_schedule`): a CellSearch tube of 7.5 mL every 91 days at
# 09:00 for five years, positive at >= 1 CTC. Three variations change one thing each:
#
# - **night**: the same tests at 04:00, near the circadian peak of shedding (Diamantopoulou et
#   al. 2022, Nature 607:156: more CTCs in the rest phase);
# - **leukapheresis**: quarterly diagnostic leukapheresis, which processes litres of blood
#   instead of 7.5 mL (the assay registry's default volume), with its own recovery and
#   background;
# - **monthly**: a tube every 30 days instead of every 91.
#
# Relapse is found when the metastatic burden reaches the spec's detection size (continuous
# surveillance, i.e. clinical manifestation).

# %%
spec = ctcdyn.load_spec("adjuvant")
default = dataclasses.replace(default_schedule(spec), name="quarterly 09:00 (default)")
schedules = [
    default,
    dataclasses.replace(default, clock_hour=4.0, name="quarterly 04:00"),
    dataclasses.replace(
        default, assay="leukapheresis", volume_ml=None, name="quarterly leukapheresis"
    ),
    dataclasses.replace(default, interval_days=30.0, first_day=30.0, name="monthly 09:00"),
]
for s in schedules:
    print(
        f"{s.label:<26} {s.assay_spec.name:<14} {s.volume:>7g} mL every {s.interval_days:g} "
        f"days at {s.clock_hour:g} h: {s.draw_times().size} tests, positive at >= "
        f"{s.threshold} CTC"
    )

# %% [markdown]
# ## Simulate
# All schedules are applied to the same virtual patients (common random numbers), so their
# differences are not blurred by different patients.

# %%
result = lead_time(spec, schedules, jax.random.key(2026), n_patients=N_PATIENTS)
table = result.summary()
print(
    f"{result.n_patients} virtual patients: relapse within 5 years "
    f"{table['p_relapse'].iloc[0]:.2f} ± {table['p_relapse_se'].iloc[0]:.2f}, "
    f"cured (clone extinct) {int(table['n_cured'].iloc[0])}"
)

# %% [markdown]
# ## Lead time of the default schedule
# Lead time is the time from the first positive test to the relapse. Two versions: the first
# positive test of any kind, and the first positive test that held at least one tumour CTC (a
# laboratory cannot tell them apart; a simulation can). At >= 1 CTC per tube the assay's
# background makes some tests positive with no tumour cell at all, so "any positive" often
# happens years before relapse: a false alarm that happened to precede it, not detection. The
# shaded band is the 7-9 weeks reported in the review (ref. 236 of the project's biology review,
# as cited in `docs/mrd.md`).

# %%
ds = result.patients.sel(schedule=default.label)
any_lead = ds["lead_days"].values
true_lead = ds["true_lead_days"].values
row = table.loc[default.label]
print(
    f"median lead time, any positive:   {row['median_lead_days'] / 7:5.1f} ± "
    f"{row['median_lead_days_se'] / 7:.1f} weeks"
)
print(
    f"median lead time, tumour CTC:     {row['median_true_lead_days'] / 7:5.1f} ± "
    f"{row['median_true_lead_days_se'] / 7:.1f} weeks"
)
print(
    f"P(positive before relapse) {row['p_detect_before_imaging']:.2f} ± "
    f"{row['p_detect_before_imaging_se']:.2f}; with a tumour CTC {row['p_detect_true']:.2f} ± "
    f"{row['p_detect_true_se']:.2f}; false positives per patient-year "
    f"{row['false_positives_per_year']:.2f} ± {row['false_positives_per_year_se']:.2f}"
)

fig, ax = plt.subplots(figsize=(8, 3.5))
bins = np.arange(0, 261, 13)
ax.hist(any_lead[~np.isnan(any_lead)] / 7, bins=bins, color="0.75", label="any positive test")
ax.hist(
    true_lead[~np.isnan(true_lead)] / 7,
    bins=bins,
    histtype="step",
    color="k",
    linewidth=1.5,
    label="positive with a tumour CTC",
)
ax.axvspan(7, 9, color="tab:blue", alpha=0.3, label="review: 7-9 weeks")
ax.set_xlabel("lead time: relapse - first positive test (weeks)")
ax.set_ylabel("relapsing patients")
ax.legend()
fig.tight_layout()

# %% [markdown]
# ## Comparing schedules
# Each row: a schedule's estimates, each ± its Monte-Carlo SE. `p_detect` is P(positive test
# before relapse) among relapsing patients; `true` counts only tests that held a tumour CTC;
# lead times are medians in weeks among the detected; false positives are positive tests per
# patient-year among cured patients (the background alone).


# %%
def with_se(column: str, scale: float = 1.0, digits: int = 2) -> list[str]:
    """``estimate ± SE`` strings of a summary column, divided by ``scale``."""
    est, se = table[column] / scale, table[f"{column}_se"] / scale
    return [f"{e:.{digits}f} ± {s:.{digits}f}" for e, s in zip(est, se, strict=True)]


readable = {
    "p_detect": with_se("p_detect_before_imaging"),
    "p_detect true": with_se("p_detect_true"),
    "median lead (wk)": with_se("median_lead_days", 7.0, 1),
    "median true lead (wk)": with_se("median_true_lead_days", 7.0, 1),
    "false pos / yr": with_se("false_positives_per_year"),
}
for name, values in readable.items():
    table[name] = values
print(table[list(readable)].to_string())

# %% [markdown]
# Because the schedules share their patients, a difference between two of them is best
# estimated patient by patient; the MC error of the paired difference is usually smaller than
# the two separate errors combined.

# %%
relapsed = ~np.isnan(ds["relapse_day"].values)


def detected_true(label: str) -> np.ndarray:
    lead = result.patients["true_lead_days"].sel(schedule=label).values
    return (~np.isnan(lead[relapsed])).astype(float)


for other in schedules[1:]:
    diff = detected_true(other.label) - detected_true(default.label)
    print(
        f"{other.label} - default, P(tumour-CTC positive before relapse): "
        f"{diff.mean():+.3f} ± {diff.std(ddof=1) / np.sqrt(diff.size):.3f} (paired)"
    )

# %% [markdown]
# The figure from `ctcdyn.mrd.plot_comparison` (the same as `ctcdyn leadtime --plot`): the
# distribution of lead times per schedule, and P(positive before relapse) with 95% MC intervals.
# Read the false-positive column with it: more tests or more blood find relapse more often and
# earlier, a night draw more often, and the background adds false alarms in proportion to the
# number of tests and the blood each one processes.

# %%
plot_comparison(result)
