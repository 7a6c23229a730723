"""Shape buckets of a per-patient batch: which patients share a chunk, and how wide it is.

A compiled sampler serves one shape, (patients per chunk, blood draws per patient). Padding
every patient to the cohort's largest number of draws wastes work when one patient has 60 draws
and most have 6; compiling once per distinct width wastes compilations. The rule in between:

1. Each patient's **width** is the smallest power of two >= their number of blood draws, at
   least :data:`MIN_WIDTH` and at most the cohort's largest number of draws (so a cohort never
   pads beyond what it has).
2. Patients of equal width form a **bucket**. A bucket with fewer than half a chunk of patients
   joins the next wider bucket (a few patients are not worth a compilation of their own).
3. Each bucket is cut into chunks of ``chunk_size`` patients in cohort order; the last chunk of
   a bucket is padded to the bucket's chunk size by repeating its last patient. Chunk ids run
   over buckets in order of width.

So a batch compiles at most once per bucket (about log2 of the largest draw count), padding
costs at most a factor 2 in blood draws, and the plan depends only on the draw counts and the
chunk size: a resumed run, or one on another executor, cuts the same chunks.
"""

from __future__ import annotations

import dataclasses

import numpy as np

#: The narrowest bucket (blood draws); fewer-draw patients are padded to it.
MIN_WIDTH = 4


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
    """One chunk of a per-patient batch.

    Attributes:
        chunk_id: the chunk's number (its key is ``fold_in(key, chunk_id)``).
        width: blood draws every patient of the chunk is padded to.
        size: patients the chunk is padded to (equal for every chunk of a bucket).
        patients: positions of the chunk's real patients in the cohort, in cohort order.
    """

    chunk_id: int
    width: int
    size: int
    patients: np.ndarray

    def padded(self) -> np.ndarray:
        """The chunk's patient positions padded to ``size`` by repeating the last one."""
        fill = np.full(self.size - self.patients.size, self.patients[-1])
        return np.concatenate([self.patients, fill])


def bucket_widths(n_draws: np.ndarray) -> np.ndarray:
    """Each patient's padded width: the next power of two, within [MIN_WIDTH, max draws]."""
    n_draws = np.asarray(n_draws, dtype=int)
    if n_draws.size == 0 or n_draws.min() < 1:
        raise ValueError("every patient needs at least one blood draw to be bucketed")
    cap = int(n_draws.max())
    widths = np.array([1 << (int(n) - 1).bit_length() for n in n_draws])
    return np.minimum(np.maximum(widths, MIN_WIDTH), cap)


def plan_chunks(n_draws: np.ndarray, chunk_size: int, *, bucketed: bool = True) -> list[ChunkPlan]:
    """Cut a cohort into chunks (see the module's rule).

    Args:
        n_draws: blood draws per patient, in cohort order.
        chunk_size: patients per chunk at most.
        bucketed: False puts everyone in one bucket as wide as the largest draw count.

    Returns:
        The chunks in chunk-id order; every patient is in exactly one.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    n_draws = np.asarray(n_draws, dtype=int)
    widths = bucket_widths(n_draws) if bucketed else np.full(n_draws.size, n_draws.max())
    order = np.unique(widths)
    plans: list[ChunkPlan] = []
    carried = np.zeros(0, dtype=int)
    for i, width in enumerate(order):
        members = np.sort(np.concatenate([carried, np.flatnonzero(widths == width)]))
        if members.size < chunk_size / 2 and i < order.size - 1:
            carried = members  # too few for a compilation: join the next wider bucket
            continue
        carried = np.zeros(0, dtype=int)
        size = min(chunk_size, members.size)
        for lo in range(0, members.size, size):
            plans.append(ChunkPlan(len(plans), int(width), size, members[lo : lo + size]))
    return plans
