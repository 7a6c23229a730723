"""Bundled example data: small virtual cohorts in the input format of ``ctcdyn fit``.

Each cohort is a folder of CSV files (``draws``, ``patients``, ``treatments`` and, being
simulated, ``truth``; columns in docs/data.md) written by one ``ctcdyn simulate`` command,
kept in :data:`COMMANDS`. ``tests/test_examples.py`` reruns that command and checks that the
bundled files equal its output, so they cannot drift from the model they came from.
"""

from __future__ import annotations

from pathlib import Path

#: The command that writes each bundled cohort, run from the repository root.
COMMANDS: dict[str, str] = {
    "mbc": "ctcdyn simulate --model mbc --patients 12 --seed 2026 --out ctcdyn/examples/mbc",
}
#: Tables of a simulated cohort, in the order ``ctcdyn simulate`` writes them.
TABLES = ("draws", "patients", "treatments", "truth")

_HERE = Path(__file__).resolve().parent


def example_names() -> list[str]:
    """Names of the bundled example cohorts (``["mbc"]``)."""
    return sorted(COMMANDS)


def example_cohort(name: str = "mbc") -> dict[str, Path]:
    """Paths of a bundled example cohort's CSV files.

    Args:
        name: the cohort, one of :func:`example_names`. ``"mbc"`` is the demo's cohort: 12
            virtual patients of the metastatic-breast-cancer model (``models/mbc.toml``),
            CellSearch draws every 4 weeks on a new line of therapy.

    Returns:
        ``{"draws": ..., "patients": ..., "treatments": ..., "truth": ...}``, ready for
        :func:`ctcdyn.read_tables` or ``ctcdyn fit --draws ... --patients ...``.

    Raises:
        ValueError: ``name`` is not a bundled cohort (the message lists those that are).
        FileNotFoundError: the installation lacks the files (a broken install).

    Example:
        >>> from ctcdyn.examples import example_cohort
        >>> sorted(example_cohort("mbc"))
        ['draws', 'patients', 'treatments', 'truth']
    """
    if name not in COMMANDS:
        raise ValueError(
            f"no bundled example cohort {name!r}; the bundled ones are: "
            + ", ".join(example_names())
        )
    folder = _HERE / name
    paths = {table: folder / f"{table}.csv" for table in TABLES}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"example cohort {name!r} is incomplete, missing: {', '.join(missing)}; "
            f"reinstall ctcdyn or regenerate it with `{COMMANDS[name]}`"
        )
    return paths
