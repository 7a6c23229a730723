"""The cohort report: population parameters, per-patient quantities, diagnostics across
patients, and calibration of the posterior predictive against the observed counts.

Calibration uses the randomised probability integral transform (PIT) of each observed count
under its draw's posterior predictive distribution (Czado, Gneiting & Held 2009, Biometrics
65:1254): for a count y with predictive CDF F, U ~ Uniform(F(y - 1), F(y)) is uniform on
(0, 1) when the predictions are calibrated, whatever the discreteness of the counts. The
coverage of the central interval at level a is P(|U - 1/2| <= a/2), computed exactly (not by
drawing U) and averaged over the observed counts. These are in-sample checks (the counts were
used to fit), so they are optimistic; a model that fails them is miscalibrated.
"""

from __future__ import annotations

import dataclasses
import datetime

import jax
import numpy as np
import pandas as pd

from . import _figures
from ._cellsearch import THRESHOLD
from ._fitted import FittedRun
from ._patient import LEVEL, RESEARCH_NOTICE, _fmt, _provenance, _warning
from ._survival import survival_draws

#: Nominal levels of the calibration curve.
NOMINAL = np.round(np.arange(0.1, 1.0, 0.1), 2)
#: Patients listed in the worst-diagnostics table.
WORST = 10


#: Horizon (days after each patient's latest draw) of the risk the cohort report shows.
RISK_DAYS = 182.0
#: Patients whose risk the cohort report computes at most (one small prediction each).
RISK_PATIENTS = 500


def coverage(samples: np.ndarray, observed: np.ndarray, levels: np.ndarray = NOMINAL) -> np.ndarray:
    """Expected coverage of central predictive intervals, by the randomised PIT.

    Args:
        samples: posterior predictive draws (S, N) of N counts.
        observed: the N observed counts (NaN: missing, skipped).
        levels: nominal central levels in (0, 1).

    Returns:
        For each level a, the mean over observed counts of P(|U - 1/2| <= a/2) with U ~
        Uniform(F(y - 1), F(y)) and F the empirical predictive CDF. Equal to ``levels`` in
        expectation when the counts come from the predictive distribution.
    """
    samples = np.asarray(samples, dtype=float)
    observed = np.asarray(observed, dtype=float)
    keep = np.isfinite(observed) & np.all(np.isfinite(samples), axis=0)
    x, y = samples[:, keep], observed[keep]
    if y.size == 0:
        return np.full(np.shape(levels), np.nan)
    below = np.mean(x < y[None], axis=0)  # F(y - 1) for integer counts
    upto = np.mean(x <= y[None], axis=0)  # F(y)
    out = []
    for a in np.atleast_1d(levels):
        lo, hi = (1 - a) / 2, (1 + a) / 2
        width = upto - below
        overlap = np.clip(np.minimum(upto, hi) - np.maximum(below, lo), 0.0, None)
        inside_point = (below >= lo) & (below <= hi)
        with np.errstate(invalid="ignore", divide="ignore"):
            p = np.where(width > 0, overlap / width, inside_point.astype(float))
        out.append(float(np.mean(p)))
    return np.asarray(out)


@dataclasses.dataclass(frozen=True)
class CohortReport:
    """Everything the cohort report shows (see :func:`cohort_report`)."""

    title: str
    generated: str
    fit_ok: bool
    status: str
    warning: str | None
    gate_failures: list[str]
    overview: dict[str, str]
    population: list[dict[str, str]]
    population_note: str
    distributions: list[dict[str, str]]
    calibration_figure: str | None
    calibration: list[dict[str, str]]
    diagnostics: dict[str, str]
    worst_patients: list[dict[str, str]]
    provenance: dict[str, str]
    data_files: list[dict[str, str]]
    level: float
    notice: str = RESEARCH_NOTICE


