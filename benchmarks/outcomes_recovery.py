"""What the recorded endpoints add to a fit: recovery of growth, kill and burden with and without.

Simulates one ``mbc`` cohort, fits it twice with the hierarchical model (the counts alone, and
the counts with ``outcomes=("os", "pfs")``, the mechanistic endpoint model), and prints the
log-scale RMSE and correlation of each patient's posterior median against the truth. Numbers in
docs/prognosis.md ("Mechanistic survival") come from the defaults:

    .venv/bin/python benchmarks/outcomes_recovery.py [--patients 40] [--seed 7]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import numpy as np

import ctcdyn
from ctcdyn.data import read_tables
from ctcdyn.inference import NUTSSettings, fit, fit_data

PARAMETERS = ("growth_rate", "kill_rate", "metastatic_burden0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7, help="seed of the simulated cohort")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    spec = ctcdyn.load_spec("mbc")
    cohort = ctcdyn.simulate_cohort(spec, args.patients, jax.random.key(args.seed))
    truth = cohort.truth.set_index("patient_id")
    with tempfile.TemporaryDirectory() as folder:
        paths = cohort.write(folder)
        tables = read_tables(paths["draws"], paths["patients"], paths["treatments"])
    settings = NUTSSettings(chains=2, warmup=args.warmup, samples=args.samples, target_accept=0.95)
    for outcomes in [(), ("os", "pfs")]:
        started = time.perf_counter()
        result = fit(spec, fit_data(spec, tables, outcomes=outcomes), jax.random.key(1),
                     nuts=settings)  # fmt: skip
        posterior = result.tree["posterior"]
        label = ",".join(outcomes) or "counts only"
        for name in PARAMETERS:
            estimate = np.log(posterior[name].median(("chain", "draw")).values)
            true = np.log(truth.loc[list(posterior["patient"].values), name].values)
            rmse = np.sqrt(np.mean((estimate - true) ** 2))
            corr = np.corrcoef(estimate, true)[0, 1]
            print(f"{label:>12}  {name:<20} rmse(log) {rmse:.3f}  corr(log) {corr:.3f}")
        divergent = int(result.tree["sample_stats"]["diverging"].sum())
        print(f"{label:>12}  divergent {divergent}  {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
