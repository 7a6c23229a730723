"""Accuracy metrics of survival predictions: hand-computed cases, limits, identities, errors, and
agreement with scikit-survival (a test-only peer; those tests skip when it is not installed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctcdyn.prognosis import (
    COMPARISON_COLUMNS,
    Outcomes,
    brier_score,
    cellsearch_rule,
    censoring_distribution,
    compare_with_rule,
    cumulative_dynamic_auc,
    integrated_brier_score,
    kaplan_meier,
    rule_scores,
    rule_survival,
    uno_c,
)

# Tiny data set: distinct times 1..6, censored at 2 and 5.
TIME = np.array([1.0, 2, 3, 4, 5, 6])
EVENT = np.array([1, 0, 1, 1, 0, 1])
RISK = np.array([0.9, 0.1, 0.2, 0.8, 0.5, 0.3])


def _cohort(rng: np.random.Generator, n: int, *, censor_scale: float, ties: bool):
    """Exponential event times (hazard exp(x) / 100 per day) and exponential censoring."""
    x = rng.normal(size=n)
    event_time = rng.exponential(100.0 * np.exp(-x))
    censor_time = rng.exponential(censor_scale, n)
    time = np.minimum(event_time, censor_time)
    if ties:
        time = np.ceil(time / 10.0) * 10.0
        x = np.round(x)
    return Outcomes(time, event_time <= censor_time), x


def _brute_auc(train, test, risk, t):
    """AUC(t) by the double sum of the definition (no sorting, no grouping)."""
    g = censoring_distribution(train)
    num = den = 0.0
    for i in range(len(test)):
        if not (test.event[i] and test.time[i] <= t):
            continue
        w = 1.0 / g(test.time[i])
        for j in range(len(test)):
            if test.time[j] > t:
                num += w * (1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0)
                den += w
    return num / den


def _brute_c(train, test, risk, tau):
    g = censoring_distribution(train)
    num = den = 0.0
    for i in range(len(test)):
        if not (test.event[i] and test.time[i] < tau):
            continue
        w = g(test.time[i]) ** -2.0
        for j in range(len(test)):
            later = test.time[j] > test.time[i]
            tied_censored = test.time[j] == test.time[i] and not test.event[j]
            if later or tied_censored:
                num += w * (1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0)
                den += w
    return num / den


# --- Kaplan-Meier ------------------------------------------------------------------------------


def test_kaplan_meier_by_hand():
    # at risk 7, 6, 4, 3, 1 at times 1..5; events 1, 1, 1, 1, 0; censorings 0, 1, 0, 1, 1
    time = np.array([1.0, 2, 2, 3, 4, 4, 5])
    event = np.array([1, 1, 0, 1, 0, 1, 0])
    s = kaplan_meier((time, event))
    np.testing.assert_allclose(s.times, [1, 2, 3, 4, 5])
    np.testing.assert_allclose(s.values, [6 / 7, 5 / 7, 15 / 28, 5 / 14, 5 / 14], rtol=1e-14)
    # censoring: events leave first, so censorings at 2 see 5 at risk, at 4 see 2, at 5 see 1
    g = kaplan_meier((time, event), reverse=True)
    np.testing.assert_allclose(g.values, [1, 4 / 5, 4 / 5, 2 / 5, 0], rtol=1e-14)
    np.testing.assert_allclose(g([0.5, 2, 3.5, 4, 7]), [1, 4 / 5, 4 / 5, 2 / 5, 0], rtol=1e-14)
    np.testing.assert_allclose(g.left([2, 4, 4.5]), [1, 4 / 5, 2 / 5], rtol=1e-14)
    with pytest.raises(ValueError, match="undefined after the last observed time 5"):
        s(6.0)
    assert kaplan_meier((time, event), plateau=True)(100.0) == pytest.approx(5 / 14)


def test_kaplan_meier_without_censoring_is_the_empirical_survival():
    rng = np.random.default_rng(0)
    time = rng.integers(1, 20, size=50).astype(float)
    s = kaplan_meier((time, np.ones(50)))
    grid = np.arange(0.0, 19.5, 0.5)
    np.testing.assert_allclose(s(grid), (time[:, None] > grid).mean(axis=0), atol=1e-14)
    np.testing.assert_array_equal(censoring_distribution((time, np.ones(50)))(grid), 1.0)


def test_at_risk_identity():
    """#{T > t} / n = S(t) G(t) exactly, with ties between events and censorings."""
    rng = np.random.default_rng(1)
    out, _ = _cohort(rng, 300, censor_scale=60.0, ties=True)
    grid = np.linspace(0.0, out.time.max() - 1, 40)
    s, g = kaplan_meier(out)(grid), censoring_distribution(out)(grid)
    np.testing.assert_allclose(s * g, (out.time[:, None] > grid).mean(axis=0), atol=1e-13)


