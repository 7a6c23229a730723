"""Relapse after surgery as the first metastasis reaching a detectable size.

The law of :class:`ctcdyn.observation.RelapseModel` is checked against exact simulations of
the linear birth-death process (each lineage's embedded jump chain with exponential waiting
times, no formula of the law inside), against closed-form integrals, against the simulator
(``ctcdyn.simulate._endpoints``), and through the likelihood and the CLI fit.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.special import exp1

import ctcdyn
from ctcdyn.data import InputError, read_tables
from ctcdyn.dynamics import FastClearance, TreatmentKind, Treatments, solve
from ctcdyn.inference import CountModel, fit_data, fit_engine
from ctcdyn.inference._outcomes import RELAPSE_GRID_POINTS, outcome_arrays
from ctcdyn.observation import EndpointModel, RelapseModel, kill_integral
from ctcdyn.simulate._endpoints import endpoint_table
from ctcdyn.specs import build_model, treatments_from_table

jax.config.update("jax_enable_x64", True)


@pytest.fixture(scope="module")
def spec():
    return ctcdyn.load_spec("adjuvant")


# -- exact simulation of lineages -------------------------------------------------------------


def _first_passage(rng, n, birth, death, size, horizon, steps=512):
    """Exact first-passage times of ``n`` linear birth-death lineages from one cell to ``size``
    cells (inf: extinct, or not by ``horizon``): the embedded jump chain (a step up with
    probability b / (b + d)) with exponential waiting times of rate (b + d) Z, ``steps`` events
    of every live lineage at a time."""
    total = birth + death
    z, t, tau = np.ones(n, np.int64), np.zeros(n), np.full(n, np.inf)
    live = np.arange(n)
    while live.size:
        up = rng.random((live.size, steps)) < birth / total
        path = z[live, None] + np.cumsum(np.where(up, 1, -1), axis=1)
        before = np.concatenate([z[live, None], path[:, :-1]], axis=1)
        wait = rng.exponential(size=(live.size, steps)) / (total * np.maximum(before, 1))
        clock = t[live, None] + np.cumsum(wait, axis=1)
        stop = (path <= 0) | (path >= size) | (clock > horizon)
        ends = stop.any(axis=1)
        k = np.argmax(stop, axis=1)
        rows = np.arange(live.size)
        reached = ends & (path[rows, k] >= size) & (clock[rows, k] <= horizon)
        tau[live[reached]] = clock[rows, k][reached]
        z[live], t[live] = path[:, -1], clock[:, -1]
        live = live[~ends]
    return tau


def _lesion_law(ages, growth, death, size):
    """G at ``ages`` from RelapseModel: one lesion founded at 0 (M_0 = 1), no seeding."""
    times = jnp.asarray(np.concatenate([[0.0], ages]))
    lam = RelapseModel(float(size), 0.0).expected_lesions(
        times, growth, death, 1.0, jnp.zeros(times.size)
    )
    return np.asarray(lam)[1:]


@pytest.mark.parametrize(
    ("birth", "death", "size", "n"), [(0.1152, 0.1, 1_000, 30_000), (0.4, 0.1, 10_000, 10_000)]
)
def test_growth_time_law_matches_exact_lineages(birth, death, size, n):
    """P(a lesion founded at 0 has reached X cells by age a), from exact lineages, against G at
    ages around the median detection age; the adjuvant spec's turnover (most seeds die) and a
    fast clone. Fixed seed, 4 binomial SE."""
    g = birth - death
    centre = math.log(size * g / birth) / g
    ages = centre + np.array([-1.5, -0.5, 0.0, 0.5, 1.5, 3.0]) / g
    tau = _first_passage(np.random.default_rng(11), n, birth, death, size, ages.max())
    empirical = (tau[:, None] <= ages[None, :]).mean(axis=0)
    law = _lesion_law(ages, g, death, size)
    se = np.sqrt(law * (1 - law) / n)
    assert np.all(np.abs(empirical - law) < 4 * se), (empirical, law)
    # the Gumbel form (g/b) exp(-(X g / b) e^{-g a}) is the same law but for the finite-age
    # survival g / (b - d e^{-g a}), which RelapseModel keeps
    gumbel = g / birth * np.exp(-size * g / birth * np.exp(-g * ages))
    np.testing.assert_allclose(law, gumbel, atol=2e-3 * g / birth)


# -- limit cases of Lambda -------------------------------------------------------------------


def test_expected_lesions_in_limit_cases():
    """M_0 only: M_0 G(t) in closed form. Constant seeding c: c/b (E1(y(t)) - E1(X g/b)), y(t)
    = (X g/b) e^{-g t}, whose trapezoid rule on the fit's grid (RELAPSE_GRID_POINTS over 5 years)
    is within 0.003 of S_R = e^{-Lambda} for g up to 0.03/day. A constant kill kappa from day 0
    is growth g - kappa and death d + kappa."""
    d, size, relapse = 0.1, 1e9, RelapseModel(1e9, 0.0)
    t = np.linspace(0.0, 1825.0, RELAPSE_GRID_POINTS)
    for g in (0.0152, 0.03):
        b = g + d
        only = relapse.expected_lesions(jnp.asarray(t), g, d, 30.0, jnp.zeros(t.size))
        closed = 30.0 * g / b * np.exp(-size * g / b * np.exp(-g * t))
        np.testing.assert_allclose(only, closed, rtol=1e-5, atol=1e-6 * closed.max())

        c = 0.05  # lesions per day, large enough that S_R spans (0, 1)
        seeded = np.asarray(
            relapse.expected_lesions(jnp.asarray(t), g, d, 0.0, jnp.full(t.size, c))
        )
        exact = c / b * (exp1(size * g / b * np.exp(-g * t)) - exp1(size * g / b))
        assert np.max(np.abs(np.exp(-seeded) - np.exp(-exact))) < 3e-3
        assert np.exp(-exact[-1]) < 0.5  # the comparison covers a falling S_R

    g, kappa = 0.03, 0.01
    killed = Treatments(
        kind=jnp.array([int(TreatmentKind.CYTOTOXIC)]),
        start=jnp.array([0.0]),
        end=jnp.array([1e4]),
        effect=jnp.array([kappa]),
        resistance=jnp.array([0.0]),
        dose_interval=jnp.array([0.0]),
        dose_hour=jnp.array([0.0]),
        drug_half_life=jnp.array([1.0]),
    )
    k = kill_integral(killed, jnp.asarray(t))
    np.testing.assert_allclose(k, kappa * t, rtol=1e-12)
    under_kill = relapse.expected_lesions(jnp.asarray(t), g, d, 30.0, jnp.zeros(t.size), k)
    equivalent = relapse.expected_lesions(
        jnp.asarray(t), g - kappa, d + kappa, 30.0, jnp.zeros(t.size)
    )
    np.testing.assert_allclose(under_kill, equivalent, rtol=1e-9, atol=1e-300)


# -- the whole process -------------------------------------------------------------------------


def test_relapse_free_survival_matches_the_whole_process():
    """Patients with Poisson(M_0) lesions at 0 and lesions seeded at n'(s) = c e^{l s}, each an
    exact lineage; relapse is the first to reach X. The empirical S_R at several times within
    4 binomial SE of exp(-Lambda); without the seeded lesions the formula misses (the check
    can fail)."""
    birth, death, size = 0.3, 0.1, 1_000
    g = birth - death
    m0, c, rate = 2.0, 0.05, 0.05
    horizon, last_seed = 50.0, 40.0  # a seed after day 40 cannot reach 1000 cells by day 50
    n = 2_000
    rng = np.random.default_rng(5)
    at_zero = rng.poisson(m0, n)
    mass = c * math.expm1(rate * last_seed) / rate
    seeded = rng.poisson(mass, n)
    founded = np.log1p(rng.random(seeded.sum()) * math.expm1(rate * last_seed)) / rate
    owner = np.concatenate([np.repeat(np.arange(n), at_zero), np.repeat(np.arange(n), seeded)])
    start = np.concatenate([np.zeros(at_zero.sum()), founded])
    tau = _first_passage(rng, owner.size, birth, death, size, horizon)
    relapse = np.full(n, np.inf)
    np.minimum.at(relapse, owner, start + tau)

    grid = np.linspace(0.0, horizon, 501)
    law = RelapseModel(float(size), 0.0)
    lam = law.expected_lesions(
        jnp.asarray(grid), g, death, m0, jnp.asarray(c * np.exp(rate * grid))
    )
    without = law.expected_lesions(jnp.asarray(grid), g, death, m0, jnp.zeros(grid.size))
    times = np.array([30.0, 35.0, 40.0, 45.0, 50.0])
    index = np.searchsorted(grid, times)
    s_law = np.exp(-np.asarray(lam)[index])
    s_emp = (relapse[:, None] > times[None, :]).mean(axis=0)
    se = np.sqrt(s_law * (1 - s_law) / n)
    assert np.all(np.abs(s_emp - s_law) < 4 * se), (s_emp, s_law)
    s_without = np.exp(-np.asarray(without)[index])
    assert np.max(np.abs(s_emp - s_without) / se) > 8


# -- the simulator -----------------------------------------------------------------------------


def _typical_model(spec, n):
    """n patients at the spec's typical values, surgery on day 0, and their burden per day."""
    ids = [f"P{i}" for i in range(n)]
    values = {name: jnp.asarray(spec.parameters[name].typical()) for name in spec.sampled}
    table = pd.DataFrame({"patient_id": ids, "kind": "surgery", "start": 0.0, "end": 0.0})
    model = build_model(spec, values, treatments_from_table(spec, table, ids, values))
    one = jax.tree.map(lambda x: x[0] if jnp.ndim(x) and x.shape[0] == n else x, model)
    grid = np.arange(0.0, spec.scenario().follow_up_days + 1.0)
    traj = solve(one, jnp.asarray(grid), FastClearance())
    return model, one, grid, np.asarray(traj.primary), np.asarray(traj.metastatic)


