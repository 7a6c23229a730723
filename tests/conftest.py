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
- Compiled programs released when a worker's memory mappings near the kernel's limit
  (``vm.max_map_count``, 65,530 by default). Every program XLA compiles for the CPU keeps ~19
  mappings until it is freed, and an xdist worker compiles thousands: on 2026-12-01 a worker
  reached 65,263 mappings and died of a segfault in the next compilation (a failed ``mmap`` in
  the JIT linker; docs/benchmarks.md, "The native crash explained"). ``jax.clear_caches()``
  frees them; later tests recompile what they need.
"""

import os
from pathlib import Path

import jax
import pytest

jax.config.update("jax_enable_x64", True)
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "1")  # inherited by subprocesses and Dask workers
jax.config.update("jax_num_cpu_devices", int(os.environ["JAX_NUM_CPU_DEVICES"]))
if os.environ.get("CTCDYN_TEST_JAX_CACHE") == "1":
    jax.config.update("jax_compilation_cache_dir", str(Path(__file__).parents[1] / ".jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
else:  # also for the CLI commands tests call in-process (they would set ~/.cache/ctcdyn/jax)
    jax.config.update("jax_enable_compilation_cache", False)


#: Mappings above which a worker drops its compiled programs (a test compiles at most a few
#: hundred programs, ~19 mappings each, so this leaves room for the largest under the limit).
MAPPINGS_BEFORE_RELEASE = 30_000


def memory_mappings() -> int | None:
    """The number of this process's memory mappings (None where /proc is not there)."""
    try:
        with open("/proc/self/maps", "rb") as maps:
            return sum(1 for _ in maps)
    except OSError:
        return None


@pytest.fixture(scope="session")
def mbc():
    """The metastatic breast cancer spec (models/mbc.toml), read once per worker."""
    from ctcdyn import load_spec

    return load_spec("mbc")


@pytest.fixture(autouse=True)
def _release_compiled_programs():
    yield
    mappings = memory_mappings()
    if mappings is not None and mappings > MAPPINGS_BEFORE_RELEASE:
        jax.clear_caches()
