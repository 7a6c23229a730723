"""Reading and validating the input tables of a fit: draws, patients and treatments.

Every check runs before anything is returned, and every problem is collected: a bad input
raises one :class:`InputError` listing each broken rule with its file, row and column
(DESIGN.md section 9; the rules are listed in docs/data.md). Column checks are pandera schemas
validated lazily; the checks that span columns or tables (duplicates, censoring, patients
known) are done here.

Row numbers are spreadsheet rows: the header is row 1, so the first data row is row 2 (for CSV
this is also the line number of the file). Parquet files are numbered the same way.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from ..observation import assay_names
from ..specs import TREATMENT_COLUMNS

#: Treatment kinds a ``treatments`` table may name.
TREATMENT_KINDS = ("cytotoxic", "shedding_inhibitor", "cluster_dissociation", "surgery")
#: Count columns of ``draws`` and their optional censoring flags.
COUNT_COLUMNS = ("ctc", "clusters")
#: At most this many problems are listed in an :class:`InputError`'s message.
MAX_LISTED = 50

_FIRST_ROW = 2  # header is row 1
_EVENT = re.compile(r"^(.+)_event$")
_TIME = re.compile(r"^(.+)_time$")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One broken rule: where (file, spreadsheet row, column) and which rule."""

    file: str
    row: int | None  #: header is row 1, first data row is row 2; None for a whole-file problem
    column: str | None  #: None for a problem with a whole row or file
    rule: str
    got: str | None = None  #: the offending value, as text

    def __str__(self) -> str:
        where = [self.file]
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        got = f" (got {self.got})" if self.got is not None else ""
        return f"{', '.join(where)}: {self.rule}{got}"