def test_simulated_relapse_follows_the_law(spec):
    """1,000 patients of one parameter set (the spec's typical values): the simulator's
    relapse days against S_R on a fine grid, every 100 days, within 4 binomial SE."""
    n = 1_000
    model, one, grid, primary, metastatic = _typical_model(spec, n)
    plan = spec.scenario()
    wide = lambda x: np.broadcast_to(x, (n, grid.size))  # noqa: E731
    table = endpoint_table(
        spec, plan, grid, wide(primary), wide(metastatic), key=jax.random.key(8), model=model
    )
    law = RelapseModel.from_spec(spec)
    log_s = law.log_survival_of(one, jnp.asarray(grid), jnp.asarray(primary + metastatic))
    days = np.arange(100.0, grid[-1] + 1.0, 100.0)
    s_law = np.exp(np.asarray(log_s)[days.astype(int)])
    relapsed = table["relapse_event"].to_numpy() == 1
    time = table["relapse_time"].to_numpy()
    s_emp = np.array([np.mean(~relapsed | (time > day)) for day in days])
    se = np.sqrt(s_law * (1 - s_law) / n) + 1e-12
    assert np.all(np.abs(s_emp - s_law) < 4 * se + 2e-3), (s_emp, s_law)  # 2e-3: quadrature
    assert s_law[-1] < 0.5 < s_law[0]
    assert (time[~relapsed] == grid[-1]).all() and (time[relapsed] >= 1).all()
    # without a key: every patient at her median relapse day
    median = endpoint_table(
        spec, plan, grid, wide(primary)[:2], wide(metastatic)[:2], model=_rows(model, 2, n)
    )
    day = median["relapse_time"].iloc[0]
    assert np.exp(log_s[int(day)]) <= 0.5 < np.exp(log_s[int(day) - 1])


