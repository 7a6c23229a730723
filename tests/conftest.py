"""Test configuration, set here and never by the library.

- 64-bit precision for the whole suite (analytic comparisons need it).
- JAX's persistent compilation cache under .jax_cache/ (git-ignored): compilation dominates
  this suite's run time, and identical programs compiled by several tests or by both xdist
  workers are then compiled once.
"""

from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_compilation_cache_dir", str(Path(__file__).parents[1] / ".jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
