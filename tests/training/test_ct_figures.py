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


@pytest.mark.shared_data
@pytest.mark.integration
def test_training_draws_the_figure_and_the_redraw_command_writes_the_same_card(shared_data: Path, tmp_path: Path) -> None:
    from training.ct_figures import main
    from training.tasks.ct_chest import train

    # A tiny run (1 epoch, 20 patches per class: about 30 s of CPU); its figures mean nothing, its text must match.
    trained = tmp_path / "trained"
    train(shared_data, trained, f"sqlite:///{tmp_path / 'mlflow.db'}", epochs=1, seed=0, limit=20, cache_dir=None)
    card = (trained / "card.md").read_text()
    assert f"`plots/{LOCALISATION_FIGURE}`" in card and "Pointing game, cross-validated" in card
    redrawn = tmp_path / "redrawn"
    shutil.copytree(trained, redrawn)
    assert main([str(redrawn), "--data", str(shared_data)]) == 0
    assert (redrawn / "card.md").read_text() == card
    assert json.loads((redrawn / "metrics.json").read_text()) == json.loads((trained / "metrics.json").read_text())
    figure = (trained / "plots" / LOCALISATION_FIGURE).read_bytes()
    assert (redrawn / "plots" / LOCALISATION_FIGURE).read_bytes() == figure


def test_the_shipped_card_labels_its_figures_per_patch_and_gives_the_series_figure() -> None:
    """Stats review 4, defect 8: 0.909 / 0.962 are per reader-mark patch and per candidate patch (14 of the marks
    counted as found have no candidate, so a served series never scores them), yet the card had called both "over
    candidates". The shipped card's sections are what training writes from its metrics.json."""
    from types import SimpleNamespace

    from training.tasks.ct_chest import _card_text

    shipped = SHIPPED_MODELS_DIR / "ct-chest"
    metrics = json.loads((shipped / "metrics.json").read_text())
    headline = metrics["headline"]
    figures = SimpleNamespace(
        cross_validated=SimpleNamespace(**{k: headline[k] for k in ("threshold", "sensitivity", "specificity")}),
        apparent=SimpleNamespace(sensitivity=headline["apparent_sensitivity"], specificity=headline["apparent_specificity"]),
    )
    sections = _card_text(metrics["params"], figures, metrics["series_validation"], metrics["pointing_game"], metrics["params"]["epochs"])
    card = (shipped / "card.md").read_text()
    assert all(text in card for text in sections.values())
    assert "sensitivity 0.909 per reader-mark patch, specificity 0.962 per candidate patch" in sections["operating_point"]
    assert "2 of 3 series with a nodule reach it; no series without one" in sections["operating_point"]
    assert "including the 14 marks the candidate step finds no candidate for" in sections["metrics_note"]
    assert "over candidates" not in card and "Candidate-level figures" not in card