def cohort_report(fitted: FittedRun) -> CohortReport:
    """Compute the cohort report of a run (no randomness: every number is from the stored fit)."""
    ok = fitted.fit_ok
    spec, tree, summary = fitted.spec, fitted.tree, fitted.summary
    observed = tree["observed_data"].to_dataset()
    draws = fitted.data.tables.draws
    first = draws.sort_values("time").groupby("patient_id").head(1)
    baseline = first[(first["assay"] == "cellsearch") & (first["volume_ml"] == 7.5)]["ctc"]
    overview = {
        "patients": f"{fitted.data.n_patients}",
        "blood draws": f"{len(draws)}",
        "draws with a single-CTC count": f"{int(np.isfinite(observed['ctc'].values).sum())}",
        f"baseline CellSearch >= {THRESHOLD} CTC / 7.5 mL": (
            f"{int((baseline >= THRESHOLD).sum())} of {int(baseline.notna().sum())}"
        ),
        "mode": str(fitted.manifest.get("mode")),
    }
    is_patient = summary["parameter"].str.contains(r"\[", regex=True)
    population, distributions, calibration, figure = [], [], [], None
    note = ""
    if ok:
        for _, row in summary[~is_patient].iterrows():
            population.append(
                {
                    "parameter": row["parameter"],
                    "unit": _unit(spec, row["parameter"]),
                    "median": _fmt(row["q50"]),
                    "interval": f"{_fmt(row['q5'])} to {_fmt(row['q95'])}",
                    "r_hat": _fmt(row["r_hat"], 4),
                    "ess": f"{_fmt(row['ess_bulk'], 4)} / {_fmt(row['ess_tail'], 4)}",
                    "contraction": _fmt(row.get("contraction", np.nan), 2),
                }
            )
        pop = fitted.population()
        if pop is not None:
            note = f"Per-patient run: population values were fixed from {pop.source}."
            for name, value in {**pop.medians, **pop.values}.items():
                population.append(
                    {
                        "parameter": name + (" (median)" if name in pop.medians else ""),
                        "unit": _unit(spec, name),
                        "median": _fmt(value),
                        "interval": "fixed",
                        "r_hat": "",
                        "ess": "",
                        "contraction": "",
                    }
                )
        post = fitted.posterior()
        for name in spec.sampled:
            if spec.parameters[name].level != "patient":
                continue
            medians = post[name].median(("chain", "draw")).values
            distributions.append(
                {
                    "name": name,
                    "figure": _figures.histogram_figure(
                        medians,
                        xlabel=f"posterior median of {name} ({spec.parameters[name].unit})",
                        log=bool(np.all(medians > 0)),
                    ),
                }
            )
        risk = _death_risk(fitted)
        if risk is not None:
            distributions.append(risk[0])
            overview.update(risk[1])
        pp = tree["posterior_predictive"].to_dataset()
        curves = {}
        for count in ("ctc", "clusters"):
            censor = np.asarray(getattr(fitted.data.arrays, f"{count}_censor"))
            y = np.where(censor == 0, observed[count].values, np.nan).ravel()
            s = pp[count].stack(sample=("chain", "draw")).transpose("sample", ...).values
            curves[count] = coverage(s.reshape(s.shape[0], -1), y)
        figure = _figures.coverage_figure(NOMINAL, curves["ctc"], curves["clusters"])
        for a in (0.5, 0.9):
            i = int(np.argmin(np.abs(NOMINAL - a)))
            calibration.append(
                {
                    "nominal": f"{a:.0%}",
                    "ctc": f"{curves['ctc'][i]:.1%}",
                    "clusters": f"{curves['clusters'][i]:.1%}",
                }
            )
    diagnostics, worst = _diagnostics(fitted, summary[is_patient])
    return CohortReport(
        title=f"{fitted.manifest['model']} cohort",
        generated=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        fit_ok=ok,
        status=fitted.status,
        warning=_warning(fitted),
        gate_failures=list(fitted.gate.failures[:12]),
        overview=overview,
        population=population,
        population_note=note,
        distributions=distributions,
        calibration_figure=figure,
        calibration=calibration,
        diagnostics=diagnostics,
        worst_patients=worst,
        provenance=_provenance(fitted),
        data_files=[
            {"role": role, "path": e["path"], "sha256": e["sha256"]}
            for role, e in fitted.manifest["data"].items()
        ],
        level=LEVEL,
    )