# --- AUC and Uno's C ---------------------------------------------------------------------------


def test_auc_by_hand():
    # G: 1 before 2, 4/5 on [2, 5), 2/5 from 5. At t = 4.5 the cases are T = 1, 3, 4 with
    # weights 1, 5/4, 5/4 and the controls T = 5, 6 (risks 0.5, 0.3). Case risks 0.9, 0.2, 0.8
    # beat 2, 0, 2 controls: AUC = (1*2 + 5/4*0 + 5/4*2) / ((1 + 5/4 + 5/4) * 2) = 9/14.
    res = cumulative_dynamic_auc((TIME, EVENT), (TIME, EVENT), RISK, [4.5])
    assert res.auc[0] == pytest.approx(9 / 14, rel=1e-14)
    assert res.mean_auc == res.auc[0]


def test_uno_c_by_hand():
    # Anchors (events before tau = 4.5): T = 1 (w 1), 3 (w (5/4)^2), 4 (w (5/4)^2).
    # T=1 vs 2..6: risk 0.9 beats all 5. T=3 vs 4, 5, 6: 0.2 beats none of 0.8, 0.5, 0.3.
    # T=4 vs 5, 6: 0.8 beats both. C = (5 + 25/16 * 0 + 25/16 * 2) / (5 + 25/16 * 3 + 25/16 * 2)
    c = uno_c((TIME, EVENT), (TIME, EVENT), RISK, tau=4.5)
    expected = (5 + 25 / 16 * 2) / (5 + 25 / 16 * 5)
    assert c == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("ties", [False, True])
def test_auc_and_c_match_the_double_sum(ties):
    rng = np.random.default_rng(2)
    train, _ = _cohort(rng, 80, censor_scale=80.0, ties=ties)
    test, x = _cohort(rng, 60, censor_scale=80.0, ties=ties)
    train = Outcomes(np.r_[train.time, test.time.max() + 1], np.r_[train.event, False])
    times = np.quantile(test.time[test.event], [0.3, 0.6, 0.9])
    res = cumulative_dynamic_auc(train, test, x, times)
    for t, a in zip(times, res.auc, strict=True):
        assert a == pytest.approx(_brute_auc(train, test, x, t), abs=1e-12)
    tau = float(np.quantile(test.time, 0.8))
    assert uno_c(train, test, x, tau=tau) == pytest.approx(_brute_c(train, test, x, tau), abs=1e-12)


def test_limits_of_discrimination():
    rng = np.random.default_rng(3)
    out, _ = _cohort(rng, 400, censor_scale=150.0, ties=False)
    perfect = -out.time  # earlier time, higher risk
    times = np.quantile(out.time, [0.2, 0.5, 0.8])
    assert cumulative_dynamic_auc(out, out, perfect, times).auc == pytest.approx(1.0)
    assert cumulative_dynamic_auc(out, out, -perfect, times).auc == pytest.approx(0.0)
    assert cumulative_dynamic_auc(out, out, np.zeros(400), times).auc == pytest.approx(0.5)
    assert uno_c(out, out, perfect) == pytest.approx(1.0)
    assert uno_c(out, out, -perfect) == pytest.approx(0.0)
    assert uno_c(out, out, np.ones(400)) == pytest.approx(0.5)
    # monotone transforms of the score change nothing
    x = rng.normal(size=400)
    a = cumulative_dynamic_auc(out, out, x, times).auc
    np.testing.assert_allclose(cumulative_dynamic_auc(out, out, np.exp(3 * x), times).auc, a)
    assert uno_c(out, out, np.exp(3 * x)) == pytest.approx(uno_c(out, out, x), abs=1e-14)


