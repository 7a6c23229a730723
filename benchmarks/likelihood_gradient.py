"""Cost of one likelihood gradient: the closed-form engine against the adaptive solve.

For a simulated mbc cohort, times ``jax.value_and_grad`` of the count log-likelihood of the
fitted model (``CountModel.log_likelihood``) with respect to every sampled parameter, once with
``Analytic`` (closed form, the default in fits of exponential-growth specs) and once with
``FastClearance`` (Tsit5, tolerances as in fits), and the closed form with its circadian
harmonics summed per draw time (``clock_basis=False``, the likelihood's engine until 2026-12-01)
against the clock-hour basis of the draws (the default since). Baseline: FastClearance; every
row is reported as a ratio to it in the same run. ``--chains C`` vmaps the gradient over C
copies of the parameters, as NUTS does with its chains.

    .venv/bin/python benchmarks/likelihood_gradient.py --patients 200
    .venv/bin/python benchmarks/likelihood_gradient.py --patients 50 --chains 4
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
from ctcdyn.dynamics import Analytic, FastClearance
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
    parser.add_argument("--chains", type=int, default=1, help="gradients vmapped at once")
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
        "Analytic, harmonics per time": Analytic(lesions=False, clock_basis=False),
        "Analytic, clock basis (fits)": fit_engine(spec, data.arrays.design),
    }
    m = int(np.max(data.n_draws))
    print(
        f"mbc, {args.patients} patients x up to {m} draws, {args.chains} chain(s) at once, "
        f"float64, {jax.devices()[0]}"
    )
    stacked = jax.tree.map(lambda x: jnp.stack([x] * args.chains), logs)
    baseline = None
    for name, engine in engines.items():
        model = CountModel(spec, engine, censored=False)

        def total(log_values, model=model):
            v = {k: jnp.exp(x) for k, x in log_values.items()}
            singles, clusters = model.log_likelihood(arrays, v)
            return jnp.sum(singles) + jnp.sum(clusters)

        gradient = jax.jit(jax.vmap(jax.value_and_grad(total)))
        compile_s, per_call = _time(gradient, (stacked,), args.repeats)
        baseline = per_call if baseline is None else baseline
        print(
            f"{name:<34} gradient {per_call * 1e3:8.2f} ms  (compile {compile_s:5.1f} s)"
            f"  speed-up x{baseline / per_call:6.1f}"
        )


if __name__ == "__main__":
    main()
