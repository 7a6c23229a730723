"""The inference engine end to end at toy sizes: data arrays, the likelihood, fits, the store,
the gate, resume, and the fit/diagnose commands.

Statistical validity (recovery, simulation-based calibration) is in test_calibration.py (slow).
Here the chains are far too short to pass the gate, which is itself checked: a failed gate must
be recorded and reported, never hidden.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ctcdyn.cli import app
from ctcdyn.data import InputError, read_tables
from ctcdyn.dynamics import FastClearance, solve
from ctcdyn.inference import NUTSSettings, Population, count_model, fit_data, fit_run
from ctcdyn.observation import count_log_prob, expected_counts, get_assay
from ctcdyn.simulate import simulate_cohort
from ctcdyn.specs import build_model, treatments_from_table
from ctcdyn.store import Run

runner = CliRunner()
TINY = NUTSSettings(chains=2, warmup=20, samples=20)


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory, mbc):
    out = tmp_path_factory.mktemp("cohort")
    simulate_cohort(mbc, 4, jax.random.key(11)).write(out)
    return out


def _files(folder):
    return {
        "draws": folder / "draws.csv",
        "patients": folder / "patients.csv",
        "treatments": folder / "treatments.csv",
    }


def _write(tmp_path, draws: list[dict], patients: list[str]):
    pd.DataFrame(draws).to_csv(tmp_path / "draws.csv", index=False)
    pd.DataFrame({"patient_id": patients}).to_csv(tmp_path / "patients.csv", index=False)
    return read_tables(tmp_path / "draws.csv", tmp_path / "patients.csv")


def _draw(pid, time, hour, ctc, **extra):
    return (
        dict(patient_id=pid, time=time, clock_hour=hour, volume_ml=7.5, assay="cellsearch", ctc=ctc)
        | extra
    )


def test_fit_data_sorts_pads_and_masks(tmp_path, mbc):
    tables = _write(
        tmp_path,
        [
            _draw("B", 30.0, 10.0, 3),
            _draw("A", 28.0, 4.0, None),
            _draw("B", 0.0, 8.0, 7),
            _draw("A", 0.0, 10.0, 2),
            _draw("B", 56.2, 6.0, 1),
        ],
        ["A", "B"],
    )
    data = fit_data(mbc, tables)
    assert data.patient_ids == ("A", "B")
    np.testing.assert_array_equal(data.n_draws, [2, 3])
    a = data.arrays
    # t = floor(time) + clock_hour / 24, sorted; A's padding repeats its last time
    np.testing.assert_allclose(a.time[0], [10 / 24, 28 + 4 / 24, 28 + 4 / 24])
    np.testing.assert_allclose(a.time[1], [8 / 24, 30 + 10 / 24, 56 + 6 / 24])
    np.testing.assert_array_equal(a.ctc_mask, [[True, False, False], [True, True, True]])
    np.testing.assert_array_equal(a.ctc[1], [7, 3, 1])
    assert not a.clusters_mask.any()  # no clusters column: all missing
    np.testing.assert_array_equal(data.draw_rows[0], [3, 1, -1])
    assert a.sampled_recovery[a.ctc_mask].all()  # cellsearch is the spec's assay
    np.testing.assert_allclose(a.blood_volume_ml, 5000.0)


def test_fit_data_names_rows_it_cannot_fit(tmp_path, mbc):
    tables = _write(tmp_path, [_draw("A", -2.0, 9.0, 1)], ["A", "C"])
    with pytest.raises(InputError) as err:
        fit_data(mbc, tables, labels={"draws": "d.csv", "patients": "p.csv"})
    text = str(err.value)
    assert "d.csv, row 2, column 'time'" in text
    assert "p.csv, row 3" in text and "no draws" in text


def test_likelihood_uses_the_simulation_dynamics(cohort_dir, mbc):
    """The fitted model's log-likelihood at the true parameters equals the one computed from
    the simulator's own solve (FastClearance ODE path) and the observation model."""
    tables = read_tables(*_files(cohort_dir).values())
    data = fit_data(mbc, tables)
    truth = (
        pd.read_csv(cohort_dir / "truth.csv").set_index("patient_id").loc[list(data.patient_ids)]
    )
    values = {
        name: jnp.asarray(truth[name].to_numpy())
        if mbc.parameters[name].level == "patient"
        else jnp.asarray(truth[name].iloc[0])
        for name in mbc.sampled
    }
    model = count_model(mbc, data, None)
    arrays = jax.tree.map(jnp.asarray, data.arrays)
    ll_ctc, _ = model.log_likelihood(arrays, values)

    ids = list(data.patient_ids)
    ctcm = build_model(mbc, values, treatments_from_table(mbc, tables.treatments, ids, values))
    ctcm = jax.tree.map(lambda x: jnp.broadcast_to(x, (len(ids),)) if jnp.ndim(x) == 0 else x, ctcm)
    traj = jax.vmap(lambda m, t: solve(m, t, FastClearance(rtol=1e-10, atol=1e-10)))(
        ctcm, arrays.time
    )
    means = expected_counts(
        traj.singles,
        traj.clusters,
        assay=get_assay("cellsearch").__class__(
            **{**get_assay("cellsearch").__dict__, "recovery": values["recovery"]}
        ),
        volume_ml=arrays.volume_ml,
        blood_volume_ml=70.0
        * pd.read_csv(cohort_dir / "patients.csv")["weight_kg"].to_numpy()[:, None],
    )
    expected = count_log_prob(
        means.singles,
        arrays.ctc,
        mask=arrays.ctc_mask,
        family="negbin",
        concentration=values["dispersion"],
    )
    np.testing.assert_allclose(ll_ctc, expected, rtol=1e-7, atol=1e-9)
    assert np.all(np.isfinite(ll_ctc))