def test_random_scores_give_one_half():
    rng = np.random.default_rng(4)
    out, _ = _cohort(rng, 3000, censor_scale=150.0, ties=False)
    noise = rng.normal(size=3000)  # independent of the outcome
    times = np.quantile(out.time, [0.3, 0.6])
    # sd of an AUC or C from ~1000 x 1000 pairs is ~0.01; 0.04 is 4 sd
    assert np.abs(cumulative_dynamic_auc(out, out, noise, times).auc - 0.5).max() < 0.04
    assert abs(uno_c(out, out, noise, tau=float(times[-1])) - 0.5) < 0.04


def test_auc_per_horizon_scores():
    """A 2-D score uses column m at horizon m only."""
    out = Outcomes(TIME, EVENT)
    risk = np.column_stack((RISK, -RISK))
    res = cumulative_dynamic_auc(out, out, risk, [3.5, 4.5])
    assert res.auc[0] == cumulative_dynamic_auc(out, out, RISK, [3.5]).auc[0]
    assert res.auc[1] == cumulative_dynamic_auc(out, out, -RISK, [4.5]).auc[0]


# --- Brier score -------------------------------------------------------------------------------


def test_brier_of_the_kaplan_meier_prediction():
    """Predicting everyone's S(t) by the Kaplan-Meier of the same data gives S(t)(1 - S(t)).

    With no censoring at an event time, G(T_i) = G(T_i-) and the IPCW sums reproduce the
    Kaplan-Meier exactly (the at-risk identity), so BS(t) = (1 - S) S^2 + S (1 - S)^2.
    """
    rng = np.random.default_rng(5)
    out, _ = _cohort(rng, 500, censor_scale=80.0, ties=False)
    times = np.quantile(out.time, [0.1, 0.4, 0.7, 0.95])
    s = kaplan_meier(out)(times)
    bs = brier_score(out, out, np.broadcast_to(s, (500, 4)), times)
    np.testing.assert_allclose(bs, s * (1 - s), atol=1e-13)


def test_left_limit_weights_reproduce_kaplan_meier_with_ties():
    """With censorings tied to events, only G(T_i-) weights keep BS(KM) = S(1 - S) exact."""
    rng = np.random.default_rng(7)
    out, _ = _cohort(rng, 400, censor_scale=60.0, ties=True)
    times = np.unique(out.time)[[3, 6, 9]]
    s = kaplan_meier(out)(times)
    pred = np.broadcast_to(s, (400, 3))
    exact = brier_score(out, out, pred, times, left_limit=True)
    np.testing.assert_allclose(exact, s * (1 - s), atol=1e-13)
    default = brier_score(out, out, pred, times)  # scikit-survival's G(T_i)
    assert np.abs(default - s * (1 - s)).max() > 1e-4


def test_brier_limits_and_integral():
    out = Outcomes(TIME, np.ones(6))
    times = np.array([1.5, 2.5, 3.5])
    truth = (TIME[:, None] > times).astype(float)  # the outcome itself
    np.testing.assert_allclose(brier_score(out, out, truth, times), 0.0)
    np.testing.assert_allclose(brier_score(out, out, 1 - truth, times), 1.0)
    np.testing.assert_allclose(brier_score(out, out, np.full((6, 3), 0.5), times), 0.25)
    # integral of a constant score is the constant; of 0, 1, 0 on equal steps it is 1/2
    assert integrated_brier_score(out, out, np.full((6, 3), 0.5), times) == pytest.approx(0.25)
    middle = np.where([0, 1, 0], 1 - truth, truth)
    assert integrated_brier_score(out, out, middle, times) == pytest.approx(0.5)


