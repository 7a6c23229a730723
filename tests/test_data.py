"""Input tables: reading CSV and Parquet, and every validation rule reported with file, row,
column and rule (rows are spreadsheet rows: header is row 1, first data row is row 2)."""

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from ctcdyn.cli import app
from ctcdyn.data import InputError, read_tables

runner = CliRunner()

DRAWS = pd.DataFrame(
    {
        "patient_id": ["P1", "P1", "P2", "P2"],
        "time": [0.5, 28.5, -3.5, 0.5],
        "clock_hour": [12.0, 12.0, 12.0, 12.0],
        "volume_ml": [7.5, 7.5, 7.5, 7.5],
        "assay": ["cellsearch", "cellsearch", "cellsearch", "parsortix"],
        "ctc": [14, 3, 201, 0],
        "clusters": [1, 0, 2, 0],
    }
)
PATIENTS = pd.DataFrame(
    {
        "patient_id": ["P1", "P2"],
        "weight_kg": [70.0, 60.5],
        "os_time": [730.0, 420.0],
        "os_event": [0, 1],
    }
)
TREATMENTS = pd.DataFrame(
    {
        "patient_id": ["P1", "P2"],
        "kind": ["cytotoxic", "surgery"],
        "start": [0.0, 0.0],
        "end": [168.0, 0.0],
        "dose": [1.0, None],
        "dose_interval_days": [21.0, None],
        "dose_clock_hour": [9.0, None],
        "residual_fraction": [None, 0.1],
    }
)


def write(tmp_path: Path, draws=DRAWS, patients=PATIENTS, treatments=TREATMENTS, ext="csv"):
    paths = {}
    for name, df in (("draws", draws), ("patients", patients), ("treatments", treatments)):
        path = tmp_path / f"{name}.{ext}"
        if ext == "csv":
            df.to_csv(path, index=False)
        else:
            df.to_parquet(path, index=False)
        paths[name] = path
    return paths


def problems(tmp_path, **tables) -> list[str]:
    paths = write(tmp_path, **tables)
    with pytest.raises(InputError) as info:
        read_tables(paths["draws"], paths["patients"], paths["treatments"])
    return [str(p) for p in info.value.problems]


def edit(df: pd.DataFrame, row: int, column: str, value) -> pd.DataFrame:
    df = df.copy()
    if column not in df:
        df[column] = pd.Series([None] * len(df), dtype=object)
    df[column] = df[column].astype(object)
    df.at[row, column] = value
    return df


def test_good_tables_csv(tmp_path):
    paths = write(tmp_path)
    t = read_tables(paths["draws"], paths["patients"], paths["treatments"])
    assert len(t.draws) == 4 and len(t.patients) == 2 and len(t.treatments) == 2
    assert t.draws["ctc"].dtype == "Int64" and t.draws["ctc"].tolist() == [14, 3, 201, 0]
    assert (t.draws["ctc_censor"] == 0).all() and (t.draws["clusters_censor"] == 0).all()
    assert t.draws["patient_id"].tolist() == ["P1", "P1", "P2", "P2"]
    assert t.draws["time"].min() == -3.5  # pre-baseline draws are allowed
    assert t.patients["os_event"].dtype == "int64"


def test_good_tables_parquet(tmp_path):
    pytest.importorskip("pyarrow", reason="Parquet needs pyarrow")
    paths = write(tmp_path, ext="parquet")
    t = read_tables(paths["draws"], paths["patients"], paths["treatments"])
    assert len(t.draws) == 4 and t.draws["clusters"].tolist() == [1, 0, 2, 0]
    assert t.draws["patient_id"].tolist() == ["P1", "P1", "P2", "P2"]


def test_optional_columns_and_missing_counts(tmp_path):
    draws = DRAWS.drop(columns="clusters")
    draws = edit(draws, 1, "ctc", None)
    draws = edit(draws, 2, "ctc_censor", 1)  # "> 200" reported as 201
    for i in (0, 1, 3):
        draws.at[i, "ctc_censor"] = 0
    paths = write(tmp_path, draws=draws)
    t = read_tables(paths["draws"], paths["patients"])
    assert t.draws["clusters"].isna().all() and t.draws["ctc"].isna().tolist()[1]
    assert t.draws["ctc_censor"].tolist() == [0, 0, 1, 0]
    assert len(t.treatments) == 0 and "residual_fraction" in t.treatments


def test_parquet_reports_errors_too(tmp_path):
    pytest.importorskip("pyarrow", reason="Parquet needs pyarrow")
    paths = write(tmp_path, draws=edit(DRAWS, 0, "volume_ml", -1.0), ext="parquet")
    with pytest.raises(InputError, match=r"draws\.parquet, row 2, column 'volume_ml': must be > 0"):
        read_tables(paths["draws"], paths["patients"], paths["treatments"])


