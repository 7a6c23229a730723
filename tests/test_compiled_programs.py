"""Compiled programs hold memory mappings until they are freed (the cause of a native crash).

XLA's CPU backend maps each compiled program's code and data separately, and keeps the
mappings while the program is cached. Linux refuses a process more than ``vm.max_map_count``
mappings (65,530 by default); a test worker that compiled thousands of programs reached it and
segfaulted in the next compilation (docs/benchmarks.md, "The native crash explained").
``tests/conftest.py`` therefore calls ``jax.clear_caches()`` when a worker nears the limit; this
test checks that the mechanism it relies on still works with the installed JAX.
"""

import gc

import jax
import jax.numpy as jnp
import pytest
from conftest import memory_mappings

PROGRAMS = 50


@pytest.mark.skipif(memory_mappings() is None, reason="needs /proc/self/maps (Linux)")
def test_compiled_programs_hold_mappings_that_clear_caches_frees():
    jax.clear_caches()
    gc.collect()
    before = memory_mappings()
    assert before is not None
    programs = []
    for i in range(PROGRAMS):  # distinct shapes: one compilation each
        f = jax.jit(lambda x: jnp.sin(x) * jnp.cumsum(x))
        f(jnp.ones(3 + i)).block_until_ready()
        programs.append(f)
    grown = memory_mappings() - before
    # ~19 mappings per program with jax 0.12 on x86-64; at least a few each, or the crash's
    # explanation no longer holds and conftest's guard is moot.
    assert grown >= 3 * PROGRAMS, grown
    jax.clear_caches()  # the jit objects are still alive: their compiled programs are not
    gc.collect()
    assert memory_mappings() - before < 0.2 * grown
