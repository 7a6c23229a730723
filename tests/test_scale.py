"""Batch fits at scale: draw-count buckets, executors (this process and Dask), killed workers,
killed and resumed runs, and patients sharded over devices.

Kept small (tiny NUTS settings, 6 patients, chunks of 2) so the file runs in minutes on 2
cores; the chains are far too short to pass the gate, which is not what is tested here. What
is tested: every executor and every interruption gives bit-for-bit the draws of one
uninterrupted local run, with each patient exactly once.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from _subprocess import run_script
from numpyro.infer.util import log_density
from typer.testing import CliRunner

from ctcdyn.cli import app
from ctcdyn.data import read_tables
from ctcdyn.inference import (
    DaskExecutor,
    NUTSSettings,
    Population,
    bucket_widths,
    count_model,
    fit_data,
    fit_run,
    plan_chunks,
)
from ctcdyn.inference._buckets import MIN_WIDTH
from ctcdyn.inference._job import subset
from ctcdyn.simulate import simulate_cohort
from ctcdyn.store import Run

ROOT = Path(__file__).parents[1]
TINY = NUTSSettings(chains=2, warmup=20, samples=20)
SEED, CHUNK, N_PATIENTS = 3, 2, 6
runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory, mbc):
    out = tmp_path_factory.mktemp("cohort")
    simulate_cohort(mbc, N_PATIENTS, jax.random.key(11)).write(out)
    return {role: out / f"{role}.csv" for role in ("draws", "patients", "treatments")}


def _fit(mbc, files, out, **kwargs) -> Run:
    population = Population.from_spec(mbc)
    return fit_run(
        mbc, files, out, population=population, nuts=TINY, chunk_size=CHUNK, seed=SEED, **kwargs
    )


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, mbc, files) -> Run:
    """One uninterrupted run on the local executor: what every other run must reproduce."""
    return _fit(mbc, files, tmp_path_factory.mktemp("runs") / "local")


@pytest.fixture(scope="module")
def reference(reference_run):
    return reference_run.read_posterior()


def _assert_same_draws(run: Run, reference) -> None:
    tree = run.read_posterior()
    ids = [f"P{i:04d}" for i in range(1, N_PATIENTS + 1)]
    assert list(tree["posterior"]["patient"].values) == ids  # each patient once, in order
    assert run.manifest["chunks"] == list(range(N_PATIENTS // CHUNK))
    for group in ("posterior", "sample_stats", "log_likelihood", "posterior_predictive"):
        a, b = tree[group].to_dataset(), reference[group].to_dataset()
        assert set(a.data_vars) == set(b.data_vars)
        for name in a.data_vars:
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=f"{group}.{name}")


# --- buckets --------------------------------------------------------------------------------


def test_bucket_widths_are_powers_of_two_within_the_cohort_range():
    n = np.array([1, 2, 3, 4, 5, 8, 9, 17, 30])
    widths = bucket_widths(n)
    np.testing.assert_array_equal(widths, [4, 4, 4, 4, 8, 8, 16, 30, 30])
    assert np.all(widths >= n) and widths.max() == n.max() and widths.min() >= MIN_WIDTH
    with pytest.raises(ValueError, match="at least one blood draw"):
        bucket_widths(np.array([3, 0]))


@pytest.mark.parametrize("chunk_size", [1, 3, 10, 64])
def test_every_patient_is_in_exactly_one_chunk_wide_enough(chunk_size):
    rng = np.random.default_rng(chunk_size)
    n_draws = rng.integers(1, 40, size=200)
    plans = plan_chunks(n_draws, chunk_size)
    assert [p.chunk_id for p in plans] == list(range(len(plans)))
    members = np.concatenate([p.patients for p in plans])
    np.testing.assert_array_equal(np.sort(members), np.arange(n_draws.size))
    allowed = set(bucket_widths(n_draws).tolist())
    shapes = set()
    for p in plans:
        assert p.width in allowed and p.width >= n_draws[p.patients].max()
        assert 1 <= p.patients.size <= p.size <= chunk_size
        assert np.all(np.diff(p.patients) > 0)  # cohort order within a chunk
        padded = p.padded()
        assert padded.size == p.size and set(padded) == set(p.patients)
        shapes.add((p.width, p.size))
    assert len(shapes) <= len(allowed)  # at most one compiled shape per bucket


def test_one_long_patient_does_not_widen_everyone():
    n_draws = np.array([6] * 20 + [60])
    plans = plan_chunks(n_draws, 10)
    assert [(p.width, p.patients.size) for p in plans] == [(8, 10), (8, 10), (60, 1)]
    unbucketed = plan_chunks(n_draws, 10, bucketed=False)
    assert {p.width for p in unbucketed} == {60}


def test_a_bucket_of_a_few_patients_joins_the_next_wider_one():
    n_draws = np.array([8, 3, 8, 8, 8, 8, 8, 8])  # patient 1 alone in width 4
    plans = plan_chunks(n_draws, 4)
    assert [p.width for p in plans] == [8, 8]
    np.testing.assert_array_equal(plans[0].patients, [0, 1, 2, 3])


def test_cutting_padding_keeps_the_log_density(tmp_path, mbc, files):
    draws = pd.read_csv(files["draws"])
    short = draws[(draws["patient_id"] != "P0002") | (draws.groupby("patient_id").cumcount() < 3)]
    short.to_csv(tmp_path / "draws.csv", index=False)
    tables = read_tables(tmp_path / "draws.csv", files["patients"], files["treatments"])
    data = fit_data(mbc, tables)
    assert data.n_draws[1] == 3 and np.shape(data.arrays.time)[1] == 8
    model = count_model(mbc, data, Population.from_spec(mbc))
    index = np.array([1, 1, 1])  # P0002 three times, cut from 8 to 4 draws
    params = {
        f"{name}_z": np.array([-0.7, 0.2, 1.1])
        for name in mbc.sampled
        if mbc.parameters[name].level == "patient"
    }
    wide, _ = log_density(model, (subset(data, index).arrays,), {}, params)
    narrow, _ = log_density(model, (subset(data, index, 4).arrays,), {}, params)
    np.testing.assert_allclose(float(narrow), float(wide), rtol=1e-12)
    with pytest.raises(ValueError, match="narrower"):
        subset(data, np.array([0]), 4)


# --- executors ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def test_dask_gives_the_local_draws(tmp_path, mbc, files, reference, client):
    run = _fit(mbc, files, tmp_path / "dask", executor=DaskExecutor(client=client))
    _assert_same_draws(run, reference)


def test_a_killed_run_resumes_on_dask(tmp_path, files, reference, client):
    out = tmp_path / "killed"
    args = [
        "fit",
        *("--draws", str(files["draws"]), "--patients", str(files["patients"])),
        *("--treatments", str(files["treatments"]), "--out", str(out)),
        *("--per-patient", "--chunk-size", str(CHUNK), "--seed", str(SEED)),
        *("--chains", "2", "--warmup", "20", "--samples", "20"),
    ]
    env = {**os.environ, "CTCDYN_JAX_CACHE": str(ROOT / ".jax_cache")}
    cli = [sys.executable, "-c", "from ctcdyn.cli import main; main()"]
    proc = subprocess.Popen([*cli, *args], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while not _chunks_on_disk(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.kill()
    finally:
        proc.wait()
    done = Run.open(out).finished_chunks()
    assert 1 <= len(done) < N_PATIENTS // CHUNK, f"killed too late or too early: {done}"
    assert Run.open(out).status == "running"

    resumed = runner.invoke(
        app,
        [
            *args,
            "--resume",
            "--executor",
            "dask",
            "--scheduler",
            client.scheduler_info()["address"],
        ],
    )
    assert resumed.exit_code == 0, resumed.output
    _assert_same_draws(Run.open(out), reference)


def _chunks_on_disk(out: Path) -> bool:
    try:
        return bool(json.loads((out / "manifest.json").read_text())["chunks"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return False


def _die_once(fn, marker: str, chunk: int, task):
    """On a worker: the first attempt at ``chunk`` kills its worker process mid-task."""
    if task.chunk == chunk and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os._exit(1)
    return fn(task)


class _Sabotaged:
    """A Dask executor whose worker dies while fitting chunk 1 (once)."""

    def __init__(self, inner: DaskExecutor, marker: Path):
        self.inner, self.marker = inner, marker

    def map(self, fn, tasks):
        return self.inner.map(functools.partial(_die_once, fn, str(self.marker), 1), tasks)


def test_a_killed_worker_loses_no_chunk(tmp_path, mbc, files, reference, client):
    marker = tmp_path / "died"
    before = set(client.run(os.getpid).values())
    executor = _Sabotaged(DaskExecutor(client=client), marker)
    run = _fit(mbc, files, tmp_path / "worker-killed", executor=executor)  # type: ignore[arg-type]
    assert marker.exists() and int(marker.read_text()) in before  # a worker did die mid-task
    _assert_same_draws(run, reference)


class _Killed(Exception):
    """Stands for the ctcdyn process dying."""


def test_zarr_appends_survive_a_crash_before_the_record_and_resume_on_dask(
    tmp_path, mbc, files, reference_run, reference, client, monkeypatch
):
    out = tmp_path / "zarr"
    record = Run.update_manifest

    def dies_recording_the_second_chunk(self, **changes):
        if len(changes.get("chunks", ())) == 2:
            raise _Killed("killed after the append, before the manifest")
        record(self, **changes)

    monkeypatch.setattr(Run, "update_manifest", dies_recording_the_second_chunk)
    with pytest.raises(_Killed):
        _fit(mbc, files, out, format="zarr")
    monkeypatch.undo()
    assert Run.open(out).finished_chunks() == {0}
    store = xr.open_datatree(out / "posterior.zarr", engine="zarr", consolidated=False)
    assert store["posterior"].sizes["patient"] == 2 * CHUNK  # the unrecorded chunk is there
    store.close()

    run = _fit(mbc, files, out, format="zarr", resume=True, executor=DaskExecutor(client=client))
    _assert_same_draws(run, reference)  # each patient once, the local draws
    assert run.appended_patients == N_PATIENTS and not (out / "chunks").exists()
    assert not (out / "posterior.nc").exists()
    want = reference_run.read_summary()
    pd.testing.assert_frame_equal(run.read_summary(), want, check_exact=False, rtol=1e-5)
    assert run.manifest["diagnostics"] == reference_run.manifest["diagnostics"]
    assert run.status == reference_run.status

    with pytest.raises(ValueError, match="format='zarr'"):
        _fit(mbc, files, out, resume=True)  # started as zarr: not resumed as netCDF


def test_the_cli_says_how_to_get_dask(tmp_path, files, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    result = runner.invoke(
        app,
        [
            "fit",
            *("--draws", str(files["draws"]), "--patients", str(files["patients"])),
            *("--out", str(tmp_path / "never"), "--per-patient", "--executor", "dask"),
        ],
    )
    assert result.exit_code == 2
    assert "ctcdyn[dask]" in result.output
    assert not (tmp_path / "never").exists()


# --- sharding -------------------------------------------------------------------------------

_SHARDED = """
import jax, numpy as np
from numpyro.infer.util import log_density
from scipy.stats import norm
jax.config.update("jax_enable_x64", True)
from ctcdyn.data import read_tables
from ctcdyn.inference import count_model, fit_data, shard_patients
from ctcdyn.inference._job import subset
from ctcdyn.specs import load_spec

