"""Right-censored outcomes of a set of patients: the input of every accuracy metric."""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt
import pandas as pd


@dataclasses.dataclass(frozen=True)
class Outcomes:
    """Observed time and event indicator of each patient (right censoring).

    Attributes:
        time: shape (patients,); days from baseline to the event, or to the last follow-up
            when censored. Finite.
        event: shape (patients,); True where the event was observed at ``time``, False where
            the patient was censored then. Given as bool or as 0/1 numbers.

    Raises:
        ValueError: lengths differ, an array is not 1-D or is empty, a time is NaN or infinite,
            or an event flag is not 0/1/True/False.
    """

    time: np.ndarray
    event: np.ndarray

    def __post_init__(self) -> None:
        time = np.asarray(self.time, dtype=float)
        raw_event = np.asarray(self.event)
        if time.ndim != 1 or raw_event.ndim != 1:
            raise ValueError(
                f"Outcomes needs 1-D time and event arrays, got shapes {time.shape} and "
                f"{raw_event.shape}"
            )
        if time.shape != raw_event.shape:
            raise ValueError(
                f"Outcomes: time has {time.size} patients but event has {raw_event.size}; "
                "give one time and one event flag per patient"
            )
        if time.size == 0:
            raise ValueError("Outcomes needs at least one patient")
        bad = ~np.isfinite(time)
        if bad.any():
            raise ValueError(
                f"Outcomes: time must be finite; {int(bad.sum())} value(s) are not, first at "
                f"position {int(np.flatnonzero(bad)[0])} ({time[bad][0]})"
            )
        object.__setattr__(self, "time", time)
        object.__setattr__(self, "event", _as_bool(raw_event))

    @classmethod
    def from_table(cls, patients: pd.DataFrame, endpoint: str) -> Outcomes:
        """Outcomes of one endpoint from a patients table (``{endpoint}_time``/``_event``).

        Args:
            patients: one row per patient, e.g. ``Tables.patients`` or a simulated cohort's
                ``patients.csv``.
            endpoint: the endpoint's prefix, e.g. "os", "pfs" or "relapse".

        Raises:
            ValueError: a column is missing, or the values break :class:`Outcomes`' rules.
        """
        cols = [f"{endpoint}_time", f"{endpoint}_event"]
        missing = [c for c in cols if c not in patients.columns]
        if missing:
            raise ValueError(
                f"patients table has no column(s) {missing}; its columns are "
                f"{list(patients.columns)}"
            )
        return cls(patients[cols[0]].to_numpy(), patients[cols[1]].to_numpy())

    def __len__(self) -> int:
        return int(self.time.size)


def as_outcomes(value: Outcomes | tuple[npt.ArrayLike, npt.ArrayLike], name: str) -> Outcomes:
    """``value`` as :class:`Outcomes`: itself, or built from a ``(time, event)`` pair."""
    if isinstance(value, Outcomes):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        return Outcomes(np.asarray(value[0]), np.asarray(value[1]))
    raise TypeError(f"{name} must be Outcomes or a (time, event) pair, got {type(value).__name__}")


def _as_bool(event: np.ndarray) -> np.ndarray:
    if event.dtype == bool:
        return event
    if event.dtype.kind in "iuf":
        ok = (event == 0) | (event == 1)
        if ok.all():
            return event == 1
        first = int(np.flatnonzero(~ok)[0])
        raise ValueError(
            f"Outcomes: event must be 0/1 or True/False; position {first} is {event[first]}"
        )
    raise ValueError(f"Outcomes: event must be bool or 0/1 numbers, got dtype {event.dtype}")