def _death_risk(fitted: FittedRun) -> tuple[dict[str, str], dict[str, str]] | None:
    """Each patient's fitted risk of death within RISK_DAYS of their latest draw (a histogram),
    and the expected against the observed number of such deaths; None without fitted OS.

    In-sample: each patient's posterior knows their recorded outcome, so the comparison is a
    posterior predictive check of the endpoint model, not a validation of predictions (for that:
    docs/prognosis.md, "Mechanistic survival", calibration after a data cut).
    """
    if "os" not in fitted.model.outcomes:
        return None
    patients = fitted.data.tables.patients.set_index("patient_id")
    times = np.asarray(fitted.data.arrays.time)
    ids = list(fitted.data.patient_ids)[:RISK_PATIENTS]
    risks, observed, at_risk, expected = [], 0, 0, 0.0
    for i, pid in enumerate(ids):
        last = float(times[i, fitted.data.n_draws[i] - 1])
        row = patients.loc[pid]
        if float(row["os_time"]) < last:
            continue
        alive = survival_draws(
            fitted, pid, jax.random.key(i), endpoint="os", times=np.array([last + RISK_DAYS]),
            alive_to=last, n_samples=100,
        )  # fmt: skip
        risks.append(1.0 - float(alive.mean()))
        followed = float(row["os_time"]) >= last + RISK_DAYS or int(row["os_event"]) == 1
        at_risk += followed
        expected += followed * risks[-1]
        observed += followed and int(row["os_event"]) == 1 and row["os_time"] <= last + RISK_DAYS
    months = round(RISK_DAYS / 30.4)
    figure = _figures.histogram_figure(
        100 * np.asarray(risks),
        xlabel=f"fitted P(death within {months} months of the latest draw) (%)",
    )
    shown = "" if len(ids) == fitted.data.n_patients else f" (first {len(ids)} patients)"
    summary = {
        f"deaths within {months} months of the latest draw{shown}": (
            f"{observed} observed of {at_risk} followed that long; "
            f"{expected:.1f} expected by the fit (in-sample)"
        )
    }
    return {"name": "risk", "figure": figure}, summary


def _unit(spec, label: str) -> str:
    base = label.split("[")[0]
    for suffix in ("_median", "_sd"):
        if base.endswith(suffix) and base[: -len(suffix)] in spec.parameters:
            name = base[: -len(suffix)]
            return "1 (log scale)" if suffix == "_sd" else spec.parameters[name].unit
    return spec.parameters[base].unit if base in spec.parameters else ""


def _diagnostics(
    fitted: FittedRun, rows: pd.DataFrame
) -> tuple[dict[str, str], list[dict[str, str]]]:
    gate = fitted.gate
    out = {
        "gate (re-checked)": "passed" if gate.passed else "FAILED",
        "worst R-hat (gate < 1.01)": _fmt(gate.worst_r_hat, 4),
        "smallest bulk / tail ESS (gate >= 400)": (
            f"{_fmt(gate.min_ess_bulk, 4)} / {_fmt(gate.min_ess_tail, 4)}"
        ),
        "divergent transitions (gate 0)": f"{gate.divergences}",
        "smallest E-BFMI (gate >= 0.3)": _fmt(gate.min_bfmi, 2),
    }
    if rows.empty:
        return out, []
    pid = rows["parameter"].str.extract(r"\[(.*)\]$")[0]
    per = (
        rows.assign(patient=pid)
        .groupby("patient")
        .agg(r_hat=("r_hat", "max"), ess_bulk=("ess_bulk", "min"), ess_tail=("ess_tail", "min"))
    )
    bad = (per["r_hat"] >= 1.01) | (per[["ess_bulk", "ess_tail"]].min(axis=1) < 400)
    bad |= per.isna().any(axis=1)
    out["patients failing R-hat or ESS"] = f"{int(bad.sum())} of {len(per)}"
    order = per.assign(key=per["r_hat"].fillna(np.inf)).sort_values("key", ascending=False)
    worst = [
        {
            "patient": str(p),
            "r_hat": _fmt(r["r_hat"], 4),
            "ess": f"{_fmt(r['ess_bulk'], 4)} / {_fmt(r['ess_tail'], 4)}",
        }
        for p, r in order.head(WORST).iterrows()
    ]
    return out, worst
