"""Input tables of a fit: reading and up-front validation (DESIGN.md section 9, docs/data.md)."""

from ._tables import (
    COUNT_COLUMNS,
    MAX_LISTED,
    TREATMENT_KINDS,
    InputError,
    Problem,
    Tables,
    read_tables,
)

__all__ = [
    "COUNT_COLUMNS",
    "MAX_LISTED",
    "TREATMENT_KINDS",
    "InputError",
    "Problem",
    "Tables",
    "read_tables",
]
