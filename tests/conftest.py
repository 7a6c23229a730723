"""Test configuration, set here and never by the library.

- 64-bit precision for the whole suite (analytic comparisons need it).
- JAX's persistent compilation cache under .jax_cache/ (git-ignored) only when
  ``CTCDYN_TEST_JAX_CACHE=1``: it lets repeated local runs and both xdist workers share compiled
  programs, but on a fresh checkout (2026-11-30, jax 0.12 on CPU) two xdist workers aborted
  inside ``executable.serialize()`` while writing entries (a fresh cache, new large programs),
  which kills the worker and fails the run. Off by default until that is understood.
- One CPU device (``JAX_NUM_CPU_DEVICES`` overrides), set before any test starts JAX: the CLI
  commands that tests call in-process would otherwise give the worker one device per chain if
  they happened to run first, and the draws of every later fit would depend on test order.
  Tests of the multi-device sampler run in subprocesses.
"""

import os
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "1")  # inherited by subprocesses and Dask workers
jax.config.update("jax_num_cpu_devices", int(os.environ["JAX_NUM_CPU_DEVICES"]))
if os.environ.get("CTCDYN_TEST_JAX_CACHE") == "1":
    jax.config.update("jax_compilation_cache_dir", str(Path(__file__).parents[1] / ".jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
else:  # also for the CLI commands tests call in-process (they would set ~/.cache/ctcdyn/jax)
    jax.config.update("jax_enable_compilation_cache", False)
