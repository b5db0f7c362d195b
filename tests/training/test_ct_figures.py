"""The CT card's localisation figure and pointing game are what the shipped file does on the LIDC reader marks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from inference.shipped_models import SHIPPED_MODELS_DIR
from training.ct_figures import LOCALISATION_FIGURE, ReaderMark, redraw


def _square_mark(slice_index: int = 2) -> ReaderMark:
    # A 20 px square outline around (row 100, col 200), drawn as LIDC edge maps are: one vertex per pixel step.
    rows = tuple(range(90, 110)) + (110,) * 20 + tuple(range(110, 90, -1)) + (90,) * 20
    cols = (190,) * 20 + tuple(range(190, 210)) + (210,) * 20 + tuple(range(210, 190, -1))
    return ReaderMark("reader", "nodule", 4, slice_index, rows, cols)


def test_a_point_inside_the_outline_or_its_radius_is_a_hit_and_one_outside_is_not() -> None:
    mark = _square_mark()
    assert mark.centre == pytest.approx((100.0, 200.0), abs=0.6)
    assert mark.contains(100, 200)
    assert mark.contains(108, 208)  # inside the outline, beyond the 10 px radius of the centre
    assert not mark.contains(100, 215)
    assert not mark.contains(130, 200)


def test_a_point_mark_counts_within_its_radius_only() -> None:
    point = ReaderMark("reader", "nodule", 3, 0, (50,), (60,))
    assert point.contains(50, 60) and point.contains(50.5, 60.5)
    assert not point.contains(53, 60)


@pytest.mark.shared_data
def test_redrawing_from_the_shipped_file_gives_the_committed_card(shared_data: Path, tmp_path: Path) -> None:
    shipped = SHIPPED_MODELS_DIR / "ct-chest"
    copy = tmp_path / "ct-chest"
    shutil.copytree(shipped, copy)
    (copy / "plots" / LOCALISATION_FIGURE).unlink()
    summary = redraw(copy, shared_data)
    assert (copy / "plots" / LOCALISATION_FIGURE).stat().st_size > 10_000
    # The card's Figures and Localisation sections and metrics.json's pointing game are recomputed, not kept.
    assert (copy / "card.md").read_text() == (shipped / "card.md").read_text()
    assert summary == json.loads((shipped / "metrics.json").read_text())["pointing_game"]
    assert summary["n"] == 3 and 0 <= summary["hits"] <= 3
