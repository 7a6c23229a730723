"""The content of one patient's report, computed from a run (rendering is in ._render).

Sections: fit status, a plain-language summary, the blood draws (clock time, counts, the
CellSearch class, the posterior predictive interval of each draw), counts over time with the
posterior predictive band and a forecast, the tumour-burden trend, survival and MRD monitoring
(from optional inputs only), what the data informed, diagnostics and provenance.

A run that did not pass the diagnostics gate (or an approximate SVI run) gets a prominent
warning and **no** estimates: no bands, forecasts, burden, survival or monitoring figures.
"""

from __future__ import annotations

import dataclasses
import datetime
import math

import numpy as np
import pandas as pd
import xarray as xr
from jaxtyping import PRNGKeyArray

from .._version import __version__
from ..diagnostics import INFORMED, PRIOR_DOMINATED
from . import _figures
from ._cellsearch import THRESHOLD, CellSearchClass, classify
from ._fitted import FittedRun
from ._forecast import band, forecast_times, predict
from ._inputs import MonitoringSuggestion, SurvivalSummary
from ._survival import NoSurvival, mechanistic_survival

#: Credible level of every band and interval in a report.
LEVEL = 0.9
#: Days after the latest draw that the forecast covers by default (12 weeks).
HORIZON_DAYS = 84.0
#: Days after the latest draw of the "next draw" probability (4 weeks).
NEXT_DRAW_DAYS = 28.0
RESEARCH_NOTICE = (
    "Research use only — not a validated diagnostic. These are outputs of a statistical research "
    "model; they must not be used on their own for clinical decisions."
)


@dataclasses.dataclass(frozen=True)
class DrawRow:
    """One blood draw as shown in the report."""

    day: str
    clock: str
    volume_ml: str
    assay: str
    ctc: str
    clusters: str
    cellsearch: str
    predicted: str  # posterior predictive interval of this draw's single-CTC count
    p_threshold: str  # P(replicated count >= 5)


@dataclasses.dataclass(frozen=True)
class ParameterRow:
    """One parameter: posterior and prior summaries, contraction and what it means."""

    name: str
    unit: str
    level: str
    posterior: str
    prior: str
    contraction: str
    verdict: str


@dataclasses.dataclass(frozen=True)
class PatientReport:
    """Everything a patient report shows (strings and figures; see :func:`patient_report`)."""

    patient_id: str
    generated: str
    fit_ok: bool
    status: str
    warning: str | None
    gate_failures: list[str]
    plain_language: str
    draws: list[DrawRow]
    treatments: list[dict[str, str]]
    counts_figure: str
    band_note: str
    burden_figure: str | None
    estimates: dict[str, str]
    survival: SurvivalSummary | None
    survival_figure: str | None
    survival_note: str
    baseline_cellsearch: str
    latest_cellsearch: str
    post_surgery: bool
    monitoring: MonitoringSuggestion | None
    parameters: list[ParameterRow]
    population_note: str
    diagnostics: dict[str, str]
    provenance: dict[str, str]
    data_files: list[dict[str, str]]
    level: float
    notice: str = RESEARCH_NOTICE


def _fmt(x: float, digits: int = 3) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:.{digits}g}"


def _pct(p: float) -> str:
    if not np.isfinite(p):
        return "n/a"
    if p < 0.01:
        return "< 1%"
    if p > 0.99:
        return "> 99%"
    return f"{100 * p:.0f}%"


def _about(percent: str) -> str:
    """ "74%" -> "about 74%", "> 99%" -> "more than 99%" (for sentences)."""
    if percent.startswith(">"):
        return "more than " + percent[1:].strip()
    if percent.startswith("<"):
        return "less than " + percent[1:].strip()
    return "about " + percent


