r"""Assays: how much of a blood draw a CTC test sees, and what it sees that is not there.

An :class:`Assay` holds, for one enrichment/enumeration technology,

=====================  ======================================================  ===========
recovery               eta, fraction of single CTCs in the sample counted      1
cluster_recovery       eta_c, fraction of CTC clusters in the sample counted   1
background_per_ml      b, false-positive "CTC" per mL of blood processed       1/mL
default_volume_ml      v, blood processed in one test                          mL
=====================  ======================================================  ===========

with a prior for each rate (Beta for the recoveries, log-normal for the background) and the
literature source of every number. Point values are prior centres, for simulation; inference
samples from the priors. The registry holds ``cellsearch``, ``parsortix`` and
``leukapheresis``; :func:`register_assay` adds a user's own.

Only the product "effective shedding into peripheral blood x recovery" is identified by counts
(DESIGN.md section 4): the recovery priors decide how that product is split, not the fit.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
import numpyro.distributions as dist

__all__ = ["Assay", "assay_names", "get_assay", "register_assay"]


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


class Assay(eqx.Module):
    r"""One CTC assay: recovery, background and default volume, each with prior and source.

    The mean counts of a draw of v mL from a patient with S single CTCs and C clusters in a
    blood volume V (see :func:`~ctcdyn.observation.expected_counts`) are

    .. math::

        E[\text{singles}] = \eta \, v / V \, S + b \, v, \qquad
        E[\text{clusters}] = \eta_c \, v / V \, C.

    Attributes:
        name: registry key (lower case).
        recovery: eta, fraction of single CTCs in the processed blood that are counted (1).
        recovery_prior: ``(alpha, beta)`` of a Beta prior for eta.
        cluster_recovery: eta_c, fraction of clusters in the processed blood counted (1).
        cluster_recovery_prior: ``(alpha, beta)`` of a Beta prior for eta_c.
        background_per_ml: b, false-positive CTC counts per mL of blood processed (1/mL).
        background_prior: ``(median, log_sd)`` of a log-normal prior for b (median in 1/mL;
            log_sd is the standard deviation of ln b).
        default_volume_ml: blood processed by one test (mL).
        description: one line on the technology.
        sources: ``(field, source)`` pairs giving the literature source of every number.

    To use a sampled recovery in a model, replace the field:
    ``dataclasses.replace(assay, recovery=eta)`` (checks are skipped for traced values).
    """

    name: str = eqx.field(static=True)
    recovery: float
    recovery_prior: tuple[float, float] = eqx.field(static=True)
    cluster_recovery: float
    cluster_recovery_prior: tuple[float, float] = eqx.field(static=True)
    background_per_ml: float
    background_prior: tuple[float, float] = eqx.field(static=True)
    default_volume_ml: float
    description: str = eqx.field(static=True, default="")
    sources: tuple[tuple[str, str], ...] = eqx.field(static=True, default=())

    def __check_init__(self) -> None:
        for field in ("recovery", "cluster_recovery"):
            value = getattr(self, field)
            if _is_number(value) and not 0.0 < value <= 1.0:
                raise ValueError(f"Assay {self.name!r}: {field} must lie in (0, 1], got {value}.")
        if _is_number(self.background_per_ml) and not self.background_per_ml >= 0.0:
            raise ValueError(
                f"Assay {self.name!r}: background_per_ml must be >= 0 (1/mL), "
                f"got {self.background_per_ml}."
            )
        if _is_number(self.default_volume_ml) and not self.default_volume_ml > 0.0:
            raise ValueError(
                f"Assay {self.name!r}: default_volume_ml must be > 0 (mL), "
                f"got {self.default_volume_ml}."
            )
        for field in ("recovery_prior", "cluster_recovery_prior", "background_prior"):
            prior = getattr(self, field)
            if len(prior) != 2 or not all(_is_number(p) and p > 0 for p in prior):
                raise ValueError(
                    f"Assay {self.name!r}: {field} must be two positive numbers, got {prior}."
                )

    def source(self, field: str) -> str:
        """The literature source of one field ('' when none was given)."""
        return dict(self.sources).get(field, "")

    def recovery_distribution(self) -> dist.Beta:
        """Beta prior of the single-cell recovery eta."""
        return dist.Beta(*self.recovery_prior)

    def cluster_recovery_distribution(self) -> dist.Beta:
        """Beta prior of the cluster recovery eta_c."""
        return dist.Beta(*self.cluster_recovery_prior)

    def background_distribution(self) -> dist.LogNormal:
        """Log-normal prior of the background rate b (1/mL)."""
        median, log_sd = self.background_prior
        return dist.LogNormal(jnp.log(median), log_sd)


# --- the registry -------------------------------------------------------------------------

#: P(>= 2 false CTC | Poisson(lam)) = 1 - e^-lam (1 + lam) = 1/344 (Allard et al. 2004) has
#: root lam = 0.0783 per 7.5 mL tube.
_CELLSEARCH_BACKGROUND_PER_TUBE = 0.0783
#: P(>= 1 false CTC) = 1 - e^-lam = 0.069 (J Exp Clin Cancer Res 2024, healthy volunteers)
#: gives lam = -ln(1 - 0.069) = 0.0715 per tube.
_PARSORTIX_BACKGROUND_PER_TUBE = -math.log(1.0 - 0.069)

_UNCHECKED_CLUSTERS = (
    "assumption: no published cluster recovery for this assay was found; set equal to the "
    "single-cell value with a flat Beta(1, 1) prior"
)

CELLSEARCH = Assay(
    name="cellsearch",
    recovery=0.80,
    recovery_prior=(2.4, 0.6),
    cluster_recovery=0.80,
    cluster_recovery_prior=(1.0, 1.0),
    background_per_ml=_CELLSEARCH_BACKGROUND_PER_TUBE / 7.5,
    background_prior=(_CELLSEARCH_BACKGROUND_PER_TUBE / 7.5, 1.0),
    default_volume_ml=7.5,
    description="CellSearch: EpCAM immunomagnetic capture, CK+/CD45-/DAPI+ enumeration.",
    sources=(
        (
            "recovery",
            "Riethdorf et al. 2007 Clin Cancer Res 13:920: spiked-cell recovery ~80-82% for "
            "EpCAM-high lines, as low as ~12% for EpCAM-low lines (FACTS.md); Allard et al. "
            "2004 Clin Cancer Res 10:6897 abstract: average recovery >= 85%. Prior Beta(2.4, "
            "0.6): mean 0.80, 95% interval 0.29-1.00; EpCAM-low tumours need a lower prior",
        ),
        ("cluster_recovery", _UNCHECKED_CLUSTERS),
        (
            "background_per_ml",
            "Allard et al. 2004 Clin Cancer Res 10:6897 (abstract): 1 of 344 (0.3%) healthy "
            "and non-malignant-disease subjects had >= 2 CTC / 7.5 mL; a Poisson background "
            "with P(>= 2) = 1/344 has 0.078 per tube = 0.0104 per mL. Wide log-normal prior "
            "(log_sd 1.0)",
        ),
        ("default_volume_ml", "CellSearch tube, 7.5 mL (Allard et al. 2004; FACTS.md)"),
    ),
)

PARSORTIX = Assay(
    name="parsortix",
    recovery=0.75,
    recovery_prior=(15.0, 5.0),
    cluster_recovery=0.75,
    cluster_recovery_prior=(1.0, 1.0),
    background_per_ml=_PARSORTIX_BACKGROUND_PER_TUBE / 7.5,
    background_prior=(_PARSORTIX_BACKGROUND_PER_TUBE / 7.5, 1.5),
    default_volume_ml=7.5,
    description="Parsortix PC1: epitope-independent capture by cell size and deformability.",
    sources=(
        (
            "recovery",
            "Templeman et al. 2023 J Circ Biomark 12:26 (abstract): harvest 69%, 73%, 79%, 90% "
            "of spiked SKBR3, MCF7, Hs578T (live) and fixed SKBR3 cells; 68.4% +- 14.3% of "
            "fixed SKBR3 in patient blood. Prior Beta(15, 5): mean 0.75, sd 0.09",
        ),
        ("cluster_recovery", _UNCHECKED_CLUSTERS),
        (
            "background_per_ml",
            "J Exp Clin Cancer Res 2024, doi 10.1186/s13046-024-03149-x (abstract; ANGLE "
            "regulatory data): 6.9% of 76 healthy volunteers had >= 1 CTC (IF slides). "
            "A Poisson background with P(>= 1) = 0.069 has -ln(1 - 0.069) = 0.0715 per tube. "
            "The same volunteers averaged ~1 CTC (range 0-28): the background is strongly "
            "over-dispersed, so the prior is wide (log_sd 1.5)",
        ),
        (
            "default_volume_ml",
            "assumption: one 7.5 mL tube processed; not checked against the PC1 instructions "
            "for use, set the volume of each draw from the data",
        ),
    ),
)

LEUKAPHERESIS = Assay(
    name="leukapheresis",
    recovery=0.30,
    recovery_prior=(3.0, 7.0),
    cluster_recovery=0.30,
    cluster_recovery_prior=(1.0, 1.0),
    background_per_ml=4e-4,
    background_prior=(4e-4, 1.5),
    default_volume_ml=2500.0,
    description=(
        "Diagnostic leukapheresis: litres of blood processed, the mononuclear product "
        "analysed for CTCs (e.g. by CellSearch on aliquots)."
    ),
    sources=(
        (
            "recovery",
            "effective recovery per mL processed, derived: leukapheresis yields tens to "
            "hundreds of times the CTCs of a 7.5 mL tube (review; Fischer et al. 2013 PNAS "
            "110:16580, as cited); 2500/7.5 x eta/0.80 = 31-250x for eta in the prior's 95% "
            "interval 0.075-0.60 (Beta(3, 7), mean 0.30)",
        ),
        ("cluster_recovery", _UNCHECKED_CLUSTERS),
        (
            "background_per_ml",
            "assumption: about one false positive per 2.5 L procedure (4e-4 per mL); no "
            "healthy-donor data found; wide prior (log_sd 1.5)",
        ),
        (
            "default_volume_ml",
            "~2.5 L of blood processed (Fischer et al. 2013 PNAS 110:16580, as cited)",
        ),
    ),
)

_REGISTRY: dict[str, Assay] = {a.name: a for a in (CELLSEARCH, PARSORTIX, LEUKAPHERESIS)}


def assay_names() -> tuple[str, ...]:
    """Names of the registered assays, sorted."""
    return tuple(sorted(_REGISTRY))


def get_assay(name: str | Assay) -> Assay:
    """The registered assay called ``name`` (case-insensitive); an :class:`Assay` is returned as is.

    Raises:
        ValueError: for an unknown name; the message lists the known ones.
    """
    if isinstance(name, Assay):
        return name
    key = str(name).strip().lower()
    if key not in _REGISTRY:
        raise ValueError(
            f"Unknown assay {name!r}. Known assays: {', '.join(assay_names())}. "
            "Try 1) one of those names, or 2) ctcdyn.observation.register_assay(Assay(...)) "
            "to add your own."
        )
    return _REGISTRY[key]


def register_assay(assay: Assay, *, overwrite: bool = False) -> Assay:
    """Add a user-defined assay to the registry, under ``assay.name`` (lower-cased).

    Raises:
        ValueError: if the name is taken and ``overwrite`` is False.
    """
    key = assay.name.strip().lower()
    if key in _REGISTRY and not overwrite:
        raise ValueError(
            f"An assay named {key!r} is already registered; pass overwrite=True to replace it."
        )
    _REGISTRY[key] = assay
    return assay
