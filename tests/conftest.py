"""Test configuration: 64-bit precision for the whole suite (set here, never by the library)."""

import jax

jax.config.update("jax_enable_x64", True)