def _clock(hour: float) -> str:
    minutes = round(hour * 60) % (24 * 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _count(value, censor: int) -> str:
    if pd.isna(value):
        return "missing"
    prefix = {1: ">= ", -1: "<= "}.get(int(censor), "")
    return f"{prefix}{int(value)}"


def _status(fitted: FittedRun, ok: bool) -> str:
    """The run's status, qualified where a per-patient run failed only in other patients."""
    if ok and fitted.status != "passed":
        return f"passed for this patient (run: {fitted.status}, in other patients' fits)"
    return fitted.status


def _warning(fitted: FittedRun, patient_id: str | None = None) -> str | None:
    """The warning a report shows for the run (``patient_id`` None) or one patient's numbers."""
    if fitted.fit_ok if patient_id is None else fitted.fit_ok_for(patient_id):
        return None
    status = fitted.status
    if status == "approximate":
        return (
            "APPROXIMATE FIT (SVI): this run is a quick variational approximation, not a "
            "converged posterior. No estimates, forecasts or risk figures are shown. Refit with "
            "NUTS before reading any numbers."
        )
    if status == "passed":
        return (
            "FIT FAILED ITS DIAGNOSTICS WHEN RE-CHECKED: the stored posterior does not pass the "
            "gate. No estimates, forecasts or risk figures are shown."
        )
    return (
        "FIT FAILED ITS DIAGNOSTICS: the sampler did not converge (see the diagnostics below). "
        "No estimates, forecasts or risk figures are shown; do not use this run. Try longer "
        "chains or a reparameterised model, then refit."
    )


def patient_report(
    fitted: FittedRun,
    patient_id: str,
    key: PRNGKeyArray,
    *,
    survival: SurvivalSummary | None = None,
    monitoring: MonitoringSuggestion | None = None,
    horizon_days: float = HORIZON_DAYS,
    n_samples: int = 200,
) -> PatientReport:
    """Compute one patient's report.

    Args:
        fitted: the run (:func:`~ctcdyn.report.open_fitted`).
        patient_id: a patient of the run (:class:`~ctcdyn.report.UnknownPatientError` if not).
        key: PRNG key of the forecast's replicated counts.
        survival: the patient's event-free probabilities, if a survival model was fitted;
            when None and the fit included the endpoints (``--outcomes``), they are computed
            from the fitted dynamics (:func:`~ctcdyn.report._survival.mechanistic_survival`);
            otherwise the report says "not computed for this run".
        monitoring: an MRD monitoring suggestion, if computed (post-surgery patients).
        horizon_days: how far past the latest draw the forecast goes (days).
        n_samples: posterior draws used for bands and forecasts.
    """
    index = fitted.patient_index(patient_id)
    data, spec = fitted.data, fitted.spec
    n = int(data.n_draws[index])
    rows = data.draw_rows[index, :n]
    table = data.tables.draws.iloc[rows].reset_index(drop=True)
    times = np.asarray(data.arrays.time)[index, :n]
    ctc = table["ctc"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    clusters = table["clusters"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    censor = table["ctc_censor"].to_numpy(dtype=int)
    classes = [
        classify(None if np.isnan(c) else c, int(f), float(v), str(a))
        for c, f, v, a in zip(ctc, censor, table["volume_ml"], table["assay"], strict=True)
    ]
    ok = fitted.fit_ok_for(patient_id)
    replicated = fitted.tree["posterior_predictive"].to_dataset()["ctc"].sel(patient=patient_id)
    stacked = replicated.stack(sample=("chain", "draw")).transpose("sample", "blood_draw")
    pp = np.asarray(stacked.values, dtype=float)[:, :n]

    draws = []
    for j in range(n):
        lo, hi = np.nanquantile(pp[:, j], [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
        draws.append(
            DrawRow(
                day=f"{math.floor(times[j]):d}",
                clock=_clock(float(table["clock_hour"].iat[j])),
                volume_ml=_fmt(float(table["volume_ml"].iat[j])),
                assay=str(table["assay"].iat[j]),
                ctc=_count(table["ctc"].iat[j], censor[j]),
                clusters=_count(table["clusters"].iat[j], table["clusters_censor"].iat[j]),
                cellsearch=classes[j].value,
                predicted=f"{lo:.0f}–{hi:.0f}" if ok else "withheld",
                p_threshold=_pct(float(np.mean(pp[:, j] >= THRESHOLD))) if ok else "withheld",
            )
        )

    last = float(times[-1])
    clock_hour = float(np.median(table["clock_hour"]))
    scenario = spec.scenario("default") if spec.scenarios else None
    assay = scenario.assay if scenario else "cellsearch"
    volume = scenario.volume_ml if scenario else 7.5
    band_note = f" ({_fmt(volume)} mL {assay} at {_clock(clock_hour)})" if ok else ""
    estimates: dict[str, str] = {}
    burden_uri = None
    survival_uri = None
    survival_note = ""
    if ok:
        grid = forecast_times(float(times[0]), last, clock_hour, horizon_days)
        pred = predict(fitted, patient_id, key, times=grid, volume_ml=volume, assay=assay,
                       n_samples=n_samples)  # fmt: skip
        counts_uri = _figures.counts_figure(
            draw_times=times,
            singles=ctc,
            clusters=clusters,
            singles_censor=censor,
            band_times=grid,
            singles_band=band(pred.singles, LEVEL),
            clusters_band=band(pred.clusters, LEVEL),
            last_draw=last,
            band_label=band_note,
            level=LEVEL,
        )
        burden_uri = _figures.burden_figure(
            times=grid,
            burden_90=band(pred.burden, LEVEL),
            burden_50=band(pred.burden, 0.5),
            draw_times=times,
            last_draw=last,
        )
        estimates = _estimates(pred, grid, last, float(times[0]))
        if survival is None:
            computed = mechanistic_survival(
                fitted, patient_id, key, horizon_days=horizon_days, level=LEVEL,
                n_samples=n_samples,
            )  # fmt: skip
            if isinstance(computed, NoSurvival):
                survival_note = computed.reason
            else:
                survival = computed
        if survival is not None:
            survival_uri = _figures.survival_figure(
                months=np.asarray(survival.times_days) / _figures.DAYS_PER_MONTH,
                median=np.asarray(survival.median),
                lower=np.asarray(survival.lower),
                upper=np.asarray(survival.upper),
                level=survival.level,
                endpoint=survival.endpoint,
            )
    else:
        counts_uri = _figures.counts_figure(
            draw_times=times, singles=ctc, clusters=clusters, singles_censor=censor
        )
    surgery = float(np.asarray(data.arrays.design.surgery_time)[index])
    parameters, population_note = _parameters(fitted, patient_id) if ok else ([], "")
    report = PatientReport(
        patient_id=str(patient_id),
        generated=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        fit_ok=ok,
        status=_status(fitted, ok),
        warning=_warning(fitted, patient_id),
        gate_failures=list(fitted.gate_for(patient_id).failures[:12]),
        plain_language="",
        draws=draws,
        treatments=_treatments(fitted, patient_id),
        counts_figure=counts_uri,
        band_note=band_note,
        burden_figure=burden_uri,
        estimates=estimates,
        survival=survival if ok else None,
        survival_figure=survival_uri,
        survival_note=survival_note,
        baseline_cellsearch=classes[0].value,
        latest_cellsearch=classes[-1].value,
        post_surgery=bool(np.isfinite(surgery) and surgery <= last),
        monitoring=monitoring if ok else None,
        parameters=parameters,
        population_note=population_note,
        diagnostics=_diagnostics(fitted, patient_id),
        provenance=_provenance(fitted),
        data_files=[
            {"role": role, "path": e["path"], "sha256": e["sha256"]}
            for role, e in fitted.manifest["data"].items()
        ],
        level=LEVEL,
    )
    return dataclasses.replace(report, plain_language=plain_language(report, n, times, classes))


def _estimates(pred, grid: np.ndarray, last: float, first: float) -> dict[str, str]:
    day = np.floor(grid)
    at = lambda d: int(np.argmin(np.abs(day - d)))  # noqa: E731
    i0, i_last, i_next = at(math.floor(first)), at(math.floor(last)), at(math.floor(last) + 28)
    change = pred.burden[:, i_last] / pred.burden[:, i0]
    ahead = pred.burden[:, i_next] / pred.burden[:, i_last]
    tail = (1 - LEVEL) / 2
    lo, mid, hi = np.nanquantile(change, [tail, 0.5, 1 - tail])
    burden_last = np.nanquantile(pred.burden[:, i_last], [tail, 0.5, 1 - tail])
    return {
        "burden_latest": f"{_fmt(burden_last[1], 2)} cells ({_fmt(burden_last[0], 2)} to "
        f"{_fmt(burden_last[2], 2)})",
        "burden_change": f"{_fmt(mid, 2)} ({_fmt(lo, 2)} to {_fmt(hi, 2)})",
        "p_growth_next": _pct(float(np.nanmean(ahead > 1.0))),
        "p_positive_next": _pct(float(np.nanmean(pred.singles[:, i_next] >= THRESHOLD))),
        "next_day": f"{int(day[i_next])}",
        "change_from_day": f"{int(day[i0])}",
        "latest_day": f"{int(day[i_last])}",
        "failed_solves": f"{int((~pred.ok).sum())} of {pred.ok.size}",
    }


def _treatments(fitted: FittedRun, patient_id: str) -> list[dict[str, str]]:
    t = fitted.data.tables.treatments
    if "patient_id" not in t:
        return []
    rows = t[t["patient_id"] == patient_id].sort_values("start")
    out = []
    for r in rows.itertuples(index=False):
        end = "continuing" if not np.isfinite(r.end) else f"{r.end:g}"
        out.append({"kind": str(r.kind).replace("_", " "), "start": f"{r.start:g}", "end": end})
    return out


def _verdict(c: float) -> str:
    if not np.isfinite(c):
        return "unknown"
    if c > INFORMED:
        return "informed by the data"
    if c < PRIOR_DOMINATED:
        return "from the prior (data say little)"
    return "partly informed"


def _interval(x: np.ndarray) -> str:
    lo, mid, hi = np.nanquantile(x, [(1 - LEVEL) / 2, 0.5, (1 + LEVEL) / 2])
    return f"{_fmt(mid)} ({_fmt(lo)} to {_fmt(hi)})"


def _parameters(fitted: FittedRun, patient_id: str) -> tuple[list[ParameterRow], str]:
    spec = fitted.spec
    post = fitted.posterior()
    prior = fitted.tree["prior"].to_dataset() if "prior" in fitted.tree.children else xr.Dataset()
    contraction = fitted.summary.set_index("parameter").get("contraction", pd.Series(dtype=float))
    rows = []
    for name in spec.sampled:
        p = spec.parameters[name]
        if p.level == "patient":
            label, da = f"{name}[{patient_id}]", post[name].sel(patient=patient_id)
            pr = prior[name].sel(patient=patient_id) if name in prior else None
        elif name in post:
            label, da, pr = name, post[name], prior.get(name)
        else:
            continue
        c = float(contraction.get(label, np.nan))
        rows.append(
            ParameterRow(
                name=name,
                unit=p.unit,
                level="patient" if p.level == "patient" else "cohort",
                posterior=_interval(da.values.ravel()),
                prior=_interval(pr.values.ravel()) if pr is not None else "n/a",
                contraction=_fmt(c, 2),
                verdict=_verdict(c),
            )
        )
    population = fitted.population()
    note = ""
    if population is not None:
        note = (
            "Cohort-level values were fixed, not fitted, in this per-patient run: from "
            f"{population.source}."
        )
    return rows, note


def _diagnostics(fitted: FittedRun, patient_id: str) -> dict[str, str]:
    gate, summary = fitted.gate, fitted.summary
    mine = summary[summary["parameter"].str.endswith(f"[{patient_id}]")]
    stats = fitted.tree["sample_stats"].to_dataset()
    diverging = stats.get("diverging")
    out = {
        "status": fitted.status,
        "gate (re-checked)": "passed" if gate.passed else "FAILED",
        "worst R-hat (all parameters; gate < 1.01)": _fmt(gate.worst_r_hat, 4),
        "smallest bulk / tail ESS (all; gate >= 400)": (
            f"{_fmt(gate.min_ess_bulk, 4)} / {_fmt(gate.min_ess_tail, 4)}"
        ),
        "divergent transitions (all; gate 0)": f"{gate.divergences}",
        "smallest E-BFMI (gate >= 0.3)": _fmt(gate.min_bfmi, 2),
    }
    if len(mine):
        out["this patient: worst R-hat"] = _fmt(float(mine["r_hat"].max()), 4)
        out["this patient: smallest bulk / tail ESS"] = (
            f"{_fmt(float(mine['ess_bulk'].min()), 4)} / {_fmt(float(mine['ess_tail'].min()), 4)}"
        )
    if diverging is not None and "patient" in diverging.dims:
        out["this patient: divergent transitions"] = (
            f"{int(diverging.sel(patient=patient_id).sum())}"
        )
    if fitted.per_patient:
        # each patient is a fit of their own: their gate decides what this report shows
        mine_gate = fitted.gate_for(patient_id)
        out["this patient's fit: gate (re-checked)"] = "passed" if mine_gate.passed else "FAILED"
    return out


def _provenance(fitted: FittedRun) -> dict[str, str]:
    m = fitted.manifest
    sampler = m.get("sampler") or {}
    settings = ", ".join(
        f"{k} {sampler[k]}" for k in ("method", "chains", "warmup", "samples", "steps")
        if k in sampler
    )  # fmt: skip
    return {
        "run": str(fitted.run.path),
        "model": f"{m['model']} ({fitted.spec.title})",
        "model spec SHA-256": m["spec_sha256"],
        "ctcdyn (fit / report)": f"{m.get('ctcdyn_version')} / {__version__}",
        "fit": f"{m.get('mode')}, created {m.get('created')}",
        "sampler": f"{settings}; seed {m.get('seed')}; engine {type(fitted.model.engine).__name__}",
    }


def plain_language(
    report: PatientReport, n: int, times: np.ndarray, classes: list[CellSearchClass]
) -> str:
    """A short paragraph in plain words, generated from the report's own numbers."""
    first, last = math.floor(times[0]), math.floor(times[-1])
    latest = report.draws[-1]
    text = [
        f"This report summarises {n} blood test{'s' if n != 1 else ''} for circulating tumour "
        f"cells (CTCs) of patient {report.patient_id}, taken between day {first} and day {last}."
    ]
    if classes[-1] in (CellSearchClass.POSITIVE, CellSearchClass.NEGATIVE):
        above = classes[-1] is CellSearchClass.POSITIVE
        text.append(
            f"The latest test (day {latest.day}, {latest.clock}) counted {latest.ctc} single "
            f"CTCs, {'at or above' if above else 'below'} the CellSearch threshold of "
            f"{THRESHOLD} per 7.5 mL."
        )
    if not report.fit_ok:
        how = (
            "was only approximated (a quick look)"
            if report.status == "approximate"
            else "could not be fitted reliably to these data"
        )
        text.append(
            f"The statistical model {how}, so this report shows the measured counts only and "
            "no estimates or predictions."
        )
    else:
        e = report.estimates
        text.append(
            "The model estimates that the tumour burden changed by a factor of "
            f"{e['burden_change']} between day {e['change_from_day']} and day "
            f"{e['latest_day']} (in brackets: the range holding {report.level:.0%} of the "
            f"model's belief). If treatment continues as recorded, the chance that a test on "
            f"day {e['next_day']} shows {THRESHOLD} or more CTCs is "
            f"{_about(e['p_positive_next'])}, and the chance that the burden grows over those "
            f"4 weeks {_about(e['p_growth_next'])}."
        )
        prior = [r.name for r in report.parameters if r.verdict.startswith("from the prior")]
        if prior:
            text.append(
                "Some model quantities are not measured by these tests and rest on published "
                f"values instead ({', '.join(prior)})."
            )
    text.append(
        "These are research estimates with real uncertainty; they are not a validated "
        "diagnostic and must be read together with imaging and clinical assessment."
    )
    return " ".join(text)
