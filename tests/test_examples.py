"""The bundled example cohorts: valid input, reachable from Python, and exactly what their
``ctcdyn simulate`` command writes today (so they cannot drift from the model)."""

import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import ctcdyn
from ctcdyn import examples
from ctcdyn.cli import app
from ctcdyn.examples import COMMANDS, TABLES, example_cohort, example_names

runner = CliRunner()
EXAMPLES = Path(examples.__file__).parent


def test_example_cohort_gives_existing_csv_files():
    paths = example_cohort("mbc")
    assert set(paths) == set(TABLES)
    for name, path in paths.items():
        assert path.name == f"{name}.csv" and path.is_file()


def test_unknown_example_names_the_bundled_ones():
    with pytest.raises(ValueError, match="mbc"):
        example_cohort("nope")


@pytest.mark.parametrize("name", example_names())
def test_example_passes_validation(name):
    paths = example_cohort(name)
    tables = ctcdyn.read_tables(paths["draws"], paths["patients"], paths["treatments"])
    truth = pd.read_csv(paths["truth"], dtype={"patient_id": str})
    ids = list(tables.patients["patient_id"])
    assert sorted(set(tables.draws["patient_id"])) == sorted(ids) == sorted(truth["patient_id"])
    args = ["validate", *(f"--{t}={paths[t]}" for t in ("draws", "patients", "treatments"))]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("name", example_names())
def test_readme_quotes_the_command(name):
    readme = (EXAMPLES / name / "README.md").read_text()
    assert COMMANDS[name] in readme


def _rerun(command: str, out: Path) -> None:
    """Run a ``ctcdyn ...`` command line in this process, writing to ``out`` instead."""
    argv = shlex.split(command)
    assert argv[0] == "ctcdyn"
    argv = argv[1:]
    argv[argv.index("--out") + 1] = str(out)
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output


def _assert_same_table(bundled: Path, fresh: Path) -> None:
    old = pd.read_csv(bundled, dtype={"patient_id": str})
    new = pd.read_csv(fresh, dtype={"patient_id": str})
    assert list(old.columns) == list(new.columns), bundled.name
    assert len(old) == len(new), bundled.name
    for column in old.columns:
        a, b = old[column], new[column]
        where = f"{bundled.name}, column {column!r}"
        if pd.api.types.is_float_dtype(a) or pd.api.types.is_float_dtype(b):
            np.testing.assert_allclose(
                b.to_numpy(float), a.to_numpy(float), rtol=1e-9, atol=0.0, err_msg=where
            )
        else:
            assert a.dtype == b.dtype, where
            mismatch = a.ne(b) & ~(a.isna() & b.isna())
            rows = [int(i) + 2 for i in np.flatnonzero(mismatch)]  # spreadsheet rows
            assert not rows, f"{where}: rows {rows} differ"


@pytest.mark.parametrize("name", example_names())
def test_example_equals_a_fresh_simulation(name, tmp_path):
    # If this fails after a change of the model: rerun COMMANDS[name] and commit the files.
    _rerun(COMMANDS[name], tmp_path)
    for table in TABLES:
        _assert_same_table(example_cohort(name)[table], tmp_path / f"{table}.csv")
