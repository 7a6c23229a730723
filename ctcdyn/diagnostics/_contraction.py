"""Posterior contraction: how much the data narrowed each parameter's prior.

contraction = 1 - Var[posterior] / Var[prior] (Betancourt 2018, "Calibrating model-based
inferences and decisions", arXiv:1803.08393, section 3; Schad, Betancourt & Vasishth 2021,
Psychological Methods 26(1), 103-126). It is near 1 when the data pin a parameter down, near 0
when the posterior is its prior, and negative when the posterior is wider than the prior.

Variances are taken on the log scale when every prior and posterior draw of a parameter is
positive, else on the natural scale: shedding and clearance rates spanning decades are compared
on the log scale, where a wide log-normal prior's variance is not dominated by its upper tail.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from ..store._summary import contraction_variances

#: Contraction above which a parameter counts as informed by the data.
INFORMED = 0.5
#: Contraction below which a parameter counts as prior-dominated.
PRIOR_DOMINATED = 0.1
#: Columns of :func:`contraction`'s table.
CONTRACTION_COLUMNS = (
    "parameter",
    "scale",
    "n",
    "prior_sd",
    "posterior_sd",
    "contraction",
    "informed",
    "prior_dominated",
)


def contraction(tree: xr.DataTree) -> pd.DataFrame:
    """Posterior contraction of every parameter drawn in both ``posterior`` and ``prior``.

    A population-level parameter gets its own row. A per-patient parameter (any dim besides
    chain and draw) gets one row summarising its ``n`` elements by their medians: median prior
    sd, median posterior sd and median contraction across patients.

    Returns:
        A DataFrame with :data:`CONTRACTION_COLUMNS`: ``scale`` is "log" or "natural" (sds are
        on that scale); ``informed`` is contraction > :data:`INFORMED`; ``prior_dominated`` is
        contraction < :data:`PRIOR_DOMINATED` (both False for NaN).

    Raises:
        ValueError: the tree has no ``prior`` or ``posterior`` group.
    """
    missing = [g for g in ("posterior", "prior") if g not in tree.children]
    if missing:
        raise ValueError(
            f"contraction needs the tree's {' and '.join(missing)} group; sample the prior "
            "predictive too (e.g. numpyro.infer.Predictive with the prior) and add it as 'prior'"
        )
    post = tree["posterior"].to_dataset()
    prior = tree["prior"].to_dataset()
    rows = []
    for name, da in post.data_vars.items():
        if name not in prior:
            continue
        post_var, prior_var, scale = contraction_variances(da, prior[name])
        _, prior_var = xr.align(post_var, prior_var, join="left")
        prior_var = prior_var.broadcast_like(post_var)
        with np.errstate(invalid="ignore", divide="ignore"):
            c = (1.0 - post_var / prior_var).values.ravel()
            prior_sd = np.sqrt(prior_var.values.ravel())
            post_sd = np.sqrt(post_var.values.ravel())
        value = float(np.median(c))  # NaN if any patient's is: never hidden
        rows.append(
            dict(
                parameter=str(name),
                scale=scale,
                n=c.size,
                prior_sd=float(np.median(prior_sd)),
                posterior_sd=float(np.median(post_sd)),
                contraction=value,
                informed=value > INFORMED,
                prior_dominated=value < PRIOR_DOMINATED,
            )
        )
    return pd.DataFrame(rows, columns=list(CONTRACTION_COLUMNS))
