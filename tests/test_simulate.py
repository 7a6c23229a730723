"""Virtual cohorts: formats of DESIGN.md section 9, determinism, and counts that agree with the
dynamics and observation model recomputed independently from truth.csv."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from ctcdyn import solve
from ctcdyn.observation import expected_counts, get_assay
from ctcdyn.simulate import simulate_cohort
from ctcdyn.simulate._cohort import _schedule
from ctcdyn.specs import build_model, load_spec, treatments_from_table

N = 40


@pytest.fixture(scope="module")
def cohort(mbc):
    return simulate_cohort(mbc, N, jax.random.key(7))


def test_same_key_same_cohort_other_key_other_cohort(mbc, cohort):
    again = simulate_cohort(mbc, N, jax.random.key(7))
    for name in ("draws", "patients", "treatments", "truth"):
        pd.testing.assert_frame_equal(getattr(cohort, name), getattr(again, name))
    other = simulate_cohort(mbc, N, jax.random.key(8))
    assert not other.truth.equals(cohort.truth)


def test_tables_have_the_documented_columns(cohort):
    assert list(cohort.draws.columns) == [
        "patient_id",
        "time",
        "clock_hour",
        "volume_ml",
        "assay",
        "ctc",
        "clusters",
    ]
    assert {"patient_id", "weight_kg", "pfs_time", "pfs_event", "os_time", "os_event"} <= set(
        cohort.patients.columns
    )
    assert {"patient_id", "kind", "start", "end", "dose"} <= set(cohort.treatments.columns)
    assert cohort.patients["patient_id"].is_unique
    assert set(cohort.draws["patient_id"]) <= set(cohort.patients["patient_id"])


def test_draw_times_carry_their_clock_hour(cohort):
    d = cohort.draws
    np.testing.assert_allclose(24.0 * (d["time"] % 1.0), d["clock_hour"], atol=1e-9)
    assert (d.groupby("patient_id")["time"].apply(lambda t: t.is_monotonic_increasing)).all()
    assert (d["ctc"] >= 0).all() and (d["clusters"] >= 0).all()
    assert pd.api.types.is_integer_dtype(d["ctc"])


def test_truth_names_every_sampled_parameter(mbc, cohort):
    assert list(cohort.truth.columns) == ["patient_id", *mbc.sampled]
    for name in mbc.sampled:
        column = cohort.truth[name]
        if mbc.parameters[name].level == "patient":
            assert column.nunique() == N, name
        else:
            assert column.nunique() == 1, name


def test_endpoints_are_consistent(cohort):
    p = cohort.patients
    assert set(p["pfs_event"]) <= {0, 1} and set(p["os_event"]) <= {0, 1}
    assert (p["pfs_time"] <= p["os_time"]).all()
    last_draw = cohort.draws.groupby("patient_id")["time"].max()
    assert (last_draw <= p.set_index("patient_id")["os_time"].loc[last_draw.index]).all()


def test_counts_agree_with_the_model_rebuilt_from_truth(mbc, cohort):
    """Rebuild every patient from truth.csv and treatments.csv, solve, and compare the summed
    counts with the summed expected counts: a z-score from the negative-binomial variance."""
    truth = cohort.truth
    ids = list(truth["patient_id"])
    values = {name: jnp.asarray(truth[name].to_numpy()) for name in mbc.sampled}
    model = build_model(mbc, values, treatments_from_table(mbc, cohort.treatments, ids, values))
    recovery = float(truth["recovery"].iloc[0])
    phi = float(truth["dispersion"].iloc[0])
    weight = cohort.patients.set_index("patient_id")["weight_kg"]
    assay = get_assay("cellsearch")
    observed, mean, var = 0.0, 0.0, 0.0
    for i, pid in enumerate(ids):
        rows = cohort.draws[cohort.draws["patient_id"] == pid]
        one = jax.tree.map(lambda x, i=i: x[i] if jnp.ndim(x) else x, model)
        traj = solve(one, jnp.asarray(rows["time"].to_numpy()))
        mu = expected_counts(
            traj.singles,
            traj.clusters,
            assay=dataclasses.replace(assay, recovery=recovery),
            volume_ml=7.5,
            blood_volume_ml=70.0 * weight[pid],
        ).singles
        observed += rows["ctc"].sum()
        mean += float(jnp.sum(mu))
        var += float(jnp.sum(mu + mu**2 / phi))
    z = (observed - mean) / np.sqrt(var)
    assert abs(z) < 4.0, f"observed {observed}, expected {mean:.1f} (z = {z:.2f})"


def test_adjuvant_cohort_has_relapse_surgery_and_a_bounded_schedule():
    spec = load_spec("adjuvant")
    cohort = simulate_cohort(spec, 12, jax.random.key(3))
    p = cohort.patients
    assert {"relapse_time", "relapse_event"} <= set(p.columns)
    assert (cohort.treatments["kind"] == "surgery").sum() == 12
    assert set(p["relapse_event"]) <= {0, 1}
    assert (p.loc[p["relapse_event"] == 0, "relapse_time"] == 1825.0).all()
    # The jittered schedule runs past follow-up (day 1820 +- 7); no draw may.
    key_schedule = jax.random.split(jax.random.key(3), 5)[1]
    times, _ = _schedule(spec.scenario(), 12, key_schedule)
    assert times.max() > 1825.0
    assert cohort.draws["time"].max() <= 1825.0


def test_bad_arguments():
    spec = load_spec("mbc")
    with pytest.raises(ValueError, match="n_patients must be >= 1"):
        simulate_cohort(spec, 0, jax.random.key(0))
    with pytest.raises(ValueError, match="no scenario 'nope'; known scenarios: default"):
        simulate_cohort(spec, 2, jax.random.key(0), scenario="nope")