# (table, row index, column, value, expected message); row index 1 is spreadsheet row 3
CASES = [
    ("draws", 1, "ctc", -1, "draws.csv, row 3, column 'ctc': must be >= 0 (got -1)"),
    ("draws", 1, "ctc", 2.5, "draws.csv, row 3, column 'ctc': must be a whole number (got 2.5)"),
    ("draws", 1, "clusters", "many", "draws.csv, row 3, column 'clusters': must be a number"),
    ("draws", 1, "time", "inf", "draws.csv, row 3, column 'time': must be finite (got inf)"),
    ("draws", 1, "time", None, "draws.csv, row 3, column 'time': must not be empty"),
    ("draws", 1, "volume_ml", 0, "draws.csv, row 3, column 'volume_ml': must be > 0 (got 0)"),
    ("draws", 1, "clock_hour", 24, "draws.csv, row 3, column 'clock_hour': must be in [0, 24)"),
    ("draws", 1, "assay", "elisa", "draws.csv, row 3, column 'assay': must be a known assay"),
    ("draws", 1, "ctc_censor", 2, "draws.csv, row 3, column 'ctc_censor': must be -1, 0 or 1"),
    ("draws", 1, "patient_id", "P7", "draws.csv, row 3, column 'patient_id': patient is not in"),
    ("draws", 1, "patient_id", None, "draws.csv, row 3, column 'patient_id': must not be empty"),
    ("patients", 1, "weight_kg", -2, "patients.csv, row 3, column 'weight_kg': must be > 0"),
    ("patients", 1, "os_event", 3, "patients.csv, row 3, column 'os_event': must be 0"),
    ("patients", 1, "os_time", -1, "patients.csv, row 3, column 'os_time': must be >= 0"),
    ("treatments", 1, "kind", "radio", "treatments.csv, row 3, column 'kind': must be one of"),
    ("treatments", 0, "end", -5, "treatments.csv, row 2, column 'end': start must be <= end"),
    ("treatments", 0, "dose", -1, "treatments.csv, row 2, column 'dose': must be >= 0"),
    ("treatments", 1, "residual_fraction", 2, "row 3, column 'residual_fraction': must be in"),
    ("treatments", 0, "dose_clock_hour", -1, "row 2, column 'dose_clock_hour': must be in"),
    ("treatments", 1, "patient_id", "P7", "treatments.csv, row 3, column 'patient_id': patient"),
]


@pytest.mark.parametrize(("table", "row", "column", "value", "expected"), CASES)
def test_each_rule_names_file_row_column_rule(tmp_path, table, row, column, value, expected):
    tables = {"draws": DRAWS, "patients": PATIENTS, "treatments": TREATMENTS}
    tables[table] = edit(tables[table], row, column, value)
    found = problems(tmp_path, **tables)
    assert any(expected in p for p in found), found
    assert len(found) == 1, found


def test_duplicate_draw(tmp_path):
    draws = pd.concat([DRAWS, DRAWS.iloc[[1]]], ignore_index=True)
    found = problems(tmp_path, draws=draws)
    assert found == [
        f"{tmp_path / 'draws.csv'}, row 6, column 'patient_id, time, assay': "
        "duplicate draw: same as row 3"
    ]


def test_duplicate_patient(tmp_path):
    patients = pd.concat([PATIENTS, PATIENTS.iloc[[0]]], ignore_index=True)
    found = problems(tmp_path, patients=patients)
    assert found == [
        f"{tmp_path / 'patients.csv'}, row 4, column 'patient_id': duplicate patient: same as row 2"
    ]


def test_censored_count_must_be_given(tmp_path):
    draws = edit(edit(DRAWS, 2, "ctc", None), 2, "ctc_censor", -1)
    found = problems(tmp_path, draws=draws)
    assert found == [
        f"{tmp_path / 'draws.csv'}, row 4, column 'ctc': "
        "a censored count (ctc_censor = -1) must not be empty"
    ]


def test_missing_required_columns(tmp_path):
    found = problems(
        tmp_path,
        draws=DRAWS.drop(columns=["volume_ml", "clusters"]).assign(clusters_censor=0),
        patients=PATIENTS.drop(columns="os_time"),
    )
    assert any("draws.csv, column 'volume_ml': required column is missing" in p for p in found)
    assert any("draws.csv, column 'clusters': required column is missing" in p for p in found)
    assert any("patients.csv, column 'os_time': required column is missing" in p for p in found)


def test_file_not_found_and_unsupported_type(tmp_path):
    paths = write(tmp_path)
    with pytest.raises(InputError) as info:
        read_tables(tmp_path / "nope.csv", paths["patients"], tmp_path / "t.xlsx")
    text = str(info.value)
    assert "nope.csv: file not found" in text and "t.xlsx: unsupported file type" in text


def test_all_problems_in_two_files_at_once(tmp_path):
    draws = edit(edit(DRAWS, 0, "volume_ml", -1), 3, "assay", "elisa")
    treatments = edit(TREATMENTS, 0, "kind", "radio")
    found = problems(tmp_path, draws=draws, treatments=treatments)
    assert len(found) == 3
    assert "draws.csv, row 2, column 'volume_ml'" in found[0]
    assert "draws.csv, row 5, column 'assay'" in found[1]
    assert "treatments.csv, row 2, column 'kind'" in found[2]


def test_listing_is_capped(tmp_path):
    draws = pd.concat([DRAWS] * 20, ignore_index=True).assign(volume_ml=-1.0)
    draws["time"] = range(len(draws))
    paths = write(tmp_path, draws=draws)
    with pytest.raises(InputError) as info:
        read_tables(paths["draws"], paths["patients"])
    assert len(info.value.problems) == 80
    assert "... and 30 more" in str(info.value)


def test_cli_validate_good(tmp_path):
    paths = write(tmp_path)
    before = sorted(tmp_path.iterdir())
    args = ["validate", "--draws", str(paths["draws"]), "--patients", str(paths["patients"])]
    result = runner.invoke(app, [*args, "--treatments", str(paths["treatments"])])
    assert result.exit_code == 0, result.output
    assert "blood draws" in result.output and "parsortix" in result.output
    assert sorted(tmp_path.iterdir()) == before  # writes nothing


def test_cli_validate_bad_exits_2(tmp_path):
    paths = write(tmp_path, draws=edit(DRAWS, 0, "ctc", -3))
    before = sorted(tmp_path.iterdir())
    args = ["validate", "--draws", str(paths["draws"]), "--patients", str(paths["patients"])]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "draws.csv" in result.output and "must be >= 0" in result.output
    assert sorted(tmp_path.iterdir()) == before
