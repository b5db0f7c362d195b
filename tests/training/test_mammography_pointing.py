"""The mammography card's pointing game is true of the shipped file: recomputed out of fold from ``model.onnx``.

Each woman's films are mapped by the fold network that never saw her (its logit map exposed from the
shipped graph), the served map of ``datasets.breast_heatmap`` is built from it, and its peak is checked
against the MIAS centres. Needs ../shared/data (CI has it); about a minute and a half on 2 shared cores.
"""

from __future__ import annotations

import json

import pytest

from inference.shipped_models import SHIPPED_MODELS_DIR
from training.mammography_figures import pointing_figures

TOLERANCE = 0.01
MODEL_DIR = SHIPPED_MODELS_DIR / "mammography"


@pytest.mark.integration
@pytest.mark.shared_data
def test_pointing_game_is_recomputed_from_the_shipped_file(shared_data) -> None:
    stated = json.loads((MODEL_DIR / "metrics.json").read_text())["pointing_game"]
    bundle = json.loads((MODEL_DIR / "bundle.json").read_text())
    figures = pointing_figures(MODEL_DIR, shared_data)
    # The first shipped map's figure (22/61) is reproduced from the file, so the fold maps are the ones trained.
    assert figures["variants"]["cnn (whole film, peak cell: as first shipped)"]["hits"] == 22
    assert figures["chosen"] == bundle["localisation"]["map"] == stated["variant"]
    assert abs(figures["served"]["rate"] - stated["rate"]) <= TOLERANCE
    assert abs(figures["nested"]["rate"] - stated["nested"]["rate"]) <= TOLERANCE
    for name, game in figures["variants"].items():
        assert abs(game["rate"] - stated["variants"][name]["rate"]) <= TOLERANCE, name
    card = (MODEL_DIR / "card.md").read_text()
    served = figures["served"]
    assert f"| `{figures['chosen']}`: " in card and f" | {served['films']} | {served['hits']} | {served['rate']:.2f} (" in card
