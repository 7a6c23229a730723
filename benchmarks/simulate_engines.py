"""Simulated patient-years per second for each engine, vmapped over patients.

Usage: ``python benchmarks/simulate_engines.py [--patients N] [--years Y] [--engines ...]
[--quick] [--chunk C] [--float32] [--output singles|state]``. Prints the device and a markdown
table; compile time is reported separately from the run time, and the run's CPU time (all
threads) next to its wall time (on a shared machine the CPU time is the steadier number). The
aim (issue): FastClearance, 100,000 patients x 5 years of daily states in < 10 s on a 2-core CPU.

``FastClearanceBefore`` is the fast-clearance engine as it was before its speed-ups
(``FastClearance(dense_steps=0, clock_basis=False)``: saving at every time inside the solver's
loop, harmonics summed per time), so one run prints before and after side by side:
``--engines FastClearance FastClearanceBefore``. The time grid is an argument of the compiled
function (not a constant XLA could fold), as it is when a simulation passes its own grid.
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import equinox as eqx
import jax
import jax.numpy as jnp

from ctcdyn.dynamics import ODE, FastClearance, example_model, solve


def engines() -> dict:
    found = {
        "FastClearance": FastClearance,
        "FastClearanceBefore": lambda: FastClearance(dense_steps=0, clock_basis=False),
        "FastClearanceClockBasis": lambda: FastClearance(dense_steps=0, clock_basis=True),
        "ODE": ODE,
    }
    for mod in ("_jump", "_hybrid", "_sde"):  # stochastic engines, when present
        if importlib.util.find_spec(f"ctcdyn.dynamics.{mod}") is not None:
            module = importlib.import_module(f"ctcdyn.dynamics.{mod}")
            for name in dir(module):
                obj = getattr(module, name)
                if isinstance(obj, type) and getattr(obj, "stochastic", False):
                    found[name] = obj
    return found


def cohort(n: int, dtype) -> object:
    """n patients with varied shedding, growth and burden (deterministic spread)."""
    base = jax.tree.map(
        lambda x: (
            jnp.asarray(x, dtype)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)
            else jnp.asarray(x)
        ),
        example_model(),
    )
    u = jnp.linspace(0.0, 1.0, n, dtype=dtype)
    leaves = lambda m: (m.shedding_single, m.primary_growth.rate_per_day, m.primary0)  # noqa: E731
    stacked = jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *jnp.shape(x))), base)
    return eqx.tree_at(leaves, stacked, (1e-7 * (0.5 + u), 0.004 * (0.5 + u), 1e9 * (0.2 + u)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--patients", type=int, default=10_000)
    p.add_argument("--years", type=float, default=5.0)
    p.add_argument("--engines", nargs="*", default=None)
    p.add_argument("--chunk", type=int, default=10_000, help="patients per vmapped call")
    p.add_argument("--float32", action="store_true", help="run in float32 (default float64)")
    p.add_argument("--quick", action="store_true", help="tiny run (CI smoke test)")
    p.add_argument(
        "--output",
        choices=["singles", "state"],
        default="singles",
        help="what each call returns: single CTCs only, or the whole state (P, M, S, C, N)",
    )
    args = p.parse_args()
    if not args.float32:
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float32 if args.float32 else jnp.float64
    if args.quick:
        args.patients, args.years, args.chunk = 8, 0.2, 8
    available = engines()
    names = args.engines or ["FastClearance", "FastClearanceBefore", "ODE"]
    print(
        f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"dtype {jnp.dtype(dtype).name}"
    )
    ts = jnp.arange(0.0, 365.25 * args.years, 1.0, dtype=dtype)  # daily states
    rows = []
    for name in names:
        engine = available[name]()
        n = min(args.patients, 200) if name == "ODE" else args.patients
        chunk = min(args.chunk, n)

        def simulate(m, times, e=engine):
            trajectory = solve(m, times, e)
            return trajectory.state.singles if args.output == "singles" else trajectory.state

        run = eqx.filter_jit(eqx.filter_vmap(simulate, in_axes=(eqx.if_array(0), None)))
        models = cohort(chunk, dtype)
        t0 = time.perf_counter()
        jax.block_until_ready(run(models, ts))
        compile_s = time.perf_counter() - t0
        t0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(max(1, n // chunk)):
            jax.block_until_ready(run(models, ts))
        run_s, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
        done = chunk * max(1, n // chunk)
        rows.append((name, done, args.years, compile_s, run_s, cpu_s, done * args.years / run_s))
    print(f"\noutput: {args.output}; projected = run time x 100,000 x 5 / (patients x years)")
    print(
        "\n| engine | patients | years | compile+first (s) | run (s) | run CPU (s) "
        "| patient-years/s | projected 100k x 5 y (s) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, n, y, c, r, cpu, rate in rows:
        print(
            f"| {name} | {n} | {y:g} | {c:.1f} | {r:.2f} | {cpu:.2f} | {rate:,.0f} "
            f"| {500_000 / rate:,.1f} |"
        )


if __name__ == "__main__":
    main()
