"""A finished run folder opened for reporting: spec, data, posterior, summary and gate result.

Reports rebuild the fitted model from what the run recorded (the spec's text, the input files,
the per-patient population), so forecasts go through the same :class:`CountModel` and dynamics
as the fit. Input files must still be where the fit read them and have the same bytes (SHA-256);
otherwise the report refuses to draw from data that may not be what was fitted.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from ..data import InputError, read_tables
from ..diagnostics import GateResult, check
from ..inference import CountModel, FitData, Population, count_model, fit_data
from ..specs import ModelSpec, SpecError, parse_spec
from ..store import InputFilesError, NotARunError, Run


class ReportError(ValueError):
    """A report cannot be made from this run (unfinished run, changed inputs, ...)."""


class UnknownPatientError(ReportError, KeyError):
    """The requested patient is not in the run."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclasses.dataclass(frozen=True, eq=False)
class FittedRun:
    """Everything a report needs from one run folder.

    Attributes:
        run: the run folder.
        spec: the model spec, parsed from the text stored in the manifest.
        data: the fitted cohort's arrays and tables (the recorded input files).
        model: the :class:`CountModel` of the fit (same engine, censoring and population).
        tree: the posterior DataTree.
        summary: ``summary.csv``.
        gate: the diagnostics gate, re-checked on the stored posterior.
    """

    run: Run
    spec: ModelSpec
    data: FitData
    model: CountModel
    tree: xr.DataTree
    summary: pd.DataFrame
    gate: GateResult

    @property
    def manifest(self) -> dict[str, Any]:
        return self.run.manifest

    @property
    def status(self) -> str:
        return str(self.run.status)

    @property
    def fit_ok(self) -> bool:
        """True only for a NUTS fit whose manifest says "passed" and whose stored posterior
        passes the gate again now. Anything else gets no estimates in a report."""
        return self.status == "passed" and self.gate.passed

    @property
    def per_patient(self) -> bool:
        """Whether every patient was fitted on their own (``--per-patient``)."""
        return self.manifest.get("mode") == "per_patient"

    def gate_for(self, patient_id: str) -> GateResult:
        """The gate that one patient's numbers answer to.

        In a per-patient run each patient is a fit of their own (own chains, own adaptation,
        the population fixed), so the gate is re-checked on that patient's posterior alone: one
        patient's divergences say nothing about another's, and a batch of thousands would
        otherwise always withhold every report. In a cohort run every patient shares the
        population parameters, and the run's gate applies to all.
        """
        if not self.per_patient:
            return self.gate
        groups = {}
        for name in ("posterior", "sample_stats"):
            ds = self.tree[name].to_dataset()
            groups[name] = ds.sel(patient=patient_id) if "patient" in ds.dims else ds
        mine = self.summary["parameter"].astype(str).str.endswith(f"[{patient_id}]")
        return check(xr.DataTree.from_dict(groups), self.summary[mine.to_numpy()])

    def fit_ok_for(self, patient_id: str) -> bool:
        """:attr:`fit_ok` for one patient's numbers (see :meth:`gate_for`): in a per-patient run,
        a NUTS run that finished (passed or failed its gate elsewhere) whose own posterior
        for this patient passes the gate."""
        if not self.per_patient:
            return self.fit_ok
        return self.status in ("passed", "failed_gate") and self.gate_for(patient_id).passed

    @property
    def patient_ids(self) -> tuple[str, ...]:
        return self.data.patient_ids

    def patient_index(self, patient_id: str) -> int:
        """Position of ``patient_id``; :class:`UnknownPatientError` naming the known ids."""
        try:
            return self.patient_ids.index(str(patient_id))
        except ValueError:
            shown = ", ".join(self.patient_ids[:10])
            more = f", ... ({len(self.patient_ids)} in all)" if len(self.patient_ids) > 10 else ""
            raise UnknownPatientError(
                f"patient {patient_id!r} is not in the run {self.run.path}; "
                f"its patients are {shown}{more}"
            ) from None

    def posterior(self) -> xr.Dataset:
        return self.tree["posterior"].to_dataset()

    def population(self) -> Population | None:
        return self.model.population


def open_fitted(path: Path | str) -> FittedRun:
    """Open the run in ``path`` for reporting.

    Raises:
        ReportError: not a run, unfinished or crashed, no posterior, the spec text is missing,
            or an input file is missing or changed since the fit.
    """
    try:
        run = Run.open(path)
    except NotARunError as err:
        raise ReportError(str(err)) from None
    manifest = run.manifest
    if manifest["status"] in ("running", "error"):
        raise ReportError(
            f"the run in {run.path} has status {manifest['status']!r}: it did not finish. "
            "Try 1) `ctcdyn fit ... --resume` to finish it, 2) a finished run."
        )
    if not manifest.get("spec_text"):
        raise ReportError(f"the run in {run.path} does not record its spec's text")
    try:
        spec = parse_spec(manifest["spec_text"], path=f"{run.path}/manifest.json (spec_text)")
    except SpecError as err:
        raise ReportError(str(err)) from None
    try:
        paths = run.input_files()
    except InputFilesError as err:
        raise ReportError(str(err)) from None
    sampler = manifest.get("sampler") or {}
    try:
        tables = read_tables(paths["draws"], paths["patients"], paths.get("treatments"))
        data = fit_data(
            spec,
            tables,
            labels={k: str(v) for k, v in paths.items()},
            outcomes=tuple(sampler.get("outcomes", ())),
        )
    except InputError as err:
        raise ReportError(str(err)) from None
    population = None
    if manifest.get("mode") == "per_patient":
        population = Population(**sampler["population"])
    tree = run.read_posterior()
    summary = run.read_summary()
    patients = tree["posterior"].to_dataset()["patient"].values
    if [str(p) for p in patients] != list(data.patient_ids):
        raise ReportError(
            f"the run's posterior has other patients than its input files in {run.path}"
        )
    return FittedRun(
        run=run,
        spec=spec,
        data=data,
        model=count_model(spec, data, population),
        tree=tree,
        summary=summary,
        gate=check(tree, summary),
    )
