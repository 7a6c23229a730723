"""The fits store: atomic writes, the manifest, run folders, chunks and resume, and DataTree
round trips (netCDF and zarr) with string patient ids."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from ctcdyn._version import __version__
from ctcdyn.diagnostics import check
from ctcdyn.store import (
    MANIFEST,
    NotARunError,
    ResumeMismatchError,
    Run,
    concat_patients,
    sha256_file,
    summarize,
    write_csv,
    write_netcdf,
    write_zarr,
)
from ctcdyn.store._manifest import KEYS
from ctcdyn.store._summary import summarize_in_blocks

SPEC = 'name = "fast_clearance"\n[priors]\ngrowth_rate = "LogNormal(0, 1)"\n'


def _tree(ids, seed=0, n_blood=3, n_chain=2, n_draw=20) -> xr.DataTree:
    """A small per-patient fit with every group of the inference contract."""
    rng = np.random.default_rng(seed)
    n = len(ids)
    coords = {"chain": np.arange(n_chain), "draw": np.arange(n_draw), "patient": list(ids)}
    cdp = ("chain", "draw", "patient")
    shape = (n_chain, n_draw, n)
    tree = xr.DataTree.from_dict(
        {
            "posterior": xr.Dataset({"growth_rate": (cdp, rng.normal(size=shape))}, coords=coords),
            "sample_stats": xr.Dataset(
                {
                    "diverging": (cdp, np.zeros(shape, bool)),
                    "energy": (cdp, rng.normal(size=shape)),
                    "n_steps": (cdp, np.full(shape, 3)),
                },
                coords=coords,
            ),
            "log_likelihood": xr.Dataset(
                {"ctc": ((*cdp, "blood_draw"), rng.normal(size=(*shape, n_blood)))},
                coords=coords,
            ),
            "observed_data": xr.Dataset(
                {"ctc": (("patient", "blood_draw"), rng.poisson(3.0, (n, n_blood)))},
                coords={"patient": list(ids)},
            ),
        }
    )
    tree.attrs["mode"] = "per_patient"
    return tree


@pytest.fixture
def request_(tmp_path) -> dict:
    """A fit request: spec, data files and settings."""
    draws = tmp_path / "draws.csv"
    draws.write_text("patient_id,time\nP1,0.5\n")
    return dict(
        model="fast_clearance",
        spec_text=SPEC,
        data={"draws": draws},
        seed=7,
        sampler={"num_warmup": 500, "num_samples": 1000, "chains": 4, "target_accept": 0.9},
        mode="per_patient",
    )


def _leftovers(folder: Path) -> list[str]:
    return sorted(p for p in os.listdir(folder) if p.startswith("."))


# --- atomic writes ---------------------------------------------------------------------------


def test_failed_csv_write_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "summary.csv"
    df = pd.DataFrame({"a": [1, 2]})

    def broken(self, path, **kwargs):
        Path(path).write_text("a\n1\n")  # half a table, then a crash
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(OSError, match="disk full"):
        write_csv(target, df)
    assert not target.exists() and _leftovers(tmp_path) == []

    monkeypatch.undo()
    write_csv(target, df)
    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(OSError):
        write_csv(target, pd.DataFrame({"a": [9]}))
    assert target.read_text() == "a\n1\n2\n"  # the complete old table
    assert _leftovers(tmp_path) == []


def test_failed_tree_writes_leave_no_file(tmp_path, monkeypatch):
    tree = _tree(["P1"])

    def broken_nc(self, path, **kwargs):
        Path(path).write_bytes(b"\x89HDF")
        raise RuntimeError("killed")

    def broken_zarr(self, store, **kwargs):
        Path(store).mkdir()
        (Path(store) / "zarr.json").write_text("{}")
        raise RuntimeError("killed")

    monkeypatch.setattr(xr.DataTree, "to_netcdf", broken_nc)
    monkeypatch.setattr(xr.DataTree, "to_zarr", broken_zarr)
    with pytest.raises(RuntimeError):
        write_netcdf(tmp_path / "posterior.nc", tree)
    with pytest.raises(RuntimeError):
        write_zarr(tmp_path / "posterior.zarr", tree)
    assert os.listdir(tmp_path) == []


def test_zarr_is_replaced_whole(tmp_path, monkeypatch):
    target = tmp_path / "posterior.zarr"
    write_zarr(target, _tree(["P1"], seed=1))
    write_zarr(target, _tree(["P1", "P2"], seed=2))
    read = xr.open_datatree(target, engine="zarr", consolidated=False)
    assert list(read["posterior"]["patient"].values) == ["P1", "P2"]
    monkeypatch.setattr(xr.DataTree, "to_zarr", lambda *a, **k: (_ for _ in ()).throw(OSError()))
    with pytest.raises(OSError):
        write_zarr(target, _tree(["P9"]))
    read = xr.open_datatree(target, engine="zarr", consolidated=False)
    assert list(read["posterior"]["patient"].values) == ["P1", "P2"]
    assert _leftovers(tmp_path) == []


# --- manifest and run folders ------------------------------------------------------------------


def test_manifest_round_trip(tmp_path, request_):
    run = Run.create(tmp_path / "fits" / "run1", **request_)
    m = Run.open(run.path).manifest
    assert m == run.manifest
    assert tuple(m) == KEYS
    assert m["ctcdyn_version"] == __version__
    assert m["status"] == "running" and m["chunks"] == [] and m["diagnostics"] is None
    assert m["spec_text"] == SPEC
    assert m["data"]["draws"]["sha256"] == sha256_file(request_["data"]["draws"])
    assert m["sampler"]["target_accept"] == 0.9

    run.update_manifest(timings={"sampling": 12.5})
    assert Run.open(run.path).manifest["timings"] == {"sampling": 12.5}
    with pytest.raises(ValueError, match="status"):
        run.update_manifest(status="done")
    with pytest.raises(ValueError, match="unknown manifest keys"):
        run.update_manifest(colour="blue")
    assert Run.open(run.path).status == "running"


def test_open_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(NotARunError, match=re.escape(f"{tmp_path} is not a ctcdyn run folder")):
        Run.open(tmp_path)


def test_create_refuses_a_non_empty_folder(tmp_path, request_):
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    for flags in ({}, {"overwrite": True}):
        with pytest.raises(FileExistsError, match="not a ctcdyn run"):
            Run.create(other, **request_, **flags)
    assert (other / "todo.txt").read_text() == "keep me"

    run = Run.create(tmp_path / "run", **request_)
    run.write_chunk(0, _tree(["P1"]))
    with pytest.raises(FileExistsError, match="resume=True"):
        Run.create(run.path, **request_)
    fresh = Run.create(run.path, **request_, overwrite=True)
    assert fresh.manifest["chunks"] == [] and not (run.path / "chunks").exists()
    assert _leftovers(tmp_path) == []


def test_results_round_trip_and_finalize(tmp_path, request_):
    run = Run.create(tmp_path / "run", **request_)
    tree = _tree(["P0001", "P0002", "P0010"], n_draw=200)
    summary = summarize(tree)
    gate = check(tree, summary)
    status = run.finalize(tree, summary, gate, {"sampling": 3.0})
    assert status == run.status == ("passed" if gate.passed else "failed_gate")

    run = Run.open(run.path)
    xr.testing.assert_identical(run.read_posterior(), tree)
    read = run.read_summary()
    assert list(read["parameter"]) == list(summary["parameter"])
    np.testing.assert_allclose(read["mean"], summary["mean"], rtol=1e-5)
    m = run.manifest
    assert m["diagnostics"] == json.loads(json.dumps(gate.to_dict()))
    assert m["timings"] == {"sampling": 3.0}
    assert m["files"]["posterior"] == {
        "path": "posterior.nc",
        "sha256": sha256_file(run.path / "posterior.nc"),
    }
    assert set(m["files"]) == {"posterior", "summary"}


@pytest.mark.parametrize("fmt", ["netcdf", "zarr"])
def test_tree_round_trip_with_string_patient_ids(tmp_path, request_, fmt):
    run = Run.create(tmp_path / "run", **request_)
    tree = _tree(["P0001", "patient 2", "Ω-3"])
    path = run.write_posterior(tree, format=fmt)
    back = run.read_posterior()
    xr.testing.assert_identical(back, tree)
    assert back.attrs["mode"] == "per_patient"
    assert back["sample_stats"]["diverging"].dtype == bool
    assert list(back["posterior"]["patient"].values) == ["P0001", "patient 2", "Ω-3"]
    other = run.write_posterior(tree, format="zarr" if fmt == "netcdf" else "netcdf")
    assert other.exists() and not path.exists()  # no stale copy in the other format


# --- chunks and resume ----------------------------------------------------------------------


def test_chunks_are_recorded_and_concatenated_in_chunk_order(tmp_path, request_):
    run = Run.create(tmp_path / "run", **request_)
    run.write_chunk(2, _tree(["P5"], seed=2, n_blood=4))
    run.write_chunk(0, _tree(["P1", "P2"], seed=0))
    run.write_chunk(1, _tree(["P3", "P4"], seed=1, n_blood=2))
    assert run.finished_chunks() == {0, 1, 2}
    assert Run.open(run.path).manifest["chunks"] == [0, 1, 2]
    assert (run.path / "chunks" / "chunk-00002.nc").is_file()

    whole = run.read_chunks()
    assert list(whole["posterior"]["patient"].values) == ["P1", "P2", "P3", "P4", "P5"]
    assert whole["posterior"]["growth_rate"].dims == ("chain", "draw", "patient")
    obs = whole["observed_data"]["ctc"]
    assert obs.sizes == {"patient": 5, "blood_draw": 4}
    assert np.isnan(obs.sel(patient="P3").values[2:]).all()  # padded: P3 had 2 blood tests
    np.testing.assert_array_equal(
        whole["posterior"]["growth_rate"].sel(patient="P5"),
        _tree(["P5"], seed=2, n_blood=4)["posterior"]["growth_rate"].sel(patient="P5"),
    )
    assert whole["sample_stats"]["energy"].sizes["patient"] == 5


def test_only_complete_recorded_chunks_are_finished(tmp_path, request_):
    run = Run.create(tmp_path / "run", **request_)
    run.write_chunk(0, _tree(["P1"]))
    run.write_chunk(1, _tree(["P2"]))
    (run.path / "chunks" / "chunk-00003.nc").write_bytes(b"not recorded")  # crash before record
    run.chunk_path(1).unlink()  # recorded, but its file is gone
    assert run.finished_chunks() == {0}
    with pytest.raises(ValueError, match="chunk_id"):
        run.chunk_path(-1)


def test_resume_keeps_finished_chunks(tmp_path, request_):
    run = Run.create(tmp_path / "run", **request_)
    run.write_chunk(0, _tree(["P1"]))
    run.update_manifest(status="error")
    resumed = Run.create(
        run.path, **{**request_, "sampler": dict(request_["sampler"])}, resume=True
    )
    assert resumed.finished_chunks() == {0}
    assert resumed.status == "running"
    assert resumed.manifest["created"] == run.manifest["created"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"spec_text": SPEC + "# tuned\n"}, "spec_sha256"),
        ({"sampler": {"num_warmup": 500, "num_samples": 2000, "chains": 4}}, "sampler"),
        ({"seed": 8}, "seed"),
        ({"mode": "cohort"}, "mode"),
    ],
)
def test_resume_refuses_a_changed_request(tmp_path, request_, change, named):
    run = Run.create(tmp_path / "run", **request_)
    with pytest.raises(ResumeMismatchError, match=f"cannot resume the run in .*\n  {named}: "):
        Run.create(run.path, **{**request_, **change}, resume=True)
    assert Run.open(run.path).manifest == run.manifest  # untouched


def test_resume_refuses_changed_data(tmp_path, request_):
    run = Run.create(tmp_path / "run", **request_)
    request_["data"]["draws"].write_text("patient_id,time\nP1,0.75\n")
    with pytest.raises(ResumeMismatchError, match=r"data: .*\(hash\)"):
        Run.create(run.path, **request_, resume=True)


def test_create_rejects_both_flags(tmp_path, request_):
    with pytest.raises(ValueError, match="exclude each other"):
        Run.create(tmp_path / "run", **request_, overwrite=True, resume=True)
    assert not (tmp_path / "run" / MANIFEST).exists()


# --- chunks appended to one zarr store --------------------------------------------------------


def _with_prior(tree: xr.DataTree, seed: int) -> xr.DataTree:
    """``tree`` plus a ``prior`` group, and a second posterior variable that is not positive."""
    rng = np.random.default_rng(seed + 100)
    post = tree["posterior"].to_dataset()
    post["growth_rate"] = np.exp(post["growth_rate"])
    post["shift"] = post["growth_rate"] - 1.0
    post["late"] = post["growth_rate"].copy()  # positive but for one draw of P3
    if "P3" in post["patient"].values:
        post["late"].loc[{"patient": "P3", "chain": 0, "draw": 0}] = -1.0
    n = post.sizes["patient"]
    cdp = ("chain", "draw", "patient")
    rate = np.exp(rng.normal(size=(1, 30, n)))
    prior = xr.Dataset(
        {
            "growth_rate": (cdp, rate),
            "late": (cdp, rate),
            "shift": (cdp, rng.normal(size=rate.shape)),
        },
        coords={"patient": post["patient"].values},
    )
    groups = {g: tree[g].to_dataset() for g in tree.children}
    tree = xr.DataTree.from_dict({**groups, "posterior": post, "prior": prior})
    tree.attrs["mode"] = "per_patient"
    return tree


# chunk id -> (patient ids, their rows in the patients table, blood draws); ids of unequal length
_CHUNKS = {
    0: (["P1", "P3"], [0, 2], 2),
    1: (["patient 2", "P4"], [1, 3], 4),
    2: (["Ω-5"], [4], 3),
}


def _chunk(chunk_id: int) -> xr.DataTree:
    ids, _, n_blood = _CHUNKS[chunk_id]
    return _with_prior(_tree(ids, seed=chunk_id, n_blood=n_blood), chunk_id)


def _append(run: Run, chunk_id: int) -> None:
    run.append_chunk(chunk_id, _chunk(chunk_id), rows=_CHUNKS[chunk_id][1], sizes={"blood_draw": 4})


def _expected(chunk_ids=(0, 1, 2)) -> xr.DataTree:
    """The chunks concatenated as a netCDF batch run does, in patients-table order."""
    whole = concat_patients([_chunk(c) for c in chunk_ids])
    rows = np.concatenate([_CHUNKS[c][1] for c in chunk_ids])
    order = np.argsort(rows)

    def reorder(ds: xr.Dataset) -> xr.Dataset:
        if "blood_draw" in ds.dims:  # the store's width: the longest series of the cohort
            ds = ds.pad(blood_draw=(0, 4 - ds.sizes["blood_draw"]))
        return ds.isel(patient=order) if "patient" in ds.dims else ds

    return whole.map_over_datasets(reorder)


def _assert_same_tree(got: xr.DataTree, want: xr.DataTree) -> None:
    assert set(got.groups) == set(want.groups)
    for group in want.groups:
        a, b = got[group].to_dataset(), want[group].to_dataset()
        assert set(a.data_vars) == set(b.data_vars), group
        if "patient" in b.dims:
            assert list(a["patient"].values) == list(b["patient"].values)
        for name in b.data_vars:
            assert a[name].dims == b[name].dims, (group, name)
            assert a[name].dtype == b[name].dtype, (group, name)
            np.testing.assert_array_equal(a[name].values, b[name].values, f"{group}.{name}")


def test_appended_chunks_read_back_in_table_order(tmp_path, request_):
    run = Run.create(tmp_path / "run", **request_)
    for chunk_id in (2, 0, 1):  # chunks arrive in any order
        _append(run, chunk_id)
    assert run.finished_chunks() == {0, 1, 2}
    run = Run.open(run.path)
    assert run.manifest["chunks"] == [0, 1, 2] and run.appended_patients == 5
    assert not (run.path / "chunks").exists()
    back = run.read_posterior()
    _assert_same_tree(back, _expected())
    assert "patient_row" not in back["posterior"].coords
    assert list(back["posterior"].data_vars) == ["growth_rate", "shift", "late"]  # as fitted
    assert back.attrs == {"mode": "per_patient"} and back["posterior"].attrs == {}
    assert back["observed_data"]["ctc"].sizes == {"patient": 5, "blood_draw": 4}
    assert np.isnan(back["log_likelihood"]["ctc"].sel(patient="P1").values[..., 2:]).all()
    with pytest.raises(ValueError, match="already recorded"):
        _append(run, 1)


def test_an_append_not_recorded_is_cut_off_and_redone_once(tmp_path, request_, monkeypatch):
    run = Run.create(tmp_path / "run", **request_)
    _append(run, 0)

    def crash(self, **changes):
        raise KeyboardInterrupt("killed after the append, before the manifest")

    monkeypatch.setattr(Run, "update_manifest", crash)
    with pytest.raises(KeyboardInterrupt):
        _append(run, 1)
    monkeypatch.undo()
    store = xr.open_datatree(run.path / "posterior.zarr", engine="zarr", consolidated=False)
    assert store["posterior"].sizes["patient"] == 4  # chunk 1 is in the store, not recorded
    store.close()

    run = Run.create(run.path, **request_, resume=True)
    assert run.finished_chunks() == {0} and run.appended_patients == 2
    _assert_same_tree(run.read_posterior(), _expected((0,)))  # the tail is cut off on resume
    _append(run, 1)
    _append(run, 2)
    _assert_same_tree(Run.open(run.path).read_posterior(), _expected())


def test_a_half_done_append_is_cut_off(tmp_path, request_, monkeypatch):
    run = Run.create(tmp_path / "run", **request_)
    _append(run, 0)
    original = xr.Dataset.to_zarr
    calls = []

    def dies_on_the_third_group(self, *args, **kwargs):
        calls.append(kwargs.get("group"))
        if len(calls) == 3:
            raise KeyboardInterrupt("killed mid-append")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(xr.Dataset, "to_zarr", dies_on_the_third_group)
    with pytest.raises(KeyboardInterrupt):
        _append(run, 1)
    monkeypatch.undo()
    store = xr.open_datatree(run.path / "posterior.zarr", engine="zarr", consolidated=False)
    lengths = {g: store[g].sizes.get("patient") for g in ("posterior", "prior")}
    store.close()
    assert lengths == {"posterior": 4, "prior": 2}  # killed between groups

    _append(run, 1)  # the same process goes on: the tail is cut before appending
    _append(run, 2)
    _assert_same_tree(run.read_posterior(), _expected())


def test_summary_in_blocks_equals_the_whole_summary(tmp_path, request_):
    run = Run.create(tmp_path / "run", **request_)
    for chunk_id in (1, 2, 0):
        _append(run, chunk_id)
    want = summarize(_expected())
    assert list(want["parameter"])[:2] == ["growth_rate[P1]", "growth_rate[patient 2]"]
    lazy = run.open_posterior()
    try:
        rows = lazy["posterior"]["patient_row"].values
        assert list(rows) == [1, 3, 4, 0, 2]  # appended in arrival order
        for block in (1, 2, None):
            got = summarize_in_blocks(lazy, order=np.argsort(rows), patients_per_block=block)
            # equal up to rounding: numpy sums a row in an order that depends on the block
            pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12, atol=0)
    finally:
        lazy.close()
    # P3, whose draw makes "late" non-positive, is read last: every patient's "late"
    # contraction is on the natural scale, which differs from the log scale of growth_rate
    want = want.set_index("parameter")
    assert want.loc["late[P1]", "contraction"] != want.loc["growth_rate[P1]", "contraction"]


def test_finalize_keeps_the_appended_store(tmp_path, request_):
    run = Run.create(tmp_path / "run", **request_)
    with pytest.raises(ValueError, match="no chunks were appended"):
        run.finalize(None, pd.DataFrame(), check(_expected()), {})
    for chunk_id in (0, 1, 2):
        _append(run, chunk_id)
    tree = _expected()
    summary = summarize(tree)
    status = run.finalize(None, summary, check(tree, summary), {"fit": 1.0})
    run = Run.open(run.path)
    assert run.status == status and run.manifest["files"]["posterior"]["patients"] == 5
    _assert_same_tree(run.read_posterior(), tree)
    assert list(run.read_summary()["parameter"]) == list(summary["parameter"])