def _rows(model, k, n):
    return jax.tree.map(lambda x: x[:k] if jnp.ndim(x) and x.shape[0] == n else x, model)


def test_simulate_cli_writes_relapse_from_the_law(tmp_path):
    """``ctcdyn simulate`` on the adjuvant spec: the relapse-free fraction each year against
    the cohort average of every patient's S_R (rebuilt from truth.csv), within 4 binomial SE."""
    from typer.testing import CliRunner

    from ctcdyn.cli import app

    out = tmp_path / "cohort"
    result = CliRunner().invoke(
        app, ["simulate", "--model", "adjuvant", "--out", str(out), "--patients", "300"]
    )
    assert result.exit_code == 0, result.output
    spec = ctcdyn.load_spec("adjuvant")
    tables = read_tables(out / "draws.csv", out / "patients.csv", out / "treatments.csv")
    data = fit_data(spec, tables, outcomes=("relapse",))
    truth = pd.read_csv(out / "truth.csv").set_index("patient_id").loc[list(data.patient_ids)]
    values = {name: jnp.asarray(truth[name].to_numpy()) for name in spec.sampled}
    grid = jnp.broadcast_to(jnp.arange(0.0, 1826.0, 5.0), (len(truth), 366))
    model = CountModel(spec, FastClearance())
    traj = model.trajectory(data.arrays, values, grid)
    ctc = build_model(spec, values, data.arrays.design.treatments(spec, values))
    ctc = jax.tree.map(lambda x: jnp.broadcast_to(x, (len(truth),)) if jnp.ndim(x) == 0 else x, ctc)
    law = RelapseModel.from_spec(spec)
    log_s = jax.vmap(law.log_survival_of)(ctc, grid, traj.primary + traj.metastatic)
    patients = tables.patients.set_index("patient_id").loc[list(data.patient_ids)]
    for year in (1, 2, 3, 4, 5):
        day = 365.0 * year
        s_law = float(jnp.mean(jnp.exp(log_s[:, int(day // 5)])))
        free = (patients["relapse_event"] == 0) | (patients["relapse_time"] > day)
        se = math.sqrt(s_law * (1 - s_law) / len(truth))
        assert abs(free.mean() - s_law) < 4 * se + 5e-3, (year, free.mean(), s_law)


# -- likelihood --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cohort(spec, tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    return ctcdyn.simulate_cohort(spec, 4, jax.random.key(21)).write(out)


def test_gradient_of_the_relapse_law_is_finite(spec):
    """d/d(g, M_0) of the relapse log-likelihood on the fit's grid is finite and non-zero, also
    for a relapse on day 3, which only the other-route rate makes possible."""
    from ctcdyn.inference._outcomes import relapse_log_likelihood

    law = RelapseModel.from_spec(spec)
    table = pd.DataFrame({"relapse_time": [3.0, 1825.0, 900.0], "relapse_event": [1, 0, 1]})
    arrays = outcome_arrays(table, ("relapse",))
    ts = jnp.asarray(arrays.relapse_times)

    def total(p):
        log_s = jax.vmap(
            lambda t: law.log_survival(
                t, p["g"], 0.1, p["m0"], 2e-9 * p["m0"] * jnp.exp(p["g"] * t)
            )
        )(ts)
        return jnp.sum(relapse_log_likelihood(arrays, log_s))

    value, grad = jax.value_and_grad(total)({"g": jnp.asarray(0.0152), "m0": jnp.asarray(30.0)})
    assert np.isfinite(value) and all(np.isfinite(g) and g != 0 for g in grad.values())


@pytest.mark.slow  # ~70 s on 2 shared cores: compiling gradients through the adjuvant ODE
def test_relapse_log_likelihood_and_its_gradient_are_finite(spec, cohort):
    """Per-patient gradient of the relapse log-likelihood (through the dynamics), also for a
    relapse on day 3, which only the other-route rate makes possible."""
    tables = read_tables(cohort["draws"], cohort["patients"], cohort["treatments"])
    early = tables.patients.assign(relapse_time=[3.0, 1825.0, 900.0, 1825.0])
    early = early.assign(relapse_event=[1, 0, 1, 0])
    values = {
        name: jnp.full(4, spec.parameters[name].typical())
        for name in ("metastatic_burden0", "metastatic_growth_rate")
    }
    rest = {n: jnp.asarray(spec.parameters[n].typical()) for n in spec.sampled if n not in values}
    data = fit_data(spec, dataclasses.replace(tables, patients=early), outcomes=("relapse",))
    model = CountModel(spec, fit_engine(spec, data.arrays.design), outcomes=("relapse",))
    total = _total_relapse_log_likelihood(model, data.arrays, rest)
    value, grad = jax.value_and_grad(total)(values)
    assert np.isfinite(value)
    for name, g in grad.items():
        assert np.all(np.isfinite(g)) and np.any(g != 0), name
    # day-3 relapse: log(S(2) - S(3)) ~ log(h_R), the other route
    ll = model.outcome_log_likelihood(data.arrays, {**rest, **values})["relapse"]
    h_r = RelapseModel.from_spec(spec).other_relapse_rate
    assert float(ll[0]) == pytest.approx(math.log(h_r), abs=0.05)


def _total_relapse_log_likelihood(model, arrays, rest):
    return lambda v: jnp.sum(model.outcome_log_likelihood(arrays, {**rest, **v})["relapse"])


def test_probabilities_of_every_possible_relapse_record_sum_to_one(spec):
    """Relapse on each day 1..400 or free at 400 (no scans), and relapse between scans or free
    at the last scan: the probabilities sum to 1 (no interval lost or counted twice)."""
    law = RelapseModel.from_spec(spec)
    grid = np.linspace(0.0, 400.0, 401)
    lam_growth, m0 = 0.08, 30.0  # fast enough that relapse is likely by day 360

    def total(table):
        arrays = outcome_arrays(table, ("relapse",))
        ts = jnp.asarray(arrays.relapse_times)
        log_s = jax.vmap(
            lambda t: law.log_survival(t, lam_growth, 0.1, m0, 1e-3 * jnp.exp(lam_growth * t))
        )(ts)
        from ctcdyn.inference._outcomes import relapse_log_likelihood

        return float(jnp.sum(jnp.exp(relapse_log_likelihood(arrays, log_s))))

    days = pd.DataFrame({"relapse_time": [*grid[1:], 400.0], "relapse_event": [1] * 400 + [0]})
    assert total(days) == pytest.approx(1.0, abs=1e-6)
    scans = [0.0, 90.0, 180.0, 270.0, 360.0]
    rows = pd.DataFrame(
        {
            "relapse_time": [*scans[1:], 400.0],
            "relapse_event": [1, 1, 1, 1, 0],
            "relapse_last_scan": [*scans[:-1], 360.0],
        }
    )
    assert total(rows) == pytest.approx(1.0, abs=1e-6)
    free = np.exp(
        float(law.log_survival(jnp.asarray([0.0, 360.0]), lam_growth, 0.1, m0, jnp.zeros(2))[1])
    )
    assert free < 0.9  # the check sees a lost interval


# -- refusals ----------------------------------------------------------------------------------


def test_bad_relapse_columns_are_refused():
    table = pd.DataFrame(
        {
            "relapse_time": [100.0, 0.0, 200.0, 300.0],
            "relapse_event": [1, 0, 2, 1],
            "relapse_last_scan": [50.0, 0.0, 0.0, 300.0],
        }
    )
    with pytest.raises(InputError) as err:
        outcome_arrays(table.drop(columns="relapse_event"), ("relapse",), label="p.csv")
    assert "p.csv" in str(err.value) and "relapse_event" in str(err.value)
    with pytest.raises(InputError) as err:
        outcome_arrays(table, ("relapse",), label="p.csv")
    message = str(err.value)
    assert "row 3" in message and "relapse_time" in message  # time 0
    assert "row 4" in message and "must be 0 or 1" in message  # event 2
    assert "row 5" in message and "relapse_last_scan" in message  # found at the last scan's day
    assert "row 2" not in message


def test_specs_without_a_relapse_law_are_refused(spec, cohort):
    tables = read_tables(cohort["draws"], cohort["patients"], cohort["treatments"])
    with pytest.raises(InputError, match="no relapse endpoint"):
        fit_data(ctcdyn.load_spec("mbc"), tables, outcomes=("relapse",))
    rateless = dataclasses.replace(EndpointModel.from_spec(spec), relapse=RelapseModel(1e9, 0.0))
    assert "other_relapse_rate > 0" in rateless.fittable("relapse")[0]
    assert EndpointModel.from_spec(spec).fittable("relapse") == []


# -- end to end --------------------------------------------------------------------------------


@pytest.mark.slow  # ~5 min on 2 shared cores: NUTS gradients through the adjuvant ODE solve
def test_cli_fit_with_relapse(cohort, tmp_path):
    """``ctcdyn fit --per-patient --outcomes relapse`` at toy sampler settings stores a relapse
    log-likelihood per draw and patient; a spec without the law is refused clearly."""
    from typer.testing import CliRunner

    from ctcdyn.cli import app
    from ctcdyn.report import open_fitted

    base = ["fit", "--draws", str(cohort["draws"]), "--patients", str(cohort["patients"]),
            "--treatments", str(cohort["treatments"]), "--per-patient"]  # fmt: skip
    runner = CliRunner()
    refused = runner.invoke(
        app, [*base, "--model", "mbc", "--out", str(tmp_path / "bad"), "--outcomes", "relapse"]
    )
    assert refused.exit_code != 0 and "relapse" in refused.output
    out = tmp_path / "fit"
    result = runner.invoke(
        app,
        [*base, "--model", "adjuvant", "--out", str(out), "--outcomes", "relapse",
         "--chains", "1", "--warmup", "30", "--samples", "30", "--seed", "2"],
    )  # fmt: skip
    assert result.exit_code in (0, 1), result.output  # 1: the toy settings fail the gate
    fitted = open_fitted(out)
    assert fitted.model.outcomes == ("relapse",)
    ll = fitted.tree["log_likelihood"].to_dataset()
    assert ll["relapse"].dims[-1] == "patient" and np.isfinite(ll["relapse"]).all()
