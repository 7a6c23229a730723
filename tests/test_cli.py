"""The command line: verbs, exit codes and messages for bad input, files written."""

import pandas as pd
from typer.testing import CliRunner

from ctcdyn.cli import app

runner = CliRunner()


def test_help_lists_every_verb():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for verb in ("simulate", "demo", "spec"):
        assert verb in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and "ctcdyn" in result.output


def test_spec_check_reports_file_and_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\nname = "x"\nprimary_growth = "linear"\n')
    result = runner.invoke(app, ["spec", "check", "mbc", str(bad)])
    assert result.exit_code == 2
    assert "model.primary_growth" in result.output and "bad.toml" in result.output


def test_spec_show_and_list():
    shown = runner.invoke(app, ["spec", "show", "mbc"])
    assert shown.exit_code == 0 and "half_life_single" in shown.output
    listed = runner.invoke(app, ["spec", "list"])
    assert listed.exit_code == 0 and "adjuvant" in listed.output


def test_simulate_unknown_model_exits_2_and_writes_nothing(tmp_path):
    result = runner.invoke(
        app, ["simulate", "--model", "nope", "--out", str(tmp_path / "o"), "--patients", "2"]
    )
    assert result.exit_code == 2 and "no bundled model 'nope'" in result.output
    assert not (tmp_path / "o").exists()


def test_simulate_writes_the_four_tables(tmp_path):
    out = tmp_path / "cohort"
    args = ["simulate", "--model", "mbc", "--patients", "3", "--seed", "1", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in ("draws", "patients", "treatments", "truth"):
        assert (out / f"{name}.csv").exists()
    assert pd.read_csv(out / "truth.csv")["patient_id"].tolist() == ["P0001", "P0002", "P0003"]