def _latent_sites(model, arrays) -> set[str]:
    from numpyro import handlers

    with handlers.seed(rng_seed=0):
        trace = handlers.trace(model).get_trace(arrays)
    return {k for k, v in trace.items() if v["type"] == "sample" and not v["is_observed"]}


def test_mass_blocks_name_the_population_block(cohort_dir, mbc):
    """The dense block is exactly the cohort model's latent sites other than the per-patient
    ones (a misspelt name would silently leave a site out of it); per-patient fits have none."""
    data = fit_data(mbc, read_tables(*_files(cohort_dir).values()))
    arrays = jax.tree.map(jnp.asarray, data.arrays)
    cohort = count_model(mbc, data, None)
    (block,) = cohort.mass_blocks()
    latent = _latent_sites(cohort, arrays)
    assert set(cohort.patient_sites()) <= latent
    assert set(block) == latent - set(cohort.patient_sites())
    assert len(block) == len(set(block)) > 10
    assert count_model(mbc, data, Population.from_spec(mbc)).mass_blocks() == []
    assert NUTSSettings().mass_matrix == "diagonal"
    with pytest.raises(ValueError, match="mass_matrix"):
        NUTSSettings(mass_matrix="dense")


class _Ridge:
    """a, b ~ N(0, 1) with a + b pinned to 0 (sd 0.05): a ridge at correlation -0.997; c apart."""

    def __call__(self, data):
        import numpyro
        import numpyro.distributions as dist

        a = numpyro.sample("a", dist.Normal(0.0, 1.0))
        b = numpyro.sample("b", dist.Normal(0.0, 1.0))
        numpyro.sample("c", dist.Normal(0.0, 1.0))
        numpyro.factor("ridge", -0.5 * ((a + b - data["shift"]) / 0.05) ** 2)

    def mass_blocks(self):
        return [("a", "b")]


def test_a_dense_block_follows_a_ridge_the_diagonal_matrix_crawls_along():
    """With mass_matrix="blocks" NUTS adapts the declared block densely: on a ridge it takes a
    few leapfrog steps per iteration where the diagonal matrix needs many, and both sample the
    same posterior (var(a) = 1/2 + 0.05^2/4 for this Gaussian)."""
    from ctcdyn.inference import run_nuts

    batch = {"shift": jnp.zeros((1,))}
    out = {}
    for mass in ("diagonal", "blocks"):
        settings = NUTSSettings(chains=2, warmup=400, samples=400, mass_matrix=mass)
        result = run_nuts(_Ridge(), batch, jax.random.key(3), settings)
        out[mass] = result
        a, b = result.samples["a"][0].ravel(), result.samples["b"][0].ravel()
        assert abs(np.var(a) - 0.5) < 0.15, mass
        assert np.corrcoef(a, b)[0, 1] < -0.99, mass
    steps = {mass: float(np.mean(r.stats["n_steps"])) for mass, r in out.items()}
    assert steps["blocks"] < 0.3 * steps["diagonal"], steps


@pytest.fixture(scope="module")
def cohort_run(tmp_path_factory, cohort_dir):
    out = tmp_path_factory.mktemp("fits") / "RUN"
    files = _files(cohort_dir)
    result = runner.invoke(
        app,
        [
            "fit",
            "--model",
            "mbc",
            "--draws",
            str(files["draws"]),
            "--patients",
            str(files["patients"]),
            "--treatments",
            str(files["treatments"]),
            "--out",
            str(out),
            "--chains",
            "2",
            "--warmup",
            "20",
            "--samples",
            "20",
        ],
    )
    assert result.exit_code == 0, result.output
    return out, result.output


