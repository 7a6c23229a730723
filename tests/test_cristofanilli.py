"""The bundled ``mbc`` scenario against Cristofanilli et al. 2004 (FACTS.md, clinical calibration).

Reference numbers: Cristofanilli M, Budd GT, Ellis MJ, et al. Circulating tumor cells, disease
progression, and survival in metastatic breast cancer. N Engl J Med 2004;351:781-791 (abstract):
177 patients with measurable metastatic breast cancer about to start a new line of therapy,
CellSearch at baseline and at the first follow-up visit (3-5 weeks into therapy).

- share with >= 5 CTC / 7.5 mL: 49% at baseline, 30% at the first follow-up;
- baseline >= 5 vs < 5: median PFS 2.7 vs 7.0 months, median OS 10.1 vs > 18 months;
- first follow-up >= 5 vs < 5: median PFS 2.1 vs 7.0 months, median OS 8.2 vs > 18 months.

How the simulated cohort is read, as the study read its patients: the baseline draw is the first
draw (day 0, before therapy), the follow-up draw the second (day 28 +- 3); PFS and OS by baseline
group run from day 0, by follow-up group from the follow-up draw (a landmark analysis: patients
are grouped by a count that exists only if they lived to the draw, so time is counted from it;
patients without a follow-up draw are left out of that analysis). Months are 30.44 days.

Tolerances: the sampling error of a cohort of the published size, n = 177, around the simulated
value (the null hypothesis is that the scenario is right), plus the simulated cohort's own error.

- Shares: binomial, se^2 = p (1 - p) / 177 + p (1 - p) / n_sim.
- Medians: the published median t is consistent with the simulated survival curve S when a
  group of the published size would have put its Kaplan-Meier estimate at t within error of
  0.5: |S(t) - 0.5| <= z se, se^2 = S (1 - S) / n_group + S (1 - S) / n_sim_group (the
  Brookmeyer-Crowley construction of a median's confidence interval, read the other way; the
  Greenwood variance equals the binomial one here because the simulation censors nobody
  before the end of follow-up). n_group = the published share x 177 (87 / 90 at baseline,
  53 / 124 at follow-up). This is strict: the baseline medians come from the study's training
  set, a subset of the 177, whose error is larger.
- "> 18 months" (the curve had not reached 0.5 at 18 months): S(18 months) >= 0.5 - z se.
- z = 2.807: two-sided, Bonferroni over the ten checks at a family-wise 5%, so a correct
  scenario fails this test in at most 1 run in 20.

The fast tests below check the two mechanisms the calibration rests on: shedding per cell
division (a fast-growing disease sheds more) and progression read at scans (RECIST).
"""

from __future__ import annotations

import time

import jax
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ctcdyn.dynamics import Treatments
from ctcdyn.prognosis import kaplan_meier
from ctcdyn.simulate import draw_parameters, simulate_cohort
from ctcdyn.simulate._endpoints import endpoint_table
from ctcdyn.specs import SpecError, build_model, load_spec, parse_spec

N_SIM = 20_000
SEED = 2004
N_STUDY = 177
DAYS_PER_MONTH = 30.44
THRESHOLD = 5  # CTC per 7.5 mL (Cristofanilli 2004)
CHECKS = 10
Z = float(stats.norm.ppf(1.0 - 0.05 / (2 * CHECKS)))

#: Cristofanilli et al. 2004, NEJM 351:781, abstract (FACTS.md).
SHARE = {"baseline": 0.49, "follow-up": 0.30}
#: (draw, endpoint, group) -> published median in months; None: "> 18 months".
MEDIAN = {
    ("baseline", "pfs", ">=5"): 2.7,
    ("baseline", "pfs", "<5"): 7.0,
    ("baseline", "os", ">=5"): 10.1,
    ("baseline", "os", "<5"): None,
    ("follow-up", "pfs", ">=5"): 2.1,
    ("follow-up", "pfs", "<5"): 7.0,
    ("follow-up", "os", ">=5"): 8.2,
    ("follow-up", "os", "<5"): None,
}
NOT_REACHED_MONTHS = 18.0


def _groups(cohort) -> dict[str, pd.DataFrame]:
    """Per draw (baseline, follow-up): patients with the count, its time, and their endpoints."""
    draws = cohort.draws.sort_values(["patient_id", "time"])
    ordinal = draws.groupby("patient_id").cumcount()
    patients = cohort.patients.set_index("patient_id")
    out = {}
    for name, k in (("baseline", 0), ("follow-up", 1)):
        at = draws[ordinal == k].set_index("patient_id")[["time", "ctc"]]
        out[name] = at.join(patients, how="inner")
    return out


def _survival_at(times: np.ndarray, events: np.ndarray, months: float) -> float:
    km = kaplan_meier((times, events))
    return float(km(months * DAYS_PER_MONTH))


def _median_months(times: np.ndarray, events: np.ndarray) -> float:
    km = kaplan_meier((times, events))
    below = np.nonzero(km.values <= 0.5)[0]
    return float(km.times[below[0]] / DAYS_PER_MONTH) if below.size else float("inf")


def _check_share(table: pd.DataFrame, draw: str) -> tuple[str, bool]:
    n = len(table)
    p = float((table["ctc"] >= THRESHOLD).mean())
    se = np.sqrt(p * (1 - p) / N_STUDY + p * (1 - p) / n)
    ok = abs(p - SHARE[draw]) <= Z * se
    line = (
        f"{draw} share >= {THRESHOLD}: simulated {p:.3f} (n = {n}), published "
        f"{SHARE[draw]:.2f}, allowed +- {Z * se:.3f}"
    )
    return line, ok