class InputError(ValueError):
    """Invalid input tables; ``problems`` lists every broken rule (the message lists the first
    :data:`MAX_LISTED` and counts the rest)."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = tuple(problems)
        n = len(self.problems)
        lines = [f"{n} problem{'' if n == 1 else 's'} in the input tables:"]
        lines += [f"  {p}" for p in self.problems[:MAX_LISTED]]
        if n > MAX_LISTED:
            lines.append(f"  ... and {n - MAX_LISTED} more")
        super().__init__("\n".join(lines))


@dataclasses.dataclass(frozen=True)
class Tables:
    """Validated input tables (pandas DataFrames with a fresh 0-based index).

    ``draws``: patient_id (str), time, clock_hour, volume_ml (float), assay (str, lower case),
    ctc, clusters (nullable Int64; ``clusters`` is all missing when the file has no such
    column), ctc_censor, clusters_censor (int8 in {-1, 0, 1}; 0 when absent). ``patients``:
    patient_id (str), ``*_event`` (int64 in {0, 1}), ``*_time`` (float) and any other column
    unchanged. ``treatments``: the columns of ``treatments.csv`` (empty when no file was given).
    """

    draws: pd.DataFrame
    patients: pd.DataFrame
    treatments: pd.DataFrame


# --- checks ------------------------------------------------------------------------------


def _finite() -> pa.Check:
    return pa.Check(lambda s: np.isfinite(s), error="must be finite")


def _not_minus_inf() -> pa.Check:
    return pa.Check(lambda s: s > -np.inf, error="must be a number or inf")


def _ge(v: float) -> pa.Check:
    return pa.Check.ge(v, error=f"must be >= {v:g}")


def _gt(v: float) -> pa.Check:
    return pa.Check.gt(v, error=f"must be > {v:g}")


def _hour() -> list[pa.Check]:
    return [pa.Check.in_range(0.0, 24.0, include_max=False, error="must be in [0, 24)")]


def _whole() -> pa.Check:
    return pa.Check(lambda s: s == np.round(s), error="must be a whole number")


def _count(required: bool) -> pa.Column:
    return pa.Column(float, [_finite(), _ge(0), _whole()], nullable=True, required=required)


def _censor() -> pa.Column:
    return pa.Column(
        float,
        pa.Check.isin([-1.0, 0.0, 1.0], error="must be -1, 0 or 1"),
        nullable=True,
        required=False,
    )


def _id() -> pa.Column:
    return pa.Column(None, nullable=False)


def _draws_schema() -> pa.DataFrameSchema:
    assays = assay_names()
    return pa.DataFrameSchema(
        {
            "patient_id": _id(),
            "time": pa.Column(float, _finite(), nullable=False),
            "clock_hour": pa.Column(float, _hour(), nullable=False),
            "volume_ml": pa.Column(float, [_finite(), _gt(0)], nullable=False),
            "assay": pa.Column(
                None,
                pa.Check.isin(assays, error=f"must be a known assay ({', '.join(assays)})"),
                nullable=False,
            ),
            "ctc": _count(required=True),
            "clusters": _count(required=False),
            "ctc_censor": _censor(),
            "clusters_censor": _censor(),
        }
    )


def _patients_schema() -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        {
            "patient_id": _id(),
            "weight_kg": pa.Column(float, [_finite(), _gt(0)], nullable=False, required=False),
            _EVENT.pattern: pa.Column(
                float,
                pa.Check.isin([0.0, 1.0], error="must be 0 (censored) or 1 (event)"),
                nullable=False,
                regex=True,
                required=False,
            ),
            _TIME.pattern: pa.Column(
                float, [_finite(), _ge(0)], nullable=False, regex=True, required=False
            ),
        }
    )


def _treatments_schema() -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        {
            "patient_id": _id(),
            "kind": pa.Column(
                None,
                pa.Check.isin(
                    TREATMENT_KINDS, error=f"must be one of {', '.join(TREATMENT_KINDS)}"
                ),
                nullable=False,
            ),
            "start": pa.Column(float, _finite(), nullable=False),
            "end": pa.Column(float, _not_minus_inf(), nullable=False),
            "dose": pa.Column(float, [_finite(), _ge(0)], nullable=True, required=False),
            "dose_interval_days": pa.Column(
                float, [_finite(), _ge(0)], nullable=True, required=False
            ),
            "dose_clock_hour": pa.Column(float, _hour(), nullable=True, required=False),
            "residual_fraction": pa.Column(
                float,
                pa.Check.in_range(0.0, 1.0, error="must be in [0, 1]"),
                nullable=True,
                required=False,
            ),
        }
    )


_NUMERIC = {
    "draws": (
        "time",
        "clock_hour",
        "volume_ml",
        "ctc",
        "clusters",
        "ctc_censor",
        "clusters_censor",
    ),
    "patients": ("weight_kg",),
    "treatments": (
        "start",
        "end",
        "dose",
        "dose_interval_days",
        "dose_clock_hour",
        "residual_fraction",
    ),
}
_TEXT = {
    "draws": ("patient_id", "assay"),
    "patients": ("patient_id",),
    "treatments": ("patient_id", "kind"),
}
_LOWER = ("assay", "kind")


# --- reading -----------------------------------------------------------------------------


def _row(index: object) -> int:
    return int(index) + _FIRST_ROW  # type: ignore[call-overload]


def _show(value: object) -> str:
    if isinstance(value, float | np.floating):
        return f"{float(value):g}"
    return repr(value if not isinstance(value, np.generic) else value.item())


def _read(path: Path, label: str, problems: list[Problem]) -> pd.DataFrame | None:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        problems.append(
            Problem(label, None, None, f"unsupported file type {suffix!r}; use .csv or .parquet")
        )
        return None
    if not path.is_file():
        problems.append(Problem(label, None, None, "file not found"))
        return None
    try:
        if suffix == ".csv":
            df = pd.read_csv(path, dtype=str, skip_blank_lines=False, skipinitialspace=True)
        else:
            df = pd.read_parquet(path)
    except Exception as err:  # a parser's message is the best description available
        problems.append(Problem(label, None, None, f"cannot be read: {err}"))
        return None
    df.columns = [str(c).strip() for c in df.columns]
    df = df.reset_index(drop=True)
    for col in df.columns:
        if df[col].dtype == object or pd.api.types.is_string_dtype(df[col]):
            text = df[col].astype(str).str.strip()
            df[col] = text.where(df[col].notna() & (text != ""), None)
    # blank lines are dropped but keep their numbers, so rows stay as the user sees them
    return df.loc[df.notna().any(axis=1)]


def _convert(
    df: pd.DataFrame, kind: str, label: str, problems: list[Problem]
) -> set[tuple[int, str]]:
    """Give numeric columns float dtype and text columns str; returns the cells not numbers."""
    numeric = [c for c in df.columns if c in _NUMERIC[kind]]
    if kind == "patients":
        numeric += [c for c in df.columns if _EVENT.match(c) or _TIME.match(c)]
    bad: set[tuple[int, str]] = set()
    for col in numeric:
        raw = df[col]
        if pd.api.types.is_bool_dtype(raw):
            raw = raw.astype(float)
        values = pd.to_numeric(raw, errors="coerce").astype("float64")
        for idx in df.index[raw.notna() & values.isna()]:
            problems.append(Problem(label, _row(idx), col, "must be a number", _show(raw[idx])))
            bad.add((_row(idx), col))
        df[col] = values
    for col in _TEXT[kind]:
        if col in df:
            text = df[col].map(lambda v: v if v is None or pd.isna(v) else str(v).strip())
            df[col] = text.str.lower() if col in _LOWER else text
    return bad


def _validate(
    schema: pa.DataFrameSchema, df: pd.DataFrame, label: str, problems: list[Problem]
) -> None:
    try:
        schema.validate(df, lazy=True)
    except SchemaErrors as err:
        for case in err.failure_cases.itertuples(index=False):
            check, column = str(case.check), case.column
            index = None if case.index is None or pd.isna(case.index) else case.index
            if check == "column_in_dataframe":
                problems.append(
                    Problem(label, None, str(case.failure_case), "required column is missing")
                )
            elif check == "not_nullable":
                problems.append(Problem(label, _row(index), column, "must not be empty"))
            else:
                row = None if index is None else _row(index)
                problems.append(Problem(label, row, column, check, _show(case.failure_case)))


def _unique(
    df: pd.DataFrame, keys: list[str], label: str, problems: list[Problem], what: str
) -> None:
    if any(k not in df for k in keys):
        return
    known = df.dropna(subset=keys)
    # Vectorised (large cohorts): Python only touches the duplicates themselves.
    first = (
        pd.Series(known.index, index=known.index)
        .groupby([known[k] for k in keys], sort=False)
        .transform("first")
    )
    for idx in known.index[known.duplicated(keys, keep="first")]:
        problems.append(
            Problem(label, _row(idx), ", ".join(keys), f"{what}: same as row {_row(first[idx])}")
        )


def _known_patients(
    df: pd.DataFrame, ids: set[str] | None, label: str, patients_label: str, problems: list[Problem]
) -> None:
    if ids is None or "patient_id" not in df:
        return
    unknown = df["patient_id"].notna() & ~df["patient_id"].isin(ids)
    for idx in df.index[unknown]:
        problems.append(
            Problem(
                label,
                _row(idx),
                "patient_id",
                f"patient is not in {patients_label}",
                repr(df.at[idx, "patient_id"]),
            )
        )


def _check_draws(df: pd.DataFrame, label: str, problems: list[Problem]) -> None:
    _unique(df, ["patient_id", "time", "assay"], label, problems, "duplicate draw")
    for count in COUNT_COLUMNS:
        flag = f"{count}_censor"
        if flag not in df:
            continue
        if count not in df:
            problems.append(
                Problem(label, None, count, f"required column is missing (needed by {flag!r})")
            )
            continue
        censored = df[flag].notna() & (df[flag] != 0) & df[flag].isin([-1, 1]) & df[count].isna()
        for idx in df.index[censored]:
            problems.append(
                Problem(
                    label,
                    _row(idx),
                    count,
                    f"a censored count ({flag} = {int(df.at[idx, flag])}) must not be empty",
                )
            )


def _check_patients(df: pd.DataFrame, label: str, problems: list[Problem]) -> None:
    _unique(df, ["patient_id"], label, problems, "duplicate patient")
    for col in df.columns:
        match = _EVENT.match(col)
        if match and f"{match[1]}_time" not in df:
            problems.append(
                Problem(
                    label,
                    None,
                    f"{match[1]}_time",
                    f"required column is missing (needed by {col!r})",
                )
            )


def _check_treatments(df: pd.DataFrame, label: str, problems: list[Problem]) -> None:
    if "start" in df and "end" in df:
        later = df["start"] > df["end"]
        for idx in df.index[later]:
            s, e = df.at[idx, "start"], df.at[idx, "end"]
            problems.append(
                Problem(label, _row(idx), "end", "start must be <= end", f"start {s:g}, end {e:g}")
            )


def _finish_draws(df: pd.DataFrame) -> pd.DataFrame:
    df = df.reset_index(drop=True)
    df["patient_id"] = df["patient_id"].astype(str)
    df["assay"] = df["assay"].astype(str)
    for count in COUNT_COLUMNS:
        df[count] = (df[count] if count in df else pd.Series(np.nan, index=df.index)).astype(
            "Int64"
        )
        flag = f"{count}_censor"
        df[flag] = (df[flag].fillna(0) if flag in df else pd.Series(0, index=df.index)).astype(
            "int8"
        )
    return df


def _finish_patients(df: pd.DataFrame) -> pd.DataFrame:
    df = df.reset_index(drop=True)
    df["patient_id"] = df["patient_id"].astype(str)
    for col in df.columns:
        if _EVENT.match(col):
            df[col] = df[col].astype("int64")
    return df


def _finish_treatments(df: pd.DataFrame | None) -> pd.DataFrame:
    if df is None:
        df = pd.DataFrame({c: pd.Series(dtype=float) for c in TREATMENT_COLUMNS})
        df["patient_id"] = df["patient_id"].astype(str)
        df["kind"] = df["kind"].astype(str)
        return df
    df = df.reset_index(drop=True)
    df["patient_id"] = df["patient_id"].astype(str)
    df["kind"] = df["kind"].astype(str)
    for col in TREATMENT_COLUMNS:
        if col not in df:
            df[col] = np.nan
    return df


def read_tables(
    draws: str | Path, patients: str | Path, treatments: str | Path | None = None
) -> Tables:
    """Read and validate the input tables of a fit (``.csv`` or ``.parquet``).

    Args:
        draws: one row per blood draw.
        patients: one row per patient.
        treatments: one row per treatment (optional).

    Returns:
        The validated :class:`Tables`.

    Raises:
        InputError: listing every problem in every file (file, row, column and rule); nothing
            is returned when any table is invalid.
    """
    problems: list[Problem] = []
    paths = {"draws": Path(draws), "patients": Path(patients)}
    if treatments is not None:
        paths["treatments"] = Path(treatments)
    labels = {kind: str(path) for kind, path in paths.items()}
    schemas = {
        "draws": _draws_schema(),
        "patients": _patients_schema(),
        "treatments": _treatments_schema(),
    }
    checks = {
        "draws": _check_draws,
        "patients": _check_patients,
        "treatments": _check_treatments,
    }
    frames: dict[str, pd.DataFrame | None] = {}
    for kind, path in paths.items():
        label = labels[kind]
        found: list[Problem] = []
        df = _read(path, label, found)
        if df is not None:
            if len(df) == 0:
                found.append(Problem(label, None, None, "has no data rows"))
            bad = _convert(df, kind, label, found)
            _validate(schemas[kind], df, label, found)
            checks[kind](df, label, found)
            # a cell that is not a number is reported once, not again as empty or uncensored
            found = [
                p for p in found if p.rule == "must be a number" or (p.row, p.column) not in bad
            ]
        frames[kind] = df
        problems += found
    patients_df = frames["patients"]
    ids = (
        set(patients_df["patient_id"].dropna())
        if patients_df is not None and "patient_id" in patients_df
        else None
    )
    for kind in ("draws", "treatments"):
        df = frames.get(kind)
        if df is not None:
            _known_patients(df, ids, labels[kind], labels["patients"], problems)
    if problems:
        order = {label: i for i, label in enumerate(labels.values())}
        problems.sort(key=lambda p: (order[p.file], p.row or 0, p.column or "", p.rule))
        raise InputError(problems)
    assert frames["draws"] is not None and patients_df is not None
    return Tables(
        draws=_finish_draws(frames["draws"]),
        patients=_finish_patients(patients_df),
        treatments=_finish_treatments(frames.get("treatments")),
    )
