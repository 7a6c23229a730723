"""Posterior reports for clinicians: one patient per page or two, and a cohort summary.

Each report is one self-contained HTML file (figures and styles inline, no external request)
and optionally a PDF of it. A fit that did not pass its diagnostics gets a prominent warning and
no estimates. See docs/report.md.
"""

from ._cellsearch import THRESHOLD, CellSearchClass, classify
from ._cohort import CohortReport, cohort_report, coverage
from ._fitted import FittedRun, ReportError, UnknownPatientError, open_fitted
from ._forecast import Prediction, band, forecast_times, predict
from ._inputs import MonitoringSuggestion, SurvivalSummary
from ._patient import PatientReport, patient_report
from ._render import MissingDependencyError, html_to_pdf, render_html, write_report

__all__ = [
    "THRESHOLD",
    "CellSearchClass",
    "CohortReport",
    "FittedRun",
    "MissingDependencyError",
    "MonitoringSuggestion",
    "PatientReport",
    "Prediction",
    "ReportError",
    "SurvivalSummary",
    "UnknownPatientError",
    "band",
    "classify",
    "cohort_report",
    "coverage",
    "forecast_times",
    "html_to_pdf",
    "open_fitted",
    "patient_report",
    "predict",
    "render_html",
    "write_report",
]
