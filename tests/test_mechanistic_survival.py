"""Survival predicted from counts and recorded deaths is calibrated (slow).

200 virtual ``mbc`` patients are simulated to two years; the data are cut at day 240, as if
analysed then: every blood draw (to about day 200) and each patient's survival to the cut.
Each patient is fitted on their own with the population fixed at the one that simulated them
(``Population.from_spec``: the spec's typical population) and ``--outcomes os``, so a patient's
posterior predictive probability p_i of being alive at day 240 + d, given alive at 240, is
exactly calibrated if the dynamics, the endpoint model, the likelihood, the sampler and the
prediction are right: E[y_i | data] = p_i, with y_i the simulated outcome after the cut,
independent between patients. The check: sum(y) - sum(p) within 3 SD, sqrt(sum p(1 - p)), at
three horizons; and the same posterior with a lethal burden 5x too high must fail it.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

import ctcdyn
from ctcdyn.inference import NUTSSettings, Population, fit_run
from ctcdyn.report import open_fitted
from ctcdyn.report._survival import survival_draws

CUT = 240.0
HORIZONS = (120.0, 240.0, 480.0)


@pytest.mark.slow
def test_survival_predicted_from_counts_and_deaths_is_calibrated(tmp_path):
    jax.config.update("jax_enable_x64", True)
    spec = ctcdyn.load_spec("mbc")
    cohort = ctcdyn.simulate_cohort(spec, 200, jax.random.key(2030))
    paths = cohort.write(tmp_path / "cohort")
    full = cohort.patients.set_index("patient_id")
    assert cohort.draws["time"].max() < CUT
    died = (full["os_event"] == 1) & (full["os_time"] <= CUT)
    cut = full.assign(
        os_time=np.where(died, full["os_time"], CUT), os_event=died.astype(int)
    ).reset_index()[["patient_id", "weight_kg", "os_time", "os_event"]]
    cut.to_csv(paths["patients"], index=False)

    run = fit_run(
        spec,
        paths,
        tmp_path / "fit",
        seed=5,
        nuts=NUTSSettings(chains=2, warmup=300, samples=500, target_accept=0.9),
        population=Population.from_spec(spec),
        chunk_size=200,
        outcomes=("os",),
    )
    fitted = open_fitted(run.path)
    divergent = int(fitted.tree["sample_stats"]["diverging"].sum())
    assert divergent <= 0.01 * 200 * 2 * 500, divergent

    alive = cut.loc[cut["os_event"] == 0, "patient_id"].astype(str).tolist()
    assert len(alive) > 100

    def predicted(endpoints=None) -> np.ndarray:
        rows = [
            survival_draws(
                fitted,
                pid,
                jax.random.key(0),
                endpoint="os",
                times=CUT + np.asarray(HORIZONS),
                alive_to=CUT,
                n_samples=250,
                endpoints=endpoints,
            ).mean(axis=0)
            for pid in alive
        ]
        return np.array(rows)  # (patients, horizons)

    observed = np.array([[full.loc[p, "os_time"] > CUT + d for d in HORIZONS] for p in alive])
    assert (full.loc[alive, "os_time"] >= CUT + HORIZONS[-1]).sum() > 0

    def z_scores(p: np.ndarray) -> np.ndarray:
        return (observed.sum(0) - p.sum(0)) / np.sqrt((p * (1 - p)).sum(0))

    p = predicted()
    z = z_scores(p)
    print("expected alive", p.sum(0), "observed", observed.sum(0), "z", z)
    assert np.all(np.abs(z) < 3), z
    # and it discriminates: the patients predicted to live longer do
    order = np.argsort(p[:, 1])
    low, high = observed[order[: len(order) // 2], 1], observed[order[len(order) // 2 :], 1]
    assert high.mean() - low.mean() > 0.2

    wrong = dataclasses.replace(
        fitted.model.endpoints, lethal_burden=5 * fitted.model.endpoints.lethal_burden
    )
    z_wrong = z_scores(predicted(wrong))
    print("lethal burden x5: z", z_wrong)
    assert np.any(np.abs(z_wrong) >= 3), z_wrong  # the same criterion fails