assert len(jax.devices()) == 2
spec = load_spec("mbc")
data = fit_data(spec, read_tables(*{files!r}))
data = subset(data, np.arange(3))  # 3 patients on 2 devices: one empty patient
model = count_model(spec, data, None)
sharded = shard_patients(data)
assert sharded.patient_ids[:3] == data.patient_ids and sharded.n_patients == 4
assert len(sharded.arrays.time.sharding.device_set) == 2
rng = np.random.default_rng(0)
params = {{k: np.asarray(v) for k, v in model.initial_values(4).items()}}
zs = model.patient_sites()
for k in zs:
    params[k] = rng.normal(size=4)
lp_sharded, _ = log_density(model, (sharded.arrays,), {{}}, params)
lp, _ = log_density(model, (data.arrays,), {{}}, {{k: v[:3] if k in zs else v for k, v in
    params.items()}})
empty_prior = sum(norm.logpdf(params[k][3]) for k in zs)
print("lp", float(lp_sharded) - empty_prior, float(lp))
np.testing.assert_allclose(float(lp_sharded) - empty_prior, float(lp), rtol=1e-10)
"""


def test_patients_sharded_over_two_devices_keep_the_log_density(files):
    script = _SHARDED.format(
        files=(str(files["draws"]), str(files["patients"]), str(files["treatments"]))
    )
    run_script(script, "2")


_SHARDED_FIT = """
import jax, numpy as np
jax.config.update("jax_enable_x64", True)
from ctcdyn.data import read_tables
from ctcdyn.inference import NUTSSettings, fit, fit_data, fit_run, shard_patients
from ctcdyn.specs import load_spec

