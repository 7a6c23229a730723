"""MRD lead time: simulated patients per second for one monitoring schedule, new against old.

Usage: ``python benchmarks/leadtime.py [--patients N] [--chunk C] [--threshold T]
[--no-correction] [--max-step H] [--baseline-patients B] [--quick]``.

Runs :func:`ctcdyn.mrd.lead_time` on the ``adjuvant`` spec with its default schedule
(CellSearch 7.5 mL every 91 days at 09:00 for 5 years) for two engines in one process:

- *new*: :func:`ctcdyn.mrd.default_engine` (or the engine that ``--threshold`` and
  ``--no-correction`` describe), on ``--patients`` patients;
- *old*: the configuration before the branching-noise correction (``Hybrid`` with
  ``threshold=100``, ``branching_noise=False``), on ``--baseline-patients`` patients (it is
  slow; ``--baseline-patients 0`` skips it).

Each engine is called twice: the first call (one chunk) compiles and is reported separately,
the second is the warm run. The aim (issue 5): 100,000 patients for one schedule in under a
minute on the 2-core CPU. The machine's load average is printed before and after: other users'
work slows the numbers down.
"""

from __future__ import annotations

import argparse
import os
import time

import jax

from ctcdyn import load_spec
from ctcdyn.dynamics import Hybrid
from ctcdyn.mrd import default_engine, lead_time

#: The default engine before the branching-noise correction (docs/mrd.md, "Cost").
OLD_ENGINE = Hybrid(threshold=100.0, max_step=30.0, branching_noise=False)


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


def _measure(spec, engine: Hybrid, patients: int, chunk: int) -> tuple[float, float, object]:
    """(compile + first chunk seconds, warm seconds, summary row) of one engine."""

    def run(n: int, seed: int):
        started = time.perf_counter()
        result = lead_time(
            spec, None, jax.random.key(seed), n_patients=n, engine=engine, chunk_size=chunk
        )
        return result, time.perf_counter() - started

    # Compile: one chunk of the same shape (the compiled solve is reused by the timed run).
    _, first = run(min(chunk, patients), 0)
    result, warm = run(patients, 1)
    return first, warm, result.summary().iloc[0]


def _report(name: str, engine: Hybrid, patients: int, first: float, warm: float, row) -> None:
    print(f"{name}: {engine}")
    print(f"  compile + first chunk: {first:.1f} s")
    print(f"  warm run, {patients} patients: {warm:.1f} s ({patients / warm:,.0f} patients/s)")
    print(f"  projected 100,000 patients: {1e5 / patients * warm:.0f} s (aim < 60 s)")
    print(
        f"  P(detect before imaging) = {row['p_detect_before_imaging']:.3f} "
        f"± {row['p_detect_before_imaging_se']:.3f}; median lead (any positive) "
        f"{row['median_lead_days']:.0f} ± {row['median_lead_days_se']:.0f} days; "
        f"tumour-CTC positive {row['median_true_lead_days']:.1f} "
        f"± {row['median_true_lead_days_se']:.1f} days; P(relapse) {row['p_relapse']:.3f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=512, help="patients per compiled call")
    parser.add_argument("--threshold", type=float, help="hybrid threshold (cells) of 'new'")
    parser.add_argument(
        "--no-correction", action="store_true", help="'new' without the branching noise"
    )
    parser.add_argument("--max-step", type=float, help="hybrid max step (days) of 'new'")
    parser.add_argument(
        "--baseline-patients", type=int, default=5_000, help="patients for 'old' (0: skip)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: 64 patients each")
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    n = 64 if args.quick else args.patients
    n_old = min(64, args.baseline_patients) if args.quick else args.baseline_patients
    spec = load_spec("adjuvant")
    default = default_engine()
    engine = Hybrid(
        threshold=default.threshold if args.threshold is None else args.threshold,
        branching_noise=default.branching_noise and not args.no_correction,
        max_step=default.max_step if args.max_step is None else args.max_step,
    )
    print(f"device: {jax.devices()[0].device_kind}, cores: {os.cpu_count()}, jax {jax.__version__}")
    print(f"before: {_load()}", flush=True)
    first, warm, row = _measure(spec, engine, n, args.chunk)
    _report("new", engine, n, first, warm, row)
    if n_old > 0:
        first_old, warm_old, row_old = _measure(spec, OLD_ENGINE, n_old, args.chunk)
        _report("old", OLD_ENGINE, n_old, first_old, warm_old, row_old)
        ratio = (n / warm) / (n_old / warm_old)
        print(f"speed-up, new / old patients per second: {ratio:.1f}x")
    print(f"after: {_load()}")


if __name__ == "__main__":
    main()
