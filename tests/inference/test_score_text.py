"""A score printed beside its threshold never prints the same as the threshold unless it is the threshold."""

from __future__ import annotations

import random

from inference.score_text import score_and_threshold


def test_scores_either_side_of_the_threshold_print_differently_and_in_order() -> None:
    assert score_and_threshold(0.67205, 0.672316) == ("0.6721", "0.6723")
    assert score_and_threshold(0.67240, 0.672316) == ("0.6724", "0.6723")
    assert score_and_threshold(0.9, 0.672316) == ("0.900", "0.672")
    assert score_and_threshold(0.5, 0.5) == ("0.500", "0.500")
    assert score_and_threshold(0.9, 0.672316, digits=2) == ("0.90", "0.67")
    rng = random.Random(3)
    for _ in range(2000):
        threshold = rng.random()
        score = threshold + rng.choice([-1, 1]) * 10 ** rng.uniform(-7, -1)
        shown, at = score_and_threshold(score, threshold)
        assert shown != at and (float(shown) > float(at)) == (score > threshold)
