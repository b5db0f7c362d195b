"""Every card shows its figures: the ROC with the operating point and a localisation figure (heat-map or
candidate examples on a few findings), each a file under ``models/<task>/plots`` that the card names."""

from __future__ import annotations

import re

import pytest

from inference.shipped_models import SHIPPED_MODELS_DIR, TASKS


def _named_plots(task: str) -> list[str]:
    card = (SHIPPED_MODELS_DIR / task / "card.md").read_text()
    return re.findall(r"`(plots/[\w.-]+\.png)`", card)


@pytest.mark.parametrize("task", TASKS)
def test_card_names_its_roc_and_the_files_exist(task: str) -> None:
    named = _named_plots(task)
    assert "plots/roc_cross_validated.png" in named
    missing = [name for name in named if not (SHIPPED_MODELS_DIR / task / name).is_file()]
    assert not missing, f"{task}: the card names plots that are not there: {missing}"


@pytest.mark.parametrize("task", TASKS)
def test_card_names_a_localisation_figure(task: str) -> None:
    localisation = [name for name in _named_plots(task) if not re.match(r"plots/(roc|calibration)_", name)]
    assert localisation, f"{task}: no heat-map or candidate figure named in the card"
    assert all((SHIPPED_MODELS_DIR / task / name).is_file() for name in localisation)
