"""The CellSearch >= 5 CTC / 7.5 mL rule: the comparator every CTC prognostic model must beat.

Cristofanilli et al. (2004), N Engl J Med 351:781-791: in metastatic breast cancer, >= 5 CTC per
7.5 mL of blood at baseline (or at the first follow-up draw) marks shorter progression-free and
overall survival. As a prognostic model the rule is a binary risk score (1 = ">= 5"); its
predicted event-free probability is the Kaplan–Meier estimate of its group among the training
patients, as Graf et al. (1999) evaluate prognostic classification schemes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from ._accuracy import (
    OutcomesLike,
    brier_score,
    cumulative_dynamic_auc,
    integrated_brier_score,
    uno_c,
)
from ._censoring import kaplan_meier
from ._outcomes import Outcomes, as_outcomes

#: The CellSearch cut-off, CTC per 7.5 mL (metastatic breast and prostate cancer; FACTS.md).
CELLSEARCH_THRESHOLD = 5.0
#: Blood volume of one CellSearch tube, mL.
CELLSEARCH_VOLUME_ML = 7.5
#: Columns of :func:`compare_with_rule`'s table.
COMPARISON_COLUMNS = ("metric", "time", "model", "rule", "model_better")


def cellsearch_rule(
    ctc: npt.ArrayLike,
    *,
    volume_ml: npt.ArrayLike = CELLSEARCH_VOLUME_ML,
    threshold: float = CELLSEARCH_THRESHOLD,
) -> np.ndarray:
    """Binary risk score of the CellSearch rule: 1.0 where CTC per 7.5 mL >= ``threshold``.

    Args:
        ctc: CTC counted in each draw (cells), e.g. each patient's baseline count.
        volume_ml: blood processed for each count, mL (a count from another volume is scaled to
            7.5 mL before the cut-off).
        threshold: the cut-off, CTC per 7.5 mL (5 in breast and prostate, 3 in colorectal
            cancer).

    Returns:
        Float array of 0.0 (< threshold) and 1.0 (>= threshold), the shape of ``ctc``.

    Raises:
        ValueError: a count is negative or NaN, or a volume is not positive.
    """
    count = np.asarray(ctc, dtype=float)
    volume = np.asarray(volume_ml, dtype=float)
    if np.isnan(count).any() or np.any(count < 0):
        raise ValueError("ctc must be counts >= 0 without missing values")
    if not np.all(np.isfinite(volume) & (volume > 0)):
        raise ValueError(f"volume_ml must be finite and > 0 mL, got {volume_ml!r}")
    return (count * (CELLSEARCH_VOLUME_ML / volume) >= threshold).astype(float)


def rule_scores(
    draws: pd.DataFrame,
    patient_ids: npt.ArrayLike,
    *,
    time: float = 0.0,
    tolerance_days: float = 7.0,
    assay: str = "cellsearch",
    threshold: float = CELLSEARCH_THRESHOLD,
) -> np.ndarray:
    """The rule's score for each patient from the draw nearest to ``time``.

    Args:
        draws: the draws table (patient_id, time, volume_ml, assay, ctc; optional ctc_censor),
            as read by :func:`ctcdyn.read_tables` or written by ``ctcdyn simulate``.
        patient_ids: the patients to score, in the order of the outcomes they go with.
        time: days from baseline of the draw to use: 0 for baseline; e.g. 28 for the first
            follow-up draw of Cristofanilli et al. (3-5 weeks into therapy).
        tolerance_days: how far from ``time`` the nearest draw may be (the earlier one wins a
            tie).
        assay: only draws of this assay count.
        threshold: the cut-off, CTC per 7.5 mL.

    Returns:
        Shape (patients,); 0.0 or 1.0 per patient.

    Raises:
        ValueError: a patient has no usable draw within the tolerance, or a censored count does
            not decide the rule (e.g. "at most 8" against a cut-off of 5).
    """
    ids = pd.Index(np.asarray(patient_ids).astype(str))
    d = draws[(draws["assay"] == assay) & draws["ctc"].notna()]
    d = d.assign(patient_id=d["patient_id"].astype(str), _gap=(d["time"] - time).abs()).sort_values(
        ["patient_id", "_gap", "time"], kind="stable"
    )
    d = d[d["_gap"] <= tolerance_days].drop_duplicates("patient_id").set_index("patient_id")
    missing = ids.difference(d.index)
    if len(missing):
        raise ValueError(
            f"{len(missing)} patient(s) have no {assay} count within {tolerance_days:g} days of "
            f"day {time:g}, e.g. {list(missing[:5])}; widen tolerance_days or drop them"
        )
    d = d.loc[ids]
    count = d["ctc"].to_numpy(dtype=float)
    scores = cellsearch_rule(count, volume_ml=d["volume_ml"].to_numpy(float), threshold=threshold)
    if "ctc_censor" in d:
        flag = d["ctc_censor"].to_numpy(dtype=int)
        undecided = ((flag == 1) & (scores == 0)) | ((flag == -1) & (scores == 1))
        if undecided.any():
            raise ValueError(
                f"censored counts do not decide the rule for patient(s) "
                f"{list(ids[undecided][:5])}: e.g. 'at least 3' or 'at most 8' against a cut-off "
                f"of {threshold:g}; use another draw (time=) or drop them"
            )
    return scores


def rule_survival(
    train: OutcomesLike,
    train_scores: npt.ArrayLike,
    test_scores: npt.ArrayLike,
    times: npt.ArrayLike,
) -> np.ndarray:
    """Predicted event-free probability of the rule: the training Kaplan–Meier of each group.

    Args:
        train: training patients' outcomes.
        train_scores: shape (n_train,); the rule's 0/1 score of each training patient.
        test_scores: shape (n_test,); the rule's 0/1 score of each test patient.
        times: horizons, days.

    Returns:
        Shape (n_test, k); S_group(t) of each test patient's group (carried forward beyond the
        group's last training time).

    Raises:
        ValueError: lengths differ, or a test group has no training patient.
    """
    train = as_outcomes(train, "train")
    tr, te = np.asarray(train_scores, dtype=float), np.asarray(test_scores, dtype=float)
    if tr.shape != (len(train),):
        raise ValueError(f"train_scores must have shape ({len(train)},), got {tr.shape}")
    t = np.atleast_1d(np.asarray(times, dtype=float))
    out = np.empty((te.size, t.size))
    for group in np.unique(te):
        in_group = tr == group
        if not in_group.any():
            raise ValueError(f"no training patient has rule score {group:g}")
        km = kaplan_meier(Outcomes(train.time[in_group], train.event[in_group]), plateau=True)
        out[te == group] = km(t)
    return out


def compare_with_rule(
    train: OutcomesLike,
    test: OutcomesLike,
    times: npt.ArrayLike,
    *,
    train_rule: npt.ArrayLike,
    test_rule: npt.ArrayLike,
    risk: npt.ArrayLike | None = None,
    survival: npt.ArrayLike | None = None,
    tau: float | None = None,
    left_limit: bool = False,
) -> pd.DataFrame:
    """A model's accuracy on held-out patients beside the CellSearch rule's, same metrics.

    Args:
        train: training patients' outcomes (censoring weights; the rule's group survival).
        test: held-out patients' outcomes, shape (n,).
        times: horizons, days, strictly increasing, within the test follow-up.
        train_rule: shape (n_train,); the rule's 0/1 score of each training patient
            (:func:`rule_scores` or :func:`cellsearch_rule`).
        test_rule: shape (n,); the rule's score of each test patient.
        risk: the model's risk scores, (n,) or (n, k); None: 1 - ``survival``.
        survival: the model's event-free probabilities, (n, k); None: no Brier scores for the
            model (NaN).
        tau: truncation of Uno's C, days (None: the last horizon). Uno's C of the model uses
            ``risk`` if 1-D, else its (or 1 - ``survival``'s) last column.
        left_limit: weight events by 1 / G(T_i-) (see :mod:`ctcdyn.prognosis._accuracy`;
            advisable when event and censoring times are tied).

    Returns:
        One row per metric and horizon with :data:`COMPARISON_COLUMNS`: ``metric`` is "auc",
        "mean_auc", "brier", "integrated_brier" (two or more horizons) or "uno_c"; ``time`` the
        horizon in days (NaN for summaries); ``model_better`` whether the model beats the
        rule (higher AUC and C, lower Brier).

    Raises:
        ValueError: neither ``risk`` nor ``survival`` is given, or any metric's input error.
    """
    if risk is None and survival is None:
        raise ValueError("compare_with_rule needs the model's risk or survival (or both)")
    t = np.atleast_1d(np.asarray(times, dtype=float))
    model_risk = np.asarray(risk, float) if risk is not None else 1.0 - np.asarray(survival, float)
    rule = np.asarray(test_rule, dtype=float)
    n_test = len(as_outcomes(test, "test"))
    if rule.shape != (n_test,):
        raise ValueError(f"test_rule must have shape ({n_test},), got {rule.shape}")
    rule_s = rule_survival(train, train_rule, rule, t)
    if tau is None:
        tau = float(t[-1])
    c_risk = model_risk if model_risk.ndim == 1 else model_risk[:, -1]

    rows: list[tuple[str, float, float, float]] = []
    auc_m = cumulative_dynamic_auc(train, test, model_risk, t, left_limit=left_limit)
    auc_r = cumulative_dynamic_auc(train, test, rule, t, left_limit=left_limit)
    rows += [("auc", ti, m, r) for ti, m, r in zip(t, auc_m.auc, auc_r.auc, strict=True)]
    rows.append(("mean_auc", np.nan, auc_m.mean_auc, auc_r.mean_auc))
    bs_r = brier_score(train, test, rule_s, t, left_limit=left_limit)
    bs_m = (
        brier_score(train, test, survival, t, left_limit=left_limit)
        if survival is not None
        else np.full(t.size, np.nan)
    )
    rows += [("brier", ti, m, r) for ti, m, r in zip(t, bs_m, bs_r, strict=True)]
    if t.size >= 2:
        ibs_r = integrated_brier_score(train, test, rule_s, t, left_limit=left_limit)
        ibs_m = (
            integrated_brier_score(train, test, survival, t, left_limit=left_limit)
            if survival is not None
            else np.nan
        )
        rows.append(("integrated_brier", np.nan, ibs_m, ibs_r))
    rows.append(
        (
            "uno_c",
            np.nan,
            uno_c(train, test, c_risk, tau=tau, left_limit=left_limit),
            uno_c(train, test, rule, tau=tau, left_limit=left_limit),
        )
    )

    table = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS[:4]))
    lower_is_better = table["metric"].isin(["brier", "integrated_brier"])
    table["model_better"] = np.where(
        lower_is_better, table["model"] < table["rule"], table["model"] > table["rule"]
    )
    return table