def test_brier_by_hand_with_censoring():
    # At t = 4.5 (G(4.5) = 4/5): cases T = 1, 3, 4 with 1/G = 1, 5/4, 5/4; controls T = 5, 6;
    # T = 2 (censored before t) contributes 0.
    s = np.array([0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    expected = (0.7**2 * 1 + 0.5**2 * 5 / 4 + 0.4**2 * 5 / 4 + (0.7**2 + 0.8**2) / (4 / 5)) / 6
    assert brier_score((TIME, EVENT), (TIME, EVENT), s, [4.5])[0] == pytest.approx(expected)


# --- input errors ------------------------------------------------------------------------------


def test_bad_input_is_refused():
    out = Outcomes(TIME, EVENT)
    with pytest.raises(ValueError, match="time has 6 patients but event has 5"):
        Outcomes(TIME, EVENT[:5])
    with pytest.raises(ValueError, match="must be finite"):
        Outcomes(np.r_[TIME[:5], np.nan], EVENT)
    with pytest.raises(ValueError, match="position 2 is 2"):
        Outcomes(TIME, [1, 0, 2, 1, 0, 1])
    with pytest.raises(TypeError, match="train must be Outcomes or a"):
        uno_c(TIME, out, RISK)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shape \(6,\) or \(6, 1\)"):
        cumulative_dynamic_auc(out, out, RISK[:5], [3.0])
    with pytest.raises(ValueError, match="NaN"):
        uno_c(out, out, np.r_[RISK[:5], np.nan])
    with pytest.raises(ValueError, match=r"within the follow-up .* \[1, 6\) days"):
        cumulative_dynamic_auc(out, out, RISK, [2.0, 6.0])
    with pytest.raises(ValueError, match=r"within the follow-up"):
        brier_score(out, out, np.full(6, 0.5), [0.5])
    with pytest.raises(ValueError, match="strictly increasing"):
        cumulative_dynamic_auc(out, out, RISK, [3.0, 2.0])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        brier_score(out, out, np.full(6, 1.5), [3.0])
    with pytest.raises(ValueError, match=r"shape \(6, 2\)"):
        brier_score(out, out, np.full(6, 0.5), [3.0, 4.0])
    with pytest.raises(ValueError, match="at least two horizons"):
        integrated_brier_score(out, out, np.full(6, 0.5), [3.0])
    with pytest.raises(ValueError, match="no comparable pair"):
        uno_c(out, Outcomes(TIME, np.zeros(6)), RISK)


def test_censoring_distribution_zero_or_undefined_is_an_error():
    # every training patient still followed at 3 was censored there: G(3) = 0
    train = Outcomes([1.0, 2.0, 3.0], [1, 1, 0])
    test = Outcomes([1.0, 2.0, 3.5, 4.0], [1, 1, 1, 0])
    with pytest.raises(ValueError, match=r"censoring distribution is 0 at a test event's time"):
        uno_c(train, test, [4.0, 3.0, 2.0, 1.0])
    with pytest.raises(ValueError, match=r"0 at horizon 3\.5"):
        brier_score(train, test, np.full(4, 0.5), [3.5])
    # G > 0 at the training's last time: undefined beyond it
    train = Outcomes([1.0, 2.0, 3.0], [0, 1, 1])
    with pytest.raises(ValueError, match="censoring estimate is undefined after"):
        cumulative_dynamic_auc(train, test, [4.0, 3.0, 2.0, 1.0], [3.75])


# --- the CellSearch rule -----------------------------------------------------------------------


def test_cellsearch_rule():
    np.testing.assert_array_equal(cellsearch_rule([0, 4, 5, 60]), [0, 0, 1, 1])
    # 9 or 10 cells in 15 mL are 4.5 or 5 per 7.5 mL
    np.testing.assert_array_equal(cellsearch_rule([9, 10], volume_ml=15.0), [0, 1])
    np.testing.assert_array_equal(cellsearch_rule([2, 3], threshold=3), [0, 1])
    with pytest.raises(ValueError, match="counts >= 0"):
        cellsearch_rule([-1, 3])
    with pytest.raises(ValueError, match="volume_ml"):
        cellsearch_rule([1, 3], volume_ml=0.0)


def _draws() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": ["a", "a", "b", "b", "c", "c"],
            "time": [-1.0, 28.0, 2.0, 30.0, 0.0, 27.0],
            "volume_ml": 7.5,
            "assay": "cellsearch",
            "ctc": pd.array([7, 1, 3, 12, 5, pd.NA], dtype="Int64"),
            "ctc_censor": np.int8(0),
        }
    )


