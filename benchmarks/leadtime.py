"""MRD lead time: simulated patients per second for one monitoring schedule.

Usage: ``python benchmarks/leadtime.py [--patients N] [--chunk C] [--threshold T]
[--max-step H] [--quick]``. Runs :func:`ctcdyn.mrd.lead_time` on the ``adjuvant`` spec with
its default schedule (CellSearch 7.5 mL every 91 days at 09:00 for 5 years), twice with the
same shapes: the first call compiles (reported separately), the second is the warm run. The aim
(issue 5): 100,000 patients for one schedule in under a minute on the 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import time

import jax

from ctcdyn import load_spec
from ctcdyn.dynamics import Hybrid
from ctcdyn.mrd import lead_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=512, help="patients per compiled call")
    parser.add_argument("--threshold", type=float, default=100.0, help="hybrid threshold (cells)")
    parser.add_argument("--max-step", type=float, default=30.0, help="hybrid max step (days)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 64 patients")
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    n = 64 if args.quick else args.patients
    spec = load_spec("adjuvant")
    engine = Hybrid(threshold=args.threshold, max_step=args.max_step)
    print(f"device: {jax.devices()[0].device_kind}, cores: {os.cpu_count()}, jax {jax.__version__}")

    def run(patients: int, seed: int):
        started = time.perf_counter()
        result = lead_time(
            spec,
            None,
            jax.random.key(seed),
            n_patients=patients,
            engine=engine,
            chunk_size=args.chunk,
        )
        return result, time.perf_counter() - started

    # Compile: one chunk of the same shape (the compiled solve is reused by the timed run).
    _, first = run(min(args.chunk, n), 0)
    result, warm = run(n, 1)
    row = result.summary().iloc[0]
    print(f"compile + first chunk ({min(args.chunk, n)} patients): {first:.1f} s")
    print(f"warm run, {n} patients: {warm:.1f} s ({n / warm:,.0f} patients/s)")
    print(f"projected 100,000 patients: {1e5 / n * warm:.0f} s (aim < 60 s)")
    print(
        f"P(detect before imaging) = {row['p_detect_before_imaging']:.3f} "
        f"± {row['p_detect_before_imaging_se']:.3f}; median lead "
        f"{row['median_lead_days']:.0f} ± {row['median_lead_days_se']:.0f} days"
    )


if __name__ == "__main__":
    main()
