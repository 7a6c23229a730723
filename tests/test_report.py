"""Posterior reports: self-contained HTML, PDF, the failed-fit warning, forecasts through the
fitted model, calibration coverage, and the ``ctcdyn report`` command.

One small simulated cohort (2 patients of the bundled ``mbc`` model) is fitted per patient with
the population fixed, long enough to pass the diagnostics gate (4 chains x 1000 + 1000
iterations; 400 + 400 and 500 + 600 left R-hat 1.014-1.015 for P0001 after the 2026-11-30
changes to the simulated endpoints; about a minute and a half on 2 cores); the
failed-fit report uses the same fit cut short.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from typer.testing import CliRunner

from ctcdyn.cli import app
from ctcdyn.diagnostics import check
from ctcdyn.inference import NUTSSettings, Population, fit_run
from ctcdyn.report import (
    THRESHOLD,
    CellSearchClass,
    MonitoringSuggestion,
    ReportError,
    SurvivalSummary,
    UnknownPatientError,
    classify,
    cohort_report,
    coverage,
    html_to_pdf,
    open_fitted,
    patient_report,
    predict,
    render_html,
)
from ctcdyn.simulate import simulate_cohort
from ctcdyn.specs import load_spec
from ctcdyn.store import Run, summarize

runner = CliRunner()
PATIENT = "P0001"


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    simulate_cohort(load_spec("mbc"), 2, jax.random.key(11)).write(out)
    return out


def _fit(cohort_dir, out, settings):
    spec = load_spec("mbc")
    files = {k: cohort_dir / f"{k}.csv" for k in ("draws", "patients", "treatments")}
    return fit_run(spec, files, out, population=Population.from_spec(spec), nuts=settings)


@pytest.fixture(scope="module")
def passed(cohort_dir, tmp_path_factory):
    run = _fit(
        cohort_dir,
        tmp_path_factory.mktemp("fits") / "ok",
        NUTSSettings(warmup=1000, samples=1000, target_accept=0.95),
    )
    assert run.status == "passed", run.manifest["diagnostics"]
    return open_fitted(run.path)


@pytest.fixture(scope="module")
def failed(passed, tmp_path_factory):
    """The same fit cut to its first 25 draws per chain: a genuine MCMC sample too short to
    pass the gate (bulk ESS < 400), stored and gated by the fits store as any fit is."""
    folder = tmp_path_factory.mktemp("fits") / "short"
    shutil.copytree(passed.run.path, folder)
    tree = passed.tree.map_over_datasets(
        lambda ds: ds.isel(draw=slice(0, 25)) if "draw" in ds.dims and "chain" in ds.dims else ds
    )
    tree["prior"] = passed.tree["prior"]  # the prior's own 1000 draws stay whole
    summary = summarize(tree)
    run = Run.open(folder)
    assert run.finalize(tree, summary, check(tree, summary), {}) == "failed_gate"
    return open_fitted(folder)


@pytest.fixture(scope="module")
def report(passed):
    return patient_report(passed, PATIENT, jax.random.key(0))


@pytest.fixture(scope="module")
def html(report):
    return render_html(report, "patient.html.j2")


@pytest.fixture(scope="module")
def failed_html(failed):
    survival = SurvivalSummary("overall survival", (0, 90), (1, 0.9), (1, 0.8), (1, 0.95), 0.9, "x")
    content = patient_report(failed, PATIENT, jax.random.key(0), survival=survival)
    return render_html(content, "patient.html.j2")


def _external_references(text: str) -> list[str]:
    attribute = r"""(?<![\w-])(?:src|href|action|poster|data)\s*=\s*["']?([^"'\s>]+)"""
    refs = re.findall(attribute, text, re.I)
    refs += re.findall(r"""url\(\s*["']?([^"')]+)""", text, re.I)
    refs += re.findall(r"@import\s+([^;]+)", text, re.I)
    return [r for r in refs if not (r.startswith("data:") or r.startswith("#"))]


# --- the patient report ------------------------------------------------------------------------


def test_html_has_no_external_reference(html, failed_html):
    for text in (html, failed_html):
        assert "http://" not in text and "https://" not in text
        assert _external_references(text) == []
        assert text.count('src="data:image/png;base64,') >= 1


def test_reference_check_catches_external_references():
    # the check above can fail: it flags every kind of outside reference
    bad = '<img src="//cdn.example/x.png"><link href="style.css"><style>a{b:url(x.png)}</style>'
    assert len(_external_references(bad)) == 3


def test_patient_report_shows_data_estimates_and_notice(passed, report, html):
    draws = passed.data.tables.draws
    mine = draws[draws["patient_id"] == PATIENT].sort_values("time")
    assert "Research use only" in html and "not a validated diagnostic" in html
    assert 'id="fit-warning"' not in html and 'id="fit-ok"' in html
    for hour in mine["clock_hour"]:  # each draw's clock time is shown
        minutes = round(hour * 60)
        assert f"{minutes // 60:02d}:{minutes % 60:02d}" in html
    for fig in ("fig-counts", "fig-burden"):
        assert f'id="{fig}"' in html
    assert 'class="risk' in html
    # survival and MRD are not computed here, and the report says so instead of inventing them
    assert "Not computed for this run" in html
    assert "Not applicable: no surgery" in html
    assert 'id="fig-survival"' not in html
    # CellSearch class of each draw follows the rule on the observed count
    for row, (_, draw) in zip(report.draws, mine.iterrows(), strict=True):
        expected = ">= 5" if draw["ctc"] >= THRESHOLD else "< 5"
        assert row.cellsearch.startswith(expected)
    # each parameter's reading follows its contraction in summary.csv
    summary = passed.summary.set_index("parameter")
    for row in report.parameters:
        c = summary.loc[f"{row.name}[{PATIENT}]", "contraction"]
        assert (row.verdict == "informed by the data") == (c > 0.5)
        assert row.verdict.startswith("from the prior") == (c < 0.1)
    provenance = report.provenance
    assert provenance["model spec SHA-256"] == passed.manifest["spec_sha256"]
    for entry in passed.manifest["data"].values():
        assert entry["sha256"] in html


def test_forecast_agrees_with_the_fits_posterior_predictive(passed):
    """Counts predicted through the report's path at the patient's own draws have the same
    mean as the fit's stored posterior predictive (a separate code path: the fit's tree)."""
    index = passed.patient_index(PATIENT)
    n = int(passed.data.n_draws[index])
    times = np.asarray(passed.data.arrays.time)[index, :n]
    volumes = np.asarray(passed.data.arrays.volume_ml)[index, :n]
    reps = 160 // n  # the report's forecast shape (160 times), so its compilation is reused
    pred = predict(
        passed,
        PATIENT,
        jax.random.key(1),
        times=np.repeat(times, reps),
        volume_ml=np.repeat(volumes, reps),
        assay="cellsearch",
    )
    assert pred.ok.all()
    ours = pred.singles.reshape(pred.singles.shape[0], n, reps)
    stored = passed.tree["posterior_predictive"]["ctc"].sel(patient=PATIENT)
    stored = stored.stack(s=("chain", "draw")).transpose("s", ...).values[:, :n]
    m1, m2 = ours.mean(axis=(0, 2)), stored.mean(axis=0)
    # standard errors, counting only the posterior draws as independent (conservative)
    se = np.sqrt(ours.mean(axis=2).var(axis=0) / ours.shape[0] + stored.var(axis=0) / len(stored))
    assert np.all(np.abs(m1 - m2) < 4 * se + 1e-9), (m1, m2, se)
    assert np.all(m2 > 0.5)  # the comparison is not between two zeros


def test_survival_and_monitoring_inputs_are_rendered(passed, report):
    survival = SurvivalSummary(
        endpoint="progression-free survival",
        times_days=(0.0, 30.0, 90.0, 180.0),
        median=(1.0, 0.9, 0.7, 0.5),
        lower=(1.0, 0.8, 0.5, 0.3),
        upper=(1.0, 0.95, 0.85, 0.7),
        level=0.9,
        model="test survival model",
    )
    with_survival = patient_report(passed, PATIENT, jax.random.key(0), survival=survival)
    html = render_html(with_survival, "patient.html.j2")
    assert 'id="fig-survival"' in html and "test survival model" in html
    monitoring = MonitoringSuggestion(
        schedule="7.5 mL at 04:00 every 4 weeks",
        lead_time_days_median=50.0,
        lead_time_days_lower=10.0,
        lead_time_days_upper=90.0,
        p_positive_before_imaging=0.6,
        false_positives_per_year=0.2,
        level=0.9,
        rationale="compared with morning draws",
    )
    operated = dataclasses.replace(report, post_surgery=True, monitoring=monitoring)
    html = render_html(operated, "patient.html.j2")
    assert "7.5 mL at 04:00 every 4 weeks" in html and "compared with morning draws" in html
    assert "median 50 days" in html
    nothing = render_html(dataclasses.replace(report, post_surgery=True), "patient.html.j2")
    assert "Not computed for this run (no MRD" in nothing


def test_optional_inputs_are_validated():
    with pytest.raises(ValueError, match="lower <= median <= upper"):
        SurvivalSummary("os", (0, 30), (1, 0.5), (1, 0.6), (1, 0.9), 0.9, "m")
    with pytest.raises(ValueError, match="increasing"):
        SurvivalSummary("os", (30, 0), (1, 0.5), (1, 0.4), (1, 0.9), 0.9, "m")
    with pytest.raises(ValueError, match="missing fields"):
        MonitoringSuggestion.from_dict({"schedule": "monthly"})
    s = SurvivalSummary("os", (0, 30), (1, 0.5), (1, 0.4), (1, 0.9), 0.9, "m")
    assert SurvivalSummary.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_failed_fit_shows_the_warning_and_no_risk_figures(failed_html):
    assert 'id="fit-warning"' in failed_html and "FIT FAILED ITS DIAGNOSTICS" in failed_html
    assert 'class="risk' not in failed_html
    for fig in ("fig-burden", "fig-survival"):
        assert f'id="{fig}"' not in failed_html
    assert failed_html.count("<img") == 1  # the observed counts only
    assert "withheld" in failed_html.lower()
    assert "P(burden grows)" not in failed_html


def test_per_patient_runs_are_gated_patient_by_patient(passed, tmp_path):
    """A per-patient run in which only the other patient diverged: the run fails its gate, that
    patient's report is withheld, and PATIENT's own fit (untouched) still shows its estimates."""
    other = next(p for p in passed.patient_ids if p != PATIENT)
    folder = tmp_path / "one-diverged"
    shutil.copytree(passed.run.path, folder)
    tree = passed.tree.copy()
    stats = tree["sample_stats"].to_dataset()
    diverging = stats["diverging"].copy()
    diverging.loc[{"patient": other, "draw": [3, 7]}] = True
    tree["sample_stats"] = stats.assign(diverging=diverging)
    summary = summarize(tree)
    run = Run.open(folder)
    assert run.finalize(tree, summary, check(tree, summary), {}) == "failed_gate"
    fitted = open_fitted(folder)
    assert not fitted.fit_ok and fitted.per_patient
    assert fitted.fit_ok_for(PATIENT) and not fitted.fit_ok_for(other)
    assert fitted.gate_for(other).divergences == 2 * fitted.tree["posterior"].sizes["chain"]
    mine = patient_report(fitted, PATIENT, jax.random.key(0))
    theirs = patient_report(fitted, other, jax.random.key(0))
    assert mine.fit_ok and mine.warning is None and "passed for this patient" in mine.status
    assert not theirs.fit_ok and "FIT FAILED ITS DIAGNOSTICS" in (theirs.warning or "")


def test_unknown_patient_is_a_clear_error(passed):
    with pytest.raises(UnknownPatientError, match=r"'NOPE' is not in the run.*P0001, P0002"):
        patient_report(passed, "NOPE", jax.random.key(0))


def test_changed_input_file_is_refused(passed, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(passed.run.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    draws = tmp_path / "draws.csv"
    draws.write_text(open(manifest["data"]["draws"]["path"]).read() + "\n")
    manifest["data"]["draws"]["path"] = str(draws)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ReportError, match=r"draws: .* has changed since the fit"):
        open_fitted(copy)


# --- the cohort report -------------------------------------------------------------------------


def test_cohort_report(passed, failed):
    content = cohort_report(passed)
    html = render_html(content, "cohort.html.j2")
    assert _external_references(html) == [] and "https://" not in html
    assert 'id="fig-calibration"' in html and 'id="population"' in html
    assert 'id="fig-dist-growth_rate"' in html
    for row in content.calibration:
        for key in ("ctc", "clusters"):
            assert 0.0 <= float(row[key].rstrip("%")) <= 100.0
    bad = render_html(cohort_report(failed), "cohort.html.j2")
    assert 'id="fit-warning"' in bad and 'class="risk' not in bad
    assert 'id="fig-calibration"' not in bad


def test_coverage_is_nominal_for_calibrated_counts_and_not_otherwise():
    rng = np.random.default_rng(0)
    samples = rng.poisson(3.0, size=(4000, 3000)).astype(float)
    levels = np.array([0.2, 0.5, 0.8, 0.9])
    calibrated = coverage(samples, rng.poisson(3.0, size=3000).astype(float), levels)
    # binomial SE at n = 3000 is <= 0.009; discreteness must not bias the randomised PIT
    np.testing.assert_allclose(calibrated, levels, atol=0.035)
    shifted = coverage(samples, rng.poisson(8.0, size=3000).astype(float), levels)
    assert np.all(shifted < levels / 2)  # far too few counts inside
    # exact cases: predictive uniform on {0, 1, 2, 3}; y = 0 gives U ~ Uniform(0, 0.25), which
    # the central 50% interval [0.25, 0.75] misses and the 90% one [0.05, 0.95] holds 0.2 / 0.25
    # of; y = 1 gives U ~ Uniform(0.25, 0.5), inside both
    four = np.array([[0.0], [1.0], [2.0], [3.0]])
    np.testing.assert_allclose(coverage(four, np.array([0.0]), np.array([0.5, 0.9])), [0.0, 0.8])
    np.testing.assert_allclose(coverage(four, np.array([1.0]), np.array([0.5, 0.9])), [1.0, 1.0])
    assert np.isnan(coverage(samples[:, :2], np.array([np.nan, np.nan]))).all()


def test_cellsearch_rule():
    assert classify(5, 0, 7.5, "cellsearch") is CellSearchClass.POSITIVE
    assert classify(4, 0, 7.5, "CellSearch") is CellSearchClass.NEGATIVE
    assert classify(None, 0, 7.5, "cellsearch") is CellSearchClass.MISSING
    assert classify(7, 1, 7.5, "cellsearch") is CellSearchClass.POSITIVE  # >= 7
    assert classify(3, 1, 7.5, "cellsearch") is CellSearchClass.UNDETERMINED  # >= 3
    assert classify(2, -1, 7.5, "cellsearch") is CellSearchClass.NEGATIVE  # <= 2
    assert classify(9, 0, 10.0, "cellsearch") is CellSearchClass.NOT_APPLICABLE
    assert classify(9, 0, 7.5, "parsortix") is CellSearchClass.NOT_APPLICABLE


# --- PDF and browser ---------------------------------------------------------------------------


def _weasyprint_problem() -> str | None:
    try:
        import weasyprint  # noqa: F401
    except (ImportError, OSError) as err:  # OSError: the Pango library is missing
        return f"WeasyPrint unusable ({err}); .ci/run installs libpango-1.0-0 libpangoft2-1.0-0"
    return None


needs_weasyprint = pytest.mark.skipif(
    _weasyprint_problem() is not None, reason=str(_weasyprint_problem())
)


@needs_weasyprint
def test_pdf_has_expected_pages_and_text(html, failed_html):
    pypdf = pytest.importorskip("pypdf")
    for text, what in ((html, "passed"), (failed_html, "failed")):
        pdf = pypdf.PdfReader(io.BytesIO(html_to_pdf(text)))
        assert 1 <= len(pdf.pages) <= 2, (what, len(pdf.pages))
        words = " ".join(page.extract_text() for page in pdf.pages)
        words = re.sub(r"\s+", " ", words)
        assert f"patient {PATIENT}" in words and "Research use only" in words
        assert "CTC counts over time" in words
        assert ("FIT FAILED" in words) == (what == "failed")


def _browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    _browser() is None,
    reason="no chromium/chromium-browser on PATH (.ci/run installs it in CI: apt-get install "
    "chromium)",
)
def test_html_renders_in_headless_chromium(html, tmp_path):
    from matplotlib.image import imread

    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    shot = tmp_path / "shot.png"
    command = [
        str(_browser()),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1000,1400",
        f"--screenshot={shot}",
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), done.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    flat = pixels.reshape(-1, 3)
    assert len(np.unique(flat, axis=0)) > 50  # text, lines and grey bands, not one colour
    dark = (flat.mean(axis=1) < 0.5).mean()
    assert 0.005 < dark < 0.5, dark  # ink on a white page


# --- the command -------------------------------------------------------------------------------


@needs_weasyprint
def test_cli_patient_and_cohort(passed, tmp_path):
    out = tmp_path / "reports"
    result = runner.invoke(
        app, ["report", str(passed.run.path), "--patient", PATIENT, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert (out / f"patient-{PATIENT}.html").is_file()
    assert (out / f"patient-{PATIENT}.pdf").read_bytes()[:5] == b"%PDF-"
    result = runner.invoke(
        app, ["report", str(passed.run.path), "--cohort", "--out", str(out), "--format", "html"]
    )
    assert result.exit_code == 0, result.output
    assert (out / "cohort.html").is_file() and not (out / "cohort.pdf").exists()


def test_cli_errors_exit_2(passed, failed, tmp_path, monkeypatch):
    run = str(passed.run.path)
    result = runner.invoke(app, ["report", run, "--patient", "NOPE", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "NOPE" in result.output and "P0001" in result.output
    result = runner.invoke(app, ["report", run, "--out", str(tmp_path)])
    assert result.exit_code == 2 and "exactly one of" in result.output
    result = runner.invoke(app, ["report", str(tmp_path), "--cohort", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "not a ctcdyn run folder" in result.output
    monkeypatch.setitem(sys.modules, "weasyprint", None)  # as if not installed
    result = runner.invoke(
        app, ["report", str(failed.run.path), "--cohort", "--out", str(tmp_path / "no")]
    )
    assert result.exit_code == 2 and "WeasyPrint" in result.output
    assert not (tmp_path / "no" / "cohort.html").exists()  # nothing half-written