def test_rule_scores_from_draws():
    draws = _draws()
    np.testing.assert_array_equal(rule_scores(draws, ["c", "a", "b"]), [1, 1, 0])
    # first follow-up: c's count there is missing
    np.testing.assert_array_equal(rule_scores(draws, ["a", "b"], time=28.0), [0, 1])
    with pytest.raises(ValueError, match=r"no cellsearch count within 1 days of day 28.*'c'"):
        rule_scores(draws, ["a", "c"], time=28.0, tolerance_days=1.0)
    censored = draws.assign(ctc_censor=np.int8([0, 0, 1, 0, 0, 0]))  # b: "at least 3"
    with pytest.raises(ValueError, match=r"do not decide the rule for patient\(s\) \['b'\]"):
        rule_scores(censored, ["a", "b"])


def test_rule_survival_is_the_group_kaplan_meier():
    # group 1: T = 1, 4 (both events): S = 1/2 on [1, 4), 0 from 4.
    # group 0: T = 2+, 3, 5+, 6: S = 2/3 on [3, 6) (3 at risk at 3), 0 from 6.
    train = Outcomes(TIME, EVENT)
    groups = np.array([1, 0, 0, 1, 0, 0])
    s = rule_survival(train, groups, np.array([0, 1, 0]), [3.5, 5.5, 10.0])
    np.testing.assert_allclose(s, [[2 / 3, 2 / 3, 0], [1 / 2, 0, 0], [2 / 3, 2 / 3, 0]])
    with pytest.raises(ValueError, match="no training patient has rule score 1"):
        rule_survival(train, np.zeros(6), np.array([1.0]), [3.0])


def test_model_beats_the_rule_when_it_sees_the_continuous_marker():
    """Outcomes driven by a continuous marker: the marker itself beats its dichotomy."""
    rng = np.random.default_rng(6)
    train, x_train = _cohort(rng, 600, censor_scale=200.0, ties=False)
    test, x_test = _cohort(rng, 600, censor_scale=200.0, ties=False)
    times = np.quantile(test.time[test.event], [0.25, 0.5, 0.75])
    table = compare_with_rule(
        train,
        test,
        times,
        train_rule=(x_train > 0).astype(float),
        test_rule=(x_test > 0).astype(float),
        risk=x_test,
    )
    assert tuple(table.columns) == COMPARISON_COLUMNS
    assert list(table["metric"]) == ["auc"] * 3 + ["mean_auc"] + ["brier"] * 3 + [
        "integrated_brier",
        "uno_c",
    ]
    discrimination = table[table["metric"].isin(["auc", "mean_auc", "uno_c"])]
    assert discrimination["model_better"].all()
    assert table.loc[table["metric"] == "brier", "model"].isna().all()  # no survival given
    # the rule's rows are the metrics called directly
    rule = (x_test > 0).astype(float)
    direct = cumulative_dynamic_auc(train, test, rule, times).auc
    np.testing.assert_array_equal(table.loc[table["metric"] == "auc", "rule"], direct)
    c = uno_c(train, test, rule, tau=float(times[-1]))
    assert table.loc[table["metric"] == "uno_c", "rule"].item() == c


# --- agreement with scikit-survival ------------------------------------------------------------

CASES = [
    # (seed, patients, censoring scale in days (smaller = heavier), tied times and scores)
    (10, 40, 200.0, False),
    (11, 150, 100.0, True),
    (12, 250, 25.0, False),  # heavy censoring, ~80%
    (13, 120, 25.0, True),
    (14, 300, 60.0, True),
]


