"""How a score is printed beside its threshold, on every surface that shows both (SR, heat-map caption, FHIR, HL7,
the worklist's reasons): one rule, so that a call and its numbers never disagree."""

from __future__ import annotations

__all__ = ["score_and_threshold"]

MOST_DIGITS = 8


def score_and_threshold(score: float, threshold: float, digits: int = 3) -> tuple[str, str]:
    """The score and the threshold as text with at least ``digits`` decimals, and more where needed for the two to
    print differently when they differ: at three decimals, 0.67205 (negative) and 0.67240 (positive) against a
    threshold of 0.672316 had both printed "p=0.672 (... at 0.672)". Rounding keeps order, so once the texts differ
    they also say which side of the threshold the score is on."""
    for places in range(digits, MOST_DIGITS + 1):
        shown = f"{score:.{places}f}", f"{threshold:.{places}f}"
        if shown[0] != shown[1] or score == threshold:
            return shown
    return shown
