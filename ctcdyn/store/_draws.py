"""Posterior draws out of a DataTree, for computations that use a subset of them."""

from __future__ import annotations

import numpy as np
import xarray as xr


def thinned_draws(da: xr.DataArray, n: int) -> np.ndarray:
    """At most ``n`` posterior draws of ``da`` (evenly thinned over chains and draws), the
    sample axis first; the other dims keep their order."""
    flat = da.stack(sample=("chain", "draw")).transpose("sample", ...)
    total = flat.sizes["sample"]
    index = np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int))
    return np.asarray(flat.values[index], dtype=float)
