"""Summary table, vectorised R-hat/ESS (against arviz-stats), the diagnostics gate and
posterior contraction, on small synthetic DataTrees."""

import json
import warnings

import numpy as np
import pytest
import xarray as xr
from arviz_stats.base import array_stats

from ctcdyn.diagnostics import MAX_LISTED, Gate, bfmi, check, contraction
from ctcdyn.store import SUMMARY_COLUMNS, summarize
from ctcdyn.store._summary import ess_bulk, ess_tail, rank_rhat

N_CHAIN, N_DRAW = 4, 1000


def _ids(n: int) -> list[str]:
    return [f"P{i + 1:04d}" for i in range(n)]


def _tree(
    seed: int = 0,
    *,
    n_patients: int = 3,
    n_chain: int = N_CHAIN,
    n_draw: int = N_DRAW,
    per_patient: bool = False,
    energy: str = "iid",
    prior: bool = False,
) -> xr.DataTree:
    """A well-mixed fit: iid normal draws, iid energy, no divergences."""
    rng = np.random.default_rng(seed)
    ids = _ids(n_patients)
    sample = ("chain", "draw")
    coords = {"chain": np.arange(n_chain), "draw": np.arange(n_draw), "patient": ids}
    stat_dims = (*sample, "patient") if per_patient else sample
    stat_shape = (n_chain, n_draw, n_patients) if per_patient else (n_chain, n_draw)
    e = rng.normal(size=stat_shape)
    if energy == "random_walk":  # strongly autocorrelated: E-BFMI far below 0.3
        e = np.cumsum(e, axis=1)
    post = {
        "growth_rate": ((*sample, "patient"), rng.normal(1.0, 0.2, (n_chain, n_draw, n_patients)))
    }
    if not per_patient:
        post["growth_rate_median"] = (sample, rng.normal(1.0, 0.05, (n_chain, n_draw)))
        post["half_life_single"] = (sample, rng.lognormal(0.0, 0.1, (n_chain, n_draw)))
    groups = {
        "posterior": xr.Dataset(post, coords=coords),
        "sample_stats": xr.Dataset(
            {
                "diverging": (stat_dims, np.zeros(stat_shape, bool)),
                "energy": (stat_dims, e),
                "n_steps": (stat_dims, np.full(stat_shape, 7)),
            },
            coords={k: v for k, v in coords.items() if k in stat_dims},
        ),
    }
    if prior:
        k = 2000
        groups["prior"] = xr.Dataset(
            {
                "growth_rate": (
                    (*sample, "patient"),
                    rng.normal(1.0, 2.0, (1, k, n_patients)),
                ),
                "half_life_single": (sample, rng.lognormal(0.0, 1.0, (1, k))),
            },
            coords={"chain": [0], "draw": np.arange(k), "patient": ids},
        )
    tree = xr.DataTree.from_dict(groups)
    tree.attrs["mode"] = "per_patient" if per_patient else "cohort"
    return tree


def _with(tree: xr.DataTree, group: str, **variables: xr.DataArray) -> xr.DataTree:
    tree = tree.copy()
    tree[group] = tree[group].to_dataset().assign(variables)
    return tree


# --- summary -------------------------------------------------------------------------------


def test_summary_names_and_columns():
    s = summarize(_tree())
    assert list(s.columns) == list(SUMMARY_COLUMNS)
    assert list(s["parameter"]) == [
        "growth_rate[P0001]",
        "growth_rate[P0002]",
        "growth_rate[P0003]",
        "growth_rate_median",
        "half_life_single",
    ]
    row = s.set_index("parameter").loc["growth_rate[P0002]"]
    assert row["mean"] == pytest.approx(1.0, abs=0.02)
    assert row["sd"] == pytest.approx(0.2, rel=0.05)
    assert row["q5"] < row["q50"] < row["q95"]
    assert row["r_hat"] < 1.01 and row["ess_bulk"] > 2000 and row["ess_tail"] > 2000


def test_summary_with_prior_adds_prior_sd_and_contraction():
    s = summarize(_tree(prior=True)).set_index("parameter")
    assert list(s.columns[-2:]) == ["prior_sd", "contraction"]
    assert s.loc["growth_rate[P0001]", "prior_sd"] == pytest.approx(2.0, rel=0.1)
    assert s.loc["growth_rate[P0001]", "contraction"] == pytest.approx(0.99, abs=0.005)
    assert np.isnan(s.loc["growth_rate_median", "contraction"])  # not in the prior