def test_fit_writes_a_complete_run(cohort_run, cohort_dir):
    out, output = cohort_run
    run = Run.open(out)
    manifest = run.manifest
    assert manifest["mode"] == "cohort" and manifest["model"] == "mbc"
    assert manifest["sampler"]["chains"] == 2 and manifest["seed"] == 0
    assert set(manifest["data"]) == {"draws", "patients", "treatments"}
    # 20 draws per chain cannot reach ESS 400: the gate fails, and says so
    assert manifest["status"] == "failed_gate"
    assert "failed the diagnostics gate" in output
    tree = run.read_posterior()
    assert {"posterior", "sample_stats", "log_likelihood", "posterior_predictive"} <= set(
        tree.children
    )
    assert {"observed_data", "prior"} <= set(tree.children)
    post = tree["posterior"]
    assert post["growth_rate"].dims == ("chain", "draw", "patient")
    assert post["growth_rate_median"].dims == ("chain", "draw")
    ll = tree["log_likelihood"]["ctc"].values
    observed = tree["observed_data"]["ctc"].values
    assert np.all(np.isfinite(ll[..., ~np.isnan(observed)]))
    # summary rows: population names and name[patient_id], matching truth.csv's columns
    summary = run.read_summary()
    truth = pd.read_csv(cohort_dir / "truth.csv")
    for name in ("growth_rate", "kill_rate", "shedding_single_per_division"):
        for pid in truth["patient_id"]:
            assert f"{name}[{pid}]" in set(summary["parameter"])
    assert {"half_life_single", "growth_rate_median", "growth_rate_sd"} <= set(summary["parameter"])
    assert list(summary.columns[:9]) == [
        "parameter",
        "mean",
        "sd",
        "q5",
        "q50",
        "q95",
        "r_hat",
        "ess_bulk",
        "ess_tail",
    ]


def test_diagnose_exits_nonzero_on_a_failed_gate(cohort_run):
    out, _ = cohort_run
    result = runner.invoke(app, ["diagnose", str(out)])
    assert result.exit_code == 1
    assert "gate failed" in result.output
    assert "prior-dominated" in result.output


def test_fit_refuses_to_overwrite_and_bad_input_writes_nothing(cohort_run, cohort_dir, tmp_path):
    out, _ = cohort_run
    files = _files(cohort_dir)
    args = ["fit", "--draws", str(files["draws"]), "--patients", str(files["patients"])]
    again = runner.invoke(app, [*args, "--out", str(out)])
    assert again.exit_code == 2
    bad = tmp_path / "draws.csv"
    pd.read_csv(files["draws"]).assign(volume_ml=-1.0).to_csv(bad, index=False)
    target = tmp_path / "never"
    result = runner.invoke(
        app,
        ["fit", "--draws", str(bad), "--patients", str(files["patients"]), "--out", str(target)],
    )
    assert result.exit_code == 2
    assert "volume_ml" in result.output
    assert not target.exists()


def test_per_patient_run_resumes_without_redoing_chunks(tmp_path, cohort_dir, mbc, monkeypatch):
    files = _files(cohort_dir)
    pop = Population.from_spec(mbc)
    kwargs = dict(population=pop, nuts=TINY, chunk_size=2, seed=3)
    whole = fit_run(mbc, files, tmp_path / "whole", **kwargs)

    written = []
    original = Run.write_chunk

    def crash_after_first(self, chunk_id, tree):
        if written:
            raise KeyboardInterrupt("killed")
        written.append(chunk_id)
        return original(self, chunk_id, tree)

    monkeypatch.setattr(Run, "write_chunk", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        fit_run(mbc, files, tmp_path / "cut", **kwargs)
    assert Run.open(tmp_path / "cut").finished_chunks() == {0}
    monkeypatch.setattr(Run, "write_chunk", original)

    redone = []
    monkeypatch.setattr(
        "ctcdyn.inference._job.fit",
        _recording(redone, __import__("ctcdyn.inference._fit", fromlist=["fit"]).fit),
    )
    resumed = fit_run(mbc, files, tmp_path / "cut", resume=True, **kwargs)
    assert len(redone) == 1  # only the unfinished chunk
    a = whole.read_posterior()["posterior"]
    b = resumed.read_posterior()["posterior"]
    assert (
        list(a["patient"].values) == list(b["patient"].values) == [f"P{i:04d}" for i in range(1, 5)]
    )
    np.testing.assert_array_equal(a["growth_rate"].values, b["growth_rate"].values)
    manifest = json.loads((tmp_path / "cut" / "manifest.json").read_text())
    assert manifest["mode"] == "per_patient" and manifest["chunks"] == [0, 1]


def _recording(log, fn):
    def wrapper(*args, **kwargs):
        log.append(1)
        return fn(*args, **kwargs)

    return wrapper


def test_svi_fit_is_recorded_as_approximate(tmp_path, cohort_dir, mbc):
    from ctcdyn.inference import SVISettings

    run = fit_run(
        mbc,
        _files(cohort_dir),
        tmp_path / "svi",
        method="svi",
        svi=SVISettings(steps=200, draws=50),
    )
    assert run.manifest["status"] == "approximate"
    post = run.read_posterior()["posterior"]
    assert post.sizes["chain"] == 1 and post.sizes["draw"] == 50
    assert post["kill_rate"].dims == ("chain", "draw", "patient")
    assert np.all(np.isfinite(post["kill_rate"].values))
    result = runner.invoke(app, ["diagnose", str(tmp_path / "svi")])
    assert result.exit_code == 1 and "approximate" in result.output
