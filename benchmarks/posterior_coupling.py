"""Which directions of a cohort posterior mix slowly, and what they are coupled to.

Reads the draws that ``benchmarks/fit_vs_stan.py --save-draws FILE.npz`` writes (NumPyro's
unconstrained latent coordinates, each ``(chain, draw[, patient])``) and prints

1. each population-level coordinate: its bulk ESS, and its posterior correlation with the
   cohort mean of every per-patient coordinate (``NAME_z``, ``singles_level``) and the median
   and largest |correlation| with the single patients' coordinates;
2. the slowest-mixing linear combinations of the population coordinates and the cohort means
   and spreads (mean square) of the per-patient ones (maximum autocorrelation factors: the
   generalised eigenvectors of the lag-``k`` autocovariance against the covariance, on
   standardised coordinates), with their bulk ESS and loadings. A direction whose ESS is far
   below every single coordinate's names the ridge the sampler
   crawls along.

    .venv/bin/python benchmarks/fit_vs_stan.py --patients 50 --warmup 300 --samples 300 \\
        --no-compile-probes --skip-stan --mass-matrix blocks --save-draws /tmp/d50.npz
    .venv/bin/python benchmarks/posterior_coupling.py /tmp/d50.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _ess(x: np.ndarray) -> float:
    """Bulk ESS of one scalar quantity, ``(chain, draw)``."""
    import arviz

    return float(np.asarray(arviz.ess(np.asarray(x, float), method="bulk")))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(population-level, per-patient) latent coordinates of a saved run."""
    with np.load(path) as f:
        latent = {k.removeprefix("latent/"): f[k] for k in f.files if k.startswith("latent/")}
    population = {k: v for k, v in latent.items() if v.ndim == 2}
    patient = {k: v for k, v in latent.items() if v.ndim == 3}
    return population, patient


def coupling_table(population: dict, patient: dict) -> list[dict]:
    """Per population coordinate: ESS, correlation with each patient site's cohort mean, and
    the median / largest |correlation| with single patients' coordinates."""
    rows = []
    for name, x in population.items():
        row: dict = {"parameter": name, "ess_bulk": _ess(x)}
        for site, z in patient.items():
            per_patient = np.array([abs(_corr(x, z[..., i])) for i in range(z.shape[-1])])
            row[site] = {
                "with_mean": _corr(x, z.mean(axis=-1)),
                "median_abs": float(np.median(per_patient)),
                "max_abs": float(per_patient.max()),
            }
        rows.append(row)
    return rows


def slow_directions(features: dict[str, np.ndarray], lag: int, count: int) -> list[dict]:
    """The ``count`` linear combinations of ``features`` (each ``(chain, draw)``) with the
    largest lag-``lag`` autocorrelation: solutions of C_lag v = rho C_0 v."""
    names = list(features)
    x = np.stack([features[n] for n in names], axis=-1)  # (chain, draw, k)
    x = (x - x.mean(axis=(0, 1))) / x.std(axis=(0, 1))
    flat = x.reshape(-1, x.shape[-1])
    c0 = flat.T @ flat / len(flat)
    head, tail = x[:, :-lag].reshape(-1, x.shape[-1]), x[:, lag:].reshape(-1, x.shape[-1])
    c_lag = head.T @ tail / len(head)
    c_lag = (c_lag + c_lag.T) / 2
    # whiten with C_0, then an ordinary symmetric eigenproblem
    w, u = np.linalg.eigh(c0)
    keep = w > 1e-10 * w.max()
    whiten = u[:, keep] / np.sqrt(w[keep])
    rho, v = np.linalg.eigh(whiten.T @ c_lag @ whiten)
    out = []
    for j in np.argsort(rho)[::-1][:count]:
        direction = whiten @ v[:, j]  # on the standardised features
        loadings = c0 @ direction  # correlation of each feature with the combination
        combo = x @ direction
        out.append(
            {
                "autocorrelation": float(rho[j]),
                "ess_bulk": _ess(combo),
                "loadings": dict(zip(names, loadings.tolist(), strict=True)),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("draws", type=Path, help="an .npz from fit_vs_stan.py --save-draws")
    parser.add_argument("--lag", type=int, default=10)
    parser.add_argument("--directions", type=int, default=3)
    args = parser.parse_args()

    population, patient = read(args.draws)
    chains, draws, patients = next(iter(patient.values())).shape
    print(f"{args.draws}: {chains} chains x {draws} draws, {patients} patients")
    print("\n1. population coordinates: bulk ESS; correlation with the cohort mean of each")
    print("   per-patient site [median |corr| over single patients, largest]")
    for row in coupling_table(population, patient):
        cells = "  ".join(
            f"{site}: {c['with_mean']:+.2f} [{c['median_abs']:.2f}, {c['max_abs']:.2f}]"
            for site, c in row.items()
            if isinstance(c, dict)
        )
        print(f"  {row['parameter']:<40} ESS {row['ess_bulk']:6.0f}  {cells}")

    features = dict(population)
    features.update({f"mean({k})": v.mean(axis=-1) for k, v in patient.items()})
    # a between-patient SD moves with the spread of the patients' coordinates, not their mean
    features.update({f"spread({k})": (v**2).mean(axis=-1) for k, v in patient.items()})
    print(f"\n2. slowest combinations (lag {args.lag}); loadings: correlation with each coordinate")
    for k, d in enumerate(slow_directions(features, args.lag, args.directions), 1):
        rho, ess = d["autocorrelation"], d["ess_bulk"]
        print(f"  #{k}: lag-{args.lag} autocorrelation {rho:.3f}, ESS {ess:.0f}")
        top = sorted(d["loadings"].items(), key=lambda kv: -abs(kv[1]))[:8]
        for name, value in top:
            print(f"      {value:+.2f}  {name}")


if __name__ == "__main__":
    main()