def _check_median(table: pd.DataFrame, draw: str, endpoint: str, group: str) -> tuple[str, bool]:
    positive = table["ctc"] >= THRESHOLD
    members = table[positive if group == ">=5" else ~positive]
    times = (members[f"{endpoint}_time"] - members["time"]).to_numpy()
    events = members[f"{endpoint}_event"].to_numpy()
    share = SHARE[draw] if group == ">=5" else 1.0 - SHARE[draw]
    n_group = share * N_STUDY
    published = MEDIAN[(draw, endpoint, group)]
    at = NOT_REACHED_MONTHS if published is None else published
    s = _survival_at(times, events, at)
    se = np.sqrt(s * (1 - s) / n_group + s * (1 - s) / len(members))
    if published is None:
        ok = s >= 0.5 - Z * se
        claim = f"> {NOT_REACHED_MONTHS:g}"
    else:
        ok = abs(s - 0.5) <= Z * se
        claim = f"{published:g}"
    line = (
        f"{draw} {endpoint.upper()} {group}: simulated median "
        f"{_median_months(times, events):.1f} months, S({at:g} mo) = {s:.3f} "
        f"(n = {len(members)}); published {claim} months, allowed |S - 0.5| <= {Z * se:.3f}"
    )
    return line, ok


@pytest.mark.slow
def test_mbc_reproduces_cristofanilli_2004():
    start = time.perf_counter()
    cohort = simulate_cohort(load_spec("mbc"), N_SIM, jax.random.key(SEED))
    elapsed = time.perf_counter() - start
    groups = _groups(cohort)
    results = [_check_share(groups[draw], draw) for draw in SHARE]
    results += [_check_median(groups[d], d, e, g) for (d, e, g) in MEDIAN]
    assert len(results) == CHECKS
    report = "\n".join(("ok   " if ok else "FAIL ") + line for line, ok in results)
    print(f"simulated {N_SIM} patients in {elapsed:.0f} s (seed {SEED}); z = {Z:.3f}\n{report}")
    assert all(ok for _, ok in results), "\n" + report


# -- the mechanisms, fast ------------------------------------------------------------------------


def test_shedding_per_division_is_per_cell_shedding_times_growth_rate():
    spec = load_spec("mbc")
    values = draw_parameters(spec, 5, jax.random.key(0))
    model = build_model(spec, values, Treatments.none())
    growth = np.asarray(values["growth_rate"])  # 1/day, no turnover declared in mbc
    np.testing.assert_allclose(
        model.shedding_single, np.asarray(values["shedding_single_per_division"]) * growth
    )
    np.testing.assert_allclose(
        model.shedding_cluster, np.asarray(values["shedding_cluster_per_division"]) * growth
    )
    np.testing.assert_allclose(model.metastatic_growth.rate_per_day, growth)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (
            "[parameters.growth_rate]",
            '[parameters.metastatic_growth_rate]\nunit = "1/day"\nvalue = 0.01\nsource = "x"\n\n'
            "[parameters.growth_rate]",
        ),
        (
            "[parameters.shedding_single_per_division]",
            '[parameters.shedding_single]\nunit = "1/day"\nvalue = 1e-6\nsource = "x"\n\n'
            "[parameters.shedding_single_per_division]",
        ),
    ],
    ids=["separate metastatic rate", "both kinds of shedding"],
)
def test_shedding_per_division_needs_one_division_rate_and_one_kind(old, new):
    text = load_spec("mbc").path.read_text()
    assert old in text
    with pytest.raises(SpecError, match="shedding"):
        parse_spec(text.replace(old, new, 1))


def test_progression_is_read_at_scans_against_the_smallest_burden_seen():
    spec = load_spec("mbc")
    plan = spec.scenario("default")
    grid = np.arange(0.0, 101.0)
    burden = np.ones((3, grid.size)) * 1e9
    burden[0, 30:] = 2e9  # doubles on day 30: found at the scan on day 50
    burden[1, 10:] = 0.5e9  # halves, seen halved on day 20, then 0.9 (>= 1.728 x 0.5) from 40
    burden[1, 40:] = 0.9e9
    burden[2, 5:15] = 0.5e9  # a dip no scan sees: 0.8 on day 20 is the nadir, 1.0 < 1.728 x 0.8
    burden[2, 15:40] = 0.8e9
    scans = np.array([[20.0, 50.0, 80.0]] * 3)
    table = endpoint_table(spec, plan, grid, np.zeros_like(burden), burden, scans)
    assert table["pfs_time"].tolist() == [50.0, 50.0, 100.0]
    assert table["pfs_event"].tolist() == [1, 1, 0]
    daily = endpoint_table(spec, plan, grid, np.zeros_like(burden), burden)
    assert daily["pfs_time"].tolist() == [30.0, 40.0, 40.0]  # daily: the dip is the nadir


def test_simulated_progression_falls_on_the_scan_schedule():
    spec = load_spec("mbc")
    plan = spec.scenario("default")
    cohort = simulate_cohort(spec, 300, jax.random.key(3))
    p = cohort.patients
    progressed = (p["pfs_event"] == 1) & ~((p["os_event"] == 1) & (p["os_time"] == p["pfs_time"]))
    assert progressed.sum() > 100
    nominal = np.asarray(plan.imaging_days)
    distance = np.abs(p.loc[progressed, "pfs_time"].to_numpy()[:, None] - nominal[None, :])
    assert np.all(distance.min(axis=1) <= plan.imaging_jitter_days)