@pytest.mark.parametrize(("n_chain", "n_draw"), [(4, 200), (1, 50), (2, 7), (3, 4), (2, 3)])
@pytest.mark.parametrize("phi", [0.0, 0.9, -0.6])
def test_vectorised_diagnostics_equal_arviz_stats(n_chain, n_draw, phi):
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(8, n_chain, n_draw))
    x = np.empty_like(noise)
    x[..., 0] = noise[..., 0]
    for t in range(1, n_draw):  # AR(1) chains
        x[..., t] = phi * x[..., t - 1] + noise[..., t]
    x[1] += 3.0 * np.arange(n_chain)[:, None]  # chains with different means
    x[2] = 1.0  # constant
    x[3, 0, 0] = np.nan
    x[4] = np.round(x[4])  # ties
    x[5] = rng.poisson(0.2, size=(n_chain, n_draw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # arviz-stats on constant draws
        expected = (
            array_stats.rhat(x),
            array_stats.ess(x, method="bulk"),
            array_stats.ess(x, method="tail", prob=(0.05, 0.95)),
        )
    for got, want in zip((rank_rhat(x), ess_bulk(x), ess_tail(x)), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-9, equal_nan=True)


# --- the gate --------------------------------------------------------------------------------


def test_well_mixed_fit_passes():
    result = check(_tree())
    assert result.passed, result.failures
    assert result.failures == []
    assert result.divergences == 0
    assert result.worst_r_hat < 1.01
    assert min(result.min_ess_bulk, result.min_ess_tail) > 2000
    assert 1.5 < result.min_bfmi < 2.5  # iid energy: E-BFMI ~ 2


def test_gate_accepts_a_precomputed_summary():
    tree = _tree()
    assert check(tree, summarize(tree)) == check(tree)


def test_shifted_chain_fails_r_hat_naming_the_parameter():
    tree = _tree()
    gr = tree["posterior"]["growth_rate"].copy()
    gr.loc[{"chain": 0, "patient": "P0002"}] += 3 * 0.2  # one chain 3 sd off
    result = check(_with(tree, "posterior", growth_rate=gr))
    assert not result.passed
    assert result.worst_r_hat > 1.01
    r_hat_lines = [f for f in result.failures if f.startswith("r_hat")]
    assert len(r_hat_lines) == 1
    assert r_hat_lines[0].startswith("r_hat 1.")
    assert r_hat_lines[0].endswith("> 1.01 for growth_rate[P0002]")


def test_many_failures_are_counted_and_the_worst_listed():
    tree = _tree(n_patients=200, n_draw=200)
    gr = tree["posterior"]["growth_rate"].copy()
    gr[0] += np.linspace(0.1, 0.3, 200)  # chain 0 off by 0.5 to 1.5 sd
    result = check(_with(tree, "posterior", growth_rate=gr))
    r_hat_lines = [f for f in result.failures if f.startswith("r_hat")]
    assert r_hat_lines[0].startswith("r_hat > 1.01 or NaN for 200 of 202 parameters")
    assert len(r_hat_lines) == 1 + MAX_LISTED
    worst = [float(line.split()[1]) for line in r_hat_lines[1:]]
    assert worst == sorted(worst, reverse=True)
    assert worst[0] == pytest.approx(result.worst_r_hat, abs=1e-3)


def test_divergences_fail():
    tree = _tree()
    div = tree["sample_stats"]["diverging"].copy()
    div[1, [5, 50, 500]] = True
    result = check(_with(tree, "sample_stats", diverging=div))
    assert not result.passed
    assert result.divergences == 3
    assert "3 divergent transitions > 0" in result.failures


def test_per_patient_divergences_name_the_patients():
    tree = _tree(per_patient=True)
    div = tree["sample_stats"]["diverging"].copy()
    div.loc[{"patient": "P0003", "chain": 2}] = True
    div.loc[{"patient": "P0001", "chain": 0, "draw": 3}] = True
    result = check(_with(tree, "sample_stats", diverging=div))
    assert result.divergences == N_DRAW + 1
    assert f"{N_DRAW + 1} divergent transitions > 0 in 2 patients (P0003: {N_DRAW}, P0001: 1)" in (
        result.failures
    )


@pytest.mark.parametrize("per_patient", [False, True])
def test_low_e_bfmi_fails_and_iid_energy_passes(per_patient):
    assert check(_tree(per_patient=per_patient)).passed
    result = check(_tree(per_patient=per_patient, energy="random_walk"))
    assert not result.passed
    assert result.min_bfmi < 0.3
    lines = [f for f in result.failures if f.startswith("E-BFMI")]
    assert lines and "< 0.3 for chain" in lines[-1]
    if per_patient:
        assert "of patient P" in lines[-1]


def test_bfmi_is_vectorised_and_equals_arviz_stats():
    energy = _tree(per_patient=True, energy="random_walk")["sample_stats"]["energy"]
    got = bfmi(energy)
    assert got.dims == ("chain", "patient")
    want = array_stats.bfmi(energy.transpose("patient", "chain", "draw").values)
    np.testing.assert_allclose(got.transpose("patient", "chain").values, want, rtol=1e-12)


def test_single_chain_r_hat_is_nan_and_fails():
    s = summarize(_tree(n_chain=1))
    assert s["r_hat"].isna().all()
    assert (s["ess_bulk"] > 400).all()
    result = check(_tree(n_chain=1))
    assert not result.passed
    assert np.isnan(result.worst_r_hat)
    assert result.failures[0].startswith("r_hat is NaN for growth_rate[P0001] (one chain")


def test_nan_draw_gives_nan_diagnostics_and_fails():
    tree = _tree()
    gr = tree["posterior"]["growth_rate"].copy()
    gr.loc[{"chain": 1, "draw": 7, "patient": "P0003"}] = np.nan
    tree = _with(tree, "posterior", growth_rate=gr)
    s = summarize(tree).set_index("parameter")
    assert s.loc["growth_rate[P0003]", ["r_hat", "ess_bulk", "ess_tail"]].isna().all()
    assert s.loc["growth_rate[P0002]", ["r_hat", "ess_bulk", "ess_tail"]].notna().all()
    result = check(tree)
    assert not result.passed
    assert np.isnan(result.min_ess_bulk)
    assert {f.split(" is NaN")[0] for f in result.failures} == {"r_hat", "ess_bulk", "ess_tail"}


def test_missing_sample_stats_fail():
    tree = _tree()
    del tree["sample_stats"]
    result = check(tree)
    assert not result.passed
    assert result.divergences == -1
    assert any("'diverging'" in f for f in result.failures)
    assert any("'energy'" in f for f in result.failures)


def test_stricter_gate_and_json_ready_dict():
    tree = _tree(n_chain=1)
    result = check(tree, gate=Gate(min_ess_bulk=1e9))
    d = result.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["worst_r_hat"] is None  # NaN -> None
    assert d["gate"]["min_ess_bulk"] == 1e9
    assert d["passed"] is False
    with pytest.raises(ValueError, match="max_r_hat"):
        Gate(max_r_hat=0.9)


# --- contraction ----------------------------------------------------------------------------


def test_contraction_zero_when_posterior_is_the_prior():
    tree = _tree(prior=True)
    prior = tree["prior"].to_dataset()
    tree["posterior"] = prior.assign(growth_rate_median=prior["half_life_single"])
    c = contraction(tree).set_index("parameter")
    assert list(c.index) == ["growth_rate", "half_life_single"]  # only those with a prior
    assert c.loc["growth_rate", "contraction"] == pytest.approx(0.0, abs=1e-12)
    assert c.loc["half_life_single", "contraction"] == pytest.approx(0.0, abs=1e-12)
    assert c["prior_dominated"].all() and not c["informed"].any()


def test_contraction_near_one_when_posterior_sd_is_a_tenth_of_the_prior():
    c = contraction(_tree(prior=True)).set_index("parameter")
    # growth_rate: natural scale (prior draws can be negative), sd 0.2 vs 2
    assert c.loc["growth_rate", "scale"] == "natural"
    assert c.loc["growth_rate", "n"] == 3
    assert c.loc["growth_rate", "contraction"] == pytest.approx(0.99, abs=0.005)
    assert c.loc["growth_rate", "posterior_sd"] == pytest.approx(0.2, rel=0.05)
    # half_life_single: positive, so log scale: log-sd 0.1 vs 1
    assert c.loc["half_life_single", "scale"] == "log"
    assert c.loc["half_life_single", "prior_sd"] == pytest.approx(1.0, rel=0.1)
    assert c.loc["half_life_single", "contraction"] == pytest.approx(0.99, abs=0.005)
    assert c["informed"].all()


def test_contraction_needs_a_prior():
    with pytest.raises(ValueError, match="prior group"):
        contraction(_tree())