def _sksurv_case(seed, n, censor_scale, ties):
    rng = np.random.default_rng(seed)
    train, _ = _cohort(rng, n, censor_scale=censor_scale, ties=ties)
    test, x = _cohort(rng, n // 2 + 7, censor_scale=censor_scale, ties=ties)
    # a training patient censored after the test follow-up, so G is defined wherever needed
    train = Outcomes(np.r_[train.time, test.time.max() + 1], np.r_[train.event, False])
    times = np.unique(np.quantile(test.time[test.event], [0.1, 0.3, 0.5, 0.7, 0.9]))
    times = times[(times >= test.time.min()) & (times < test.time.max())]
    return rng, train, test, x, times


@pytest.mark.parametrize("case", CASES)
def test_agrees_with_scikit_survival(case):
    sksurv_metrics = pytest.importorskip("sksurv.metrics")
    from sksurv.nonparametric import kaplan_meier_estimator
    from sksurv.util import Surv

    rng, train, test, x, times = _sksurv_case(*case)
    y_train = Surv.from_arrays(train.event, train.time)
    y_test = Surv.from_arrays(test.event, test.time)
    atol = 1e-12

    for reverse in (False, True):
        t_ref, s_ref = kaplan_meier_estimator(train.event, train.time, reverse=reverse)
        km = kaplan_meier(train, reverse=reverse)
        np.testing.assert_array_equal(km.times, t_ref)
        np.testing.assert_allclose(km.values, s_ref, rtol=0, atol=atol)

    auc_ref, mean_ref = sksurv_metrics.cumulative_dynamic_auc(y_train, y_test, x, times)
    res = cumulative_dynamic_auc(train, test, x, times)
    np.testing.assert_allclose(res.auc, auc_ref, rtol=0, atol=atol)
    assert res.mean_auc == pytest.approx(mean_ref, abs=atol)

    # per-horizon scores with ties (a predicted survival rounded to 0.1)
    surv = np.round(rng.uniform(size=(len(test), times.size)), 1)
    auc_ref2, mean_ref2 = sksurv_metrics.cumulative_dynamic_auc(y_train, y_test, 1 - surv, times)
    res2 = cumulative_dynamic_auc(train, test, 1 - surv, times)
    np.testing.assert_allclose(res2.auc, auc_ref2, rtol=0, atol=atol)
    assert res2.mean_auc == pytest.approx(mean_ref2, abs=atol)

    _, bs_ref = sksurv_metrics.brier_score(y_train, y_test, surv, times)
    np.testing.assert_allclose(brier_score(train, test, surv, times), bs_ref, rtol=0, atol=atol)
    ibs_ref = sksurv_metrics.integrated_brier_score(y_train, y_test, surv, times)
    assert integrated_brier_score(train, test, surv, times) == pytest.approx(ibs_ref, abs=atol)

    for tau in (None, float(np.quantile(test.time, 0.6))):
        c_ref = sksurv_metrics.concordance_index_ipcw(y_train, y_test, x, tau=tau)[0]
        assert uno_c(train, test, x, tau=tau) == pytest.approx(c_ref, abs=atol)


def test_agrees_with_scikit_survival_without_censoring():
    """All training patients have the event: G = 1 (scikit-survival's special case)."""
    sksurv_metrics = pytest.importorskip("sksurv.metrics")
    from sksurv.util import Surv

    rng = np.random.default_rng(15)
    train = Outcomes(np.r_[rng.exponential(100.0, 60), 1000.0], np.ones(61))
    test, x = _cohort(rng, 50, censor_scale=100.0, ties=False)
    y_train = Surv.from_arrays(train.event, train.time)
    y_test = Surv.from_arrays(test.event, test.time)
    times = np.quantile(test.time[test.event], [0.25, 0.5, 0.75])
    auc_ref, mean_ref = sksurv_metrics.cumulative_dynamic_auc(y_train, y_test, x, times)
    res = cumulative_dynamic_auc(train, test, x, times)
    np.testing.assert_allclose(res.auc, auc_ref, rtol=0, atol=1e-12)
    assert res.mean_auc == pytest.approx(mean_ref, abs=1e-12)
    surv = rng.uniform(size=(50, 3))
    _, bs_ref = sksurv_metrics.brier_score(y_train, y_test, surv, times)
    np.testing.assert_allclose(brier_score(train, test, surv, times), bs_ref, rtol=0, atol=1e-12)
    c_ref = sksurv_metrics.concordance_index_ipcw(y_train, y_test, x)[0]
    assert uno_c(train, test, x) == pytest.approx(c_ref, abs=1e-12)
