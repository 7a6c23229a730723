"""A joint model of CTC counts and PFS, fitted on simulated mbc patients, predicts held-out
patients' progression better than the CellSearch >= 5 rule (slow).

The mbc scenario reproduces Cristofanilli et al. 2004 (tests/test_cristofanilli.py), so the
counts carry the published prognostic information; a model that uses the whole trajectory of
counts, not one dichotomised draw, should discriminate better. Run with
``pytest -m slow -s tests/test_survival_vs_rule.py`` (about 5 minutes on 2 cores).
"""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd
import pytest

from ctcdyn.diagnostics import check
from ctcdyn.inference import NUTSSettings
from ctcdyn.prognosis import (
    JointSpec,
    MarkerFormulas,
    Outcomes,
    WeibullHazard,
    compare_with_rule,
    fit_joint,
    joint_data,
    landmark_survival,
    rule_scores,
)
from ctcdyn.simulate import simulate_cohort
from ctcdyn.specs import load_spec
from ctcdyn.store import summarize

pytestmark = pytest.mark.slow

#: Landmark: the first follow-up draw (day 28 +- 3), where the rule is most prognostic
#: (Cristofanilli et al. 2004); predictions use the draws up to it, for patients still
#: progression-free then.
LANDMARK = 32.0
HORIZONS = np.array([60.0, 120.0])  # days after the landmark


def _after_landmark(table: pd.DataFrame) -> Outcomes:
    shifted = table.assign(pfs_time=table["pfs_time"] - LANDMARK)
    return Outcomes.from_table(shifted[shifted["pfs_time"] > 0], "pfs")


def test_joint_model_beats_the_cellsearch_rule_on_held_out_patients():
    cohort = simulate_cohort(load_spec("mbc"), 240, jax.random.key(7))
    patients = cohort.patients
    # a joint model uses the draws before the event only
    draws = cohort.draws.merge(patients[["patient_id", "pfs_time"]], on="patient_id")
    draws = draws[draws["time"] <= draws["pfs_time"]].drop(columns="pfs_time")
    ids = patients["patient_id"].to_numpy()
    train = patients[patients["patient_id"].isin(ids[:120])]
    test = patients[patients["patient_id"].isin(ids[120:])]

    spec = JointSpec(
        formulas=MarkerFormulas(marker="ctc", fixed="ctc ~ time", random="~ time"),
        family="negbin",
        event_time="pfs_time",
        event="pfs_event",
        baseline=WeibullHazard(),
    )
    data = joint_data(spec, draws[draws["patient_id"].isin(train["patient_id"])], train)
    nuts = NUTSSettings(chains=4, warmup=500, samples=500, target_accept=0.9)
    fit = fit_joint(data, jax.random.key(0), nuts=nuts)
    summary = summarize(fit.tree)
    gate = check(fit.tree, summary)
    assert gate.divergences == 0 and gate.worst_r_hat < 1.02, gate.failures
    alpha = summary.set_index("parameter").loc["alpha"]
    assert alpha["q5"] > 0  # higher counts, higher hazard: the link is found

    at_risk = test[test["pfs_time"] > LANDMARK]
    survival = landmark_survival(
        fit, at_risk, draws, jax.random.key(1), landmark=LANDMARK, horizons=HORIZONS
    )
    train_at_risk = train[train["pfs_time"] > LANDMARK]
    table = compare_with_rule(
        _after_landmark(train_at_risk),
        _after_landmark(at_risk),
        HORIZONS,
        train_rule=rule_scores(cohort.draws, train_at_risk["patient_id"], time=28.0),
        test_rule=rule_scores(cohort.draws, at_risk["patient_id"], time=28.0),
        survival=survival,
    )
    print(f"alpha {alpha['mean']:.3f} (90% {alpha['q5']:.3f} to {alpha['q95']:.3f})")
    print(table.round(3).to_string())
    rows = table.set_index("metric")
    # the summaries over both horizons: mean AUC, integrated Brier score, Uno's C
    for metric in ("mean_auc", "integrated_brier", "uno_c"):
        assert bool(rows.loc[metric, "model_better"]), rows.loc[metric]
    assert rows.loc["mean_auc", "model"] > rows.loc["mean_auc", "rule"] + 0.05