assert len(jax.local_devices()) == 2
files = {files!r}
settings = NUTSSettings(chains=2, warmup=20, samples=20)
# CPU devices: fit_run spreads the chains over them
run = fit_run(load_spec("mbc"), files, {out!r}, nuts=settings)
tree = run.read_posterior()
assert list(tree["posterior"]["patient"].values) == {ids!r}, tree["posterior"]["patient"].values
assert all(np.isfinite(v.values).all() for v in tree["posterior"].data_vars.values())
assert run.status in ("passed", "failed_gate"), run.status
# patients sharded over the devices (what accelerators get), through the API
spec = load_spec("mbc")
data = shard_patients(fit_data(spec, read_tables(files["draws"], files["patients"],
                                                 files["treatments"])))
result = fit(spec, data, jax.random.key(0), nuts=settings)
posterior = result.tree["posterior"]
assert posterior.sizes["patient"] == 6, posterior.sizes  # 5 patients and one empty
assert all(np.isfinite(v.values).all() for v in posterior.data_vars.values())
"""


@pytest.mark.slow
def test_a_cohort_fit_runs_over_two_devices_chains_or_patients_spread(files, tmp_path):
    ids = [f"P{i:04d}" for i in range(1, 6)]  # sharded on 2 devices: one empty patient
    subset_files = {}
    for role, path in files.items():
        table = pd.read_csv(path)
        subset_files[role] = str(tmp_path / path.name)
        table[table["patient_id"].isin(ids)].to_csv(subset_files[role], index=False)
    script = _SHARDED_FIT.format(files=subset_files, out=str(tmp_path / "run"), ids=ids)
    run_script(script, "2", timeout=1800)
