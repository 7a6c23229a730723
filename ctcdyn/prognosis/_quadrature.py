"""Gauss–Legendre quadrature on intervals: nodes and weights for cumulative hazards and areas."""

from __future__ import annotations

import functools

import numpy as np

#: Nodes per interval by default (as rstanarm's ``qnodes`` and JMbayes2's default: 15).
QUADRATURE_NODES = 15


@functools.cache
def _legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    nodes, weights = np.polynomial.legendre.leggauss(n)
    nodes.setflags(write=False)
    weights.setflags(write=False)
    return nodes, weights


def gauss_legendre(
    lower: np.ndarray, upper: np.ndarray, n: int = QUADRATURE_NODES
) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the n-point Gauss–Legendre rule on each interval [lower, upper].

    ``sum(weights * f(nodes), axis=-1)`` approximates the integral of f over each interval; the
    rule is exact for polynomials of degree up to 2n - 1. An empty interval (upper == lower)
    gets zero weights.

    Args:
        lower: lower interval bounds (same unit as the time axis).
        upper: upper interval bounds, broadcastable with ``lower``.
        n: nodes per interval.

    Returns:
        ``(nodes, weights)``, each shaped ``broadcast(lower, upper).shape + (n,)``.
    """
    if n < 1:
        raise ValueError(f"quadrature needs at least 1 node, got {n}")
    lower = np.asarray(lower, dtype=float)[..., None]
    upper = np.asarray(upper, dtype=float)[..., None]
    x, w = _legendre(n)
    half = (upper - lower) / 2.0
    return lower + half * (x + 1.0), half * w


def split_gauss_legendre(
    lower: np.ndarray, upper: np.ndarray, breaks: tuple[float, ...] = (), n: int = QUADRATURE_NODES
) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre on each interval split at ``breaks`` (where the integrand jumps).

    Each interval [lower, upper] (shape (m,)) is cut into len(breaks) + 1 pieces (empty ones get
    zero weights) with n nodes each; returns nodes and weights shaped (m, (len(breaks) + 1) n).
    Without breaks this is :func:`gauss_legendre`.
    """
    lower = np.asarray(lower, dtype=float)
    upper = np.asarray(upper, dtype=float)
    if not breaks:
        return gauss_legendre(lower, upper, n)
    edges = np.asarray(sorted(breaks), dtype=float)
    cut_lo = np.clip(np.concatenate([[-np.inf], edges])[None, :], lower[:, None], upper[:, None])
    cut_hi = np.clip(np.concatenate([edges, [np.inf]])[None, :], lower[:, None], upper[:, None])
    nodes, weights = gauss_legendre(cut_lo, cut_hi, n)  # (m, pieces, n)
    return nodes.reshape(len(lower), -1), weights.reshape(len(lower), -1)
