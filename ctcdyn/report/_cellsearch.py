"""The CellSearch rule: >= 5 CTC per 7.5 mL of blood classifies a draw as unfavourable.

Cristofanilli et al. 2004, NEJM 351:781 (metastatic breast cancer starting a new line of
therapy): patients with >= 5 CTC / 7.5 mL at baseline had median progression-free survival 2.7
vs 7.0 months and shorter overall survival (FACTS.md). The rule is defined for the CellSearch
assay on one 7.5 mL tube; draws by other assays or volumes are not classified.
"""

from __future__ import annotations

import enum
import math

#: CTC per 7.5 mL at or above which a CellSearch draw is "unfavourable" (Cristofanilli 2004).
THRESHOLD = 5
#: Assay and tube volume the rule was defined for.
ASSAY = "cellsearch"
VOLUME_ML = 7.5


class CellSearchClass(enum.StrEnum):
    """Classification of one draw by the CellSearch rule."""

    POSITIVE = ">= 5 (unfavourable)"
    NEGATIVE = "< 5 (favourable)"
    MISSING = "no count"
    UNDETERMINED = "undetermined (censored count)"
    NOT_APPLICABLE = "not applicable (other assay or volume)"


def classify(ctc: float | None, censor: int, volume_ml: float, assay: str) -> CellSearchClass:
    """Classify one draw by the CellSearch >= 5 CTC / 7.5 mL rule.

    Args:
        ctc: single CTCs counted (None or NaN when missing).
        censor: 0 exact, 1 the true count is >= ``ctc``, -1 the true count is <= ``ctc``.
        volume_ml: blood processed (mL); the rule applies to 7.5 mL only.
        assay: registered assay name; the rule applies to ``cellsearch`` only.
    """
    if assay.lower() != ASSAY or not math.isclose(volume_ml, VOLUME_ML, rel_tol=1e-6):
        return CellSearchClass.NOT_APPLICABLE
    if ctc is None or (isinstance(ctc, float) and math.isnan(ctc)):
        return CellSearchClass.MISSING
    if censor == 0:
        return CellSearchClass.POSITIVE if ctc >= THRESHOLD else CellSearchClass.NEGATIVE
    if censor > 0:  # true count >= ctc
        return CellSearchClass.POSITIVE if ctc >= THRESHOLD else CellSearchClass.UNDETERMINED
    return CellSearchClass.NEGATIVE if ctc < THRESHOLD else CellSearchClass.UNDETERMINED
