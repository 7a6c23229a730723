"""Batch fits against cohort size: patients per second and ESS per second, compile time apart.

For each size N and each mode it simulates an ``mbc`` cohort of N patients and fits it with
:func:`ctcdyn.inference.fit_run` twice in this process: a *cold* run (tracing and compiling
included) and a *warm* run with another seed, whose compiled samplers are reused. It reports

- ``compile_s`` = cold wall time - warm wall time (tracing + compilation, approximately);
- ``warm_s``: the warm run's wall time (sampling, post-processing, writing the run folder);
- ``patients_per_s`` = N / warm_s;
- ``min_ess_bulk``: per-patient mode, the smallest bulk ESS over every patient's parameters;
  cohort mode, over the population parameters (medians, SDs, population-level values);
- ``ess_per_s`` = min_ess_bulk / warm_s (cohort mode), and for per-patient mode the total
  over patients of each patient's smallest bulk ESS / warm_s (``ess_per_s``) beside
  min_ess_bulk / warm_s (``min_ess_per_s``);
- ``gate_passed``: the diagnostics gate's verdict on the warm run (per-patient: fraction of
  patients whose every row passes R-hat and ESS).

Modes: ``per-patient`` (independent fits, population from the spec, chunks of --chunk-size by
draw-count bucket) and ``cohort`` (the hierarchical model; patients sharded over the local
devices when there are several).

    .venv/bin/python benchmarks/batch_scaling.py --sizes 100 300
    .venv/bin/python benchmarks/batch_scaling.py --sizes 1000 10000 100000 --modes per-patient
    .venv/bin/python benchmarks/batch_scaling.py --sizes 30000 --modes cohort --warmup 1000
    .venv/bin/python benchmarks/batch_scaling.py --sizes 10000 --executor dask --scheduler tcp://...

Rows are printed as they finish and appended to --out (JSON lines). Compare with Stan for the
cohort model with ``benchmarks/fit_vs_stan.py`` (same model, same settings).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import jax
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300])
    parser.add_argument(
        "--modes", nargs="+", choices=["per-patient", "cohort"], default=["per-patient", "cohort"]
    )
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--chunk-size", type=int, default=500)
    parser.add_argument("--executor", choices=["local", "dask"], default="local")
    parser.add_argument("--scheduler", default=None, help="dask: scheduler address")
    parser.add_argument("--workers", type=int, default=None, help="dask LocalCluster workers")
    parser.add_argument("--float32", action="store_true", help="single precision (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("batch_scaling.jsonl"))
    parser.add_argument("--keep", type=Path, default=None, help="keep run folders here")
    args = parser.parse_args()

    jax.config.update("jax_enable_x64", not args.float32)
    cache = os.environ.get("CTCDYN_JAX_CACHE", str(Path.home() / ".cache" / "ctcdyn" / "jax"))
    if jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", cache)

    from ctcdyn.inference import DaskExecutor, NUTSSettings
    from ctcdyn.simulate import simulate_cohort
    from ctcdyn.specs import load_spec

    spec = load_spec("mbc")
    nuts = NUTSSettings(chains=args.chains, warmup=args.warmup, samples=args.samples)
    executor = None
    if args.executor == "dask":
        executor = DaskExecutor(scheduler=args.scheduler, n_workers=args.workers)
    machine = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "devices": [str(d) for d in jax.devices()],
        "x64": not args.float32,
    }
    print(json.dumps(machine), flush=True)
    root = Path(tempfile.mkdtemp(prefix="batch_scaling-")) if args.keep is None else args.keep
    for n in args.sizes:
        cohort = root / f"cohort-{n}"
        simulate_cohort(spec, n, jax.random.key(args.seed + n)).write(cohort)
        files = {role: cohort / f"{role}.csv" for role in ("draws", "patients", "treatments")}
        for mode in args.modes:
            row = measure(spec, files, root / f"{mode}-{n}", mode, nuts, args, executor)
            row.update(size=n, mode=mode, executor=args.executor, **_settings(args))
            print(json.dumps(row), flush=True)
            with open(args.out, "a") as f:
                f.write(json.dumps({**row, "machine": machine}) + "\n")


def _settings(args) -> dict:
    return {
        "chains": args.chains,
        "warmup": args.warmup,
        "samples": args.samples,
        "chunk_size": args.chunk_size,
    }


def measure(spec, files, out, mode, nuts, args, executor) -> dict:
    """Cold run, then warm run; returns the row of measurements."""
    from ctcdyn.inference import Population, fit_run

    population = Population.from_spec(spec) if mode == "per-patient" else None

    def once(seed: int, folder: Path):
        start = time.perf_counter()
        run = fit_run(
            spec,
            files,
            folder,
            seed=seed,
            nuts=nuts,
            population=population,
            chunk_size=args.chunk_size,
            executor=executor,
            overwrite=True,
            format="zarr",
        )
        return run, time.perf_counter() - start

    _, cold = once(args.seed, out / "cold")
    run, warm = once(args.seed + 1, out / "warm")
    summary = run.read_summary()
    n = int(run.read_posterior()["posterior"].sizes["patient"])
    row = {"compile_s": cold - warm, "cold_s": cold, "warm_s": warm, "patients_per_s": n / warm}
    if mode == "per-patient":
        patient = summary["parameter"].str.extract(r"\[(.*)\]$")[0]
        per = summary.assign(patient=patient).groupby("patient")
        min_ess = per["ess_bulk"].min()
        ok = per.apply(
            lambda g: bool(
                (g["r_hat"] < 1.01).all() and (g[["ess_bulk", "ess_tail"]].to_numpy() >= 400).all()
            )
        )
        row.update(
            min_ess_bulk=float(min_ess.min()),
            ess_per_s=float(min_ess.sum() / warm),
            min_ess_per_s=float(min_ess.min() / warm),
            gate_passed=float(np.mean(ok)),
        )
    else:
        is_patient = summary["parameter"].str.contains(r"\[", regex=True)
        population_rows = summary[~is_patient]
        min_ess = float(population_rows["ess_bulk"].min())
        row.update(
            min_ess_bulk=min_ess,
            ess_per_s=min_ess / warm,
            worst_parameter=str(
                population_rows.loc[population_rows["ess_bulk"].idxmin(), "parameter"]
            ),
            gate_passed=run.manifest["status"] == "passed",
        )
    return row


if __name__ == "__main__":
    main()
