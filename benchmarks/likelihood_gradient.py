"""Cost of one likelihood gradient: the closed-form engine against the adaptive solve.

For a simulated mbc cohort, times ``jax.value_and_grad`` of the count log-likelihood of the
fitted model (``CountModel.log_likelihood``) with respect to every sampled parameter, once with
``Analytic`` (closed form, the default in fits of exponential-growth specs) and once with
``FastClearance`` (Tsit5, tolerances as in fits). Baseline: FastClearance; reported as a ratio
in the same run.

    .venv/bin/python benchmarks/likelihood_gradient.py --patients 200
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ctcdyn.data import read_tables
from ctcdyn.dynamics import FastClearance
from ctcdyn.inference import CountModel, fit_data
from ctcdyn.inference._model import fit_engine
from ctcdyn.simulate import simulate_cohort
from ctcdyn.simulate._parameters import draw_parameters
from ctcdyn.specs import load_spec


def _time(fn, args, repeats: int) -> tuple[float, float]:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn(*args))
    return compile_s, (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    spec = load_spec("mbc")
    with tempfile.TemporaryDirectory() as tmp:
        simulate_cohort(spec, args.patients, jax.random.key(args.seed)).write(tmp)
        folder = Path(tmp)
        tables = read_tables(
            folder / "draws.csv", folder / "patients.csv", folder / "treatments.csv"
        )
    data = fit_data(spec, tables)
    arrays = jax.tree.map(jnp.asarray, data.arrays)
    values = draw_parameters(spec, args.patients, jax.random.key(1))
    logs = {k: jnp.log(v) for k, v in values.items()}
    engines = {
        "FastClearance (Tsit5, baseline)": FastClearance(
            rtol=1e-5, atol=1e-6, max_steps=4096, max_doses=1
        ),
        "Analytic (closed form)": fit_engine(spec, data.arrays.design),
    }
    m = int(np.max(data.n_draws))
    print(f"mbc, {args.patients} patients x up to {m} draws, float64, {jax.devices()[0]}")
    baseline = None
    for name, engine in engines.items():
        model = CountModel(spec, engine, censored=False)

        def total(log_values, model=model):
            v = {k: jnp.exp(x) for k, x in log_values.items()}
            singles, clusters = model.log_likelihood(arrays, v)
            return jnp.sum(singles) + jnp.sum(clusters)

        compile_s, per_call = _time(jax.jit(jax.value_and_grad(total)), (logs,), args.repeats)
        baseline = per_call if baseline is None else baseline
        print(
            f"{name:<34} gradient {per_call * 1e3:8.2f} ms  (compile {compile_s:5.1f} s)"
            f"  speed-up x{baseline / per_call:6.1f}"
        )


if __name__ == "__main__":
    main()
