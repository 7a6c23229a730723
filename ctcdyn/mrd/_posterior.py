"""Virtual patients from a fit: posterior draws of one patient's parameters.

Each virtual patient of :func:`~ctcdyn.mrd.lead_time` takes one posterior draw (resampled with
replacement), so the lead-time distribution is the patient's posterior predictive one: it
carries both the uncertainty about the patient's parameters and the randomness of residual
disease.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np
import xarray as xr
from jaxtyping import PRNGKeyArray

from ..specs import ModelSpec


def posterior_values(
    spec: ModelSpec,
    posterior: xr.Dataset,
    patient: str,
    n: int,
    key: PRNGKeyArray,
    *,
    population: Mapping[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """Parameter values (spec units) of ``n`` virtual patients drawn from one patient's posterior.

    Args:
        spec: the spec the fit used.
        posterior: the fit's posterior group (dims ``chain``, ``draw`` and, for patient-level
            parameters, ``patient``), e.g. ``Run.open(path).read_posterior()["posterior"]``.
        patient: the patient's id (a value of the ``patient`` coordinate).
        n: number of virtual patients.
        key: PRNG key of the resampling.
        population: values of population-level parameters the fit held fixed (a per-patient
            fit's ``population["values"]`` in its manifest); the spec's typical values are used
            for any still missing.

    Returns:
        One array of length ``n`` per sampled parameter of the spec.
    """
    if "patient" in posterior.dims and patient not in posterior["patient"].values:
        known = ", ".join(map(str, posterior["patient"].values[:10]))
        raise ValueError(f"no patient {patient!r} in the fit; patients: {known}, ...")
    sizes = posterior.sizes
    total = int(sizes.get("chain", 1) * sizes.get("draw", 1))
    pick = np.asarray(jax.random.choice(key, total, (n,), replace=True))
    fixed = dict(population or {})
    out = {}
    for name in spec.sampled:
        if name in posterior:
            x = posterior[name]
            if "patient" in x.dims:
                x = x.sel(patient=patient)
            flat = np.asarray(x.transpose("chain", "draw").values).reshape(total)
            out[name] = flat[pick]
        else:
            value = fixed.get(name, spec.parameters[name].typical())
            out[name] = np.full(n, float(value))
    return out
