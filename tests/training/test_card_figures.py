"""Every card's headline figures are true of the shipped ONNX file: recomputed on the development data.

The figures are recomputed from ``models/<task>/model.onnx`` alone (its ``fold_scores`` output gives
the out-of-fold scores, the folds come from patient ids and the seed), never from training logs, so
a card cannot state what the shipped model does not do. Needs ../shared/data (CI has it).
"""

from __future__ import annotations

import importlib
import json

import pytest

from inference.shipped_models import SHIPPED_MODELS_DIR, TASKS
from training.card_figures import figures_from_file, headline_of

TOLERANCE = 0.01
# The shipped score on development films (training films included) can only look better than out of
# fold at the card's threshold; a fall beyond sampling noise means it is not on the scale the
# threshold was chosen on (mammography once flagged 0.10 of abnormal films against 0.90 out of fold).
OPERATING_POINT_FALL = 0.10
TASK_MODULES = {"chest-xray": "training.tasks.chest_xray", "mammography": "training.tasks.mammography", "ct-chest": "training.tasks.ct_chest"}


@pytest.mark.shared_data
@pytest.mark.parametrize("task", TASKS)
def test_card_headline_is_recomputed_from_the_shipped_file(task: str, shared_data) -> None:
    model_dir = SHIPPED_MODELS_DIR / task
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert "cross_validation" in metrics, f"{task}: metrics.json has no cross-validation plan, so its card cannot be reproduced"
    dev = importlib.import_module(TASK_MODULES[task]).development_set(shared_data, None)
    recomputed = headline_of(figures_from_file(model_dir, dev))
    stated = metrics["headline"]
    differences = {
        key: (stated[key], value)
        for key, value in recomputed.items()
        if key in stated and abs(float(stated[key]) - float(value)) > TOLERANCE
    }
    assert not differences, f"{task}: card figures (stated, recomputed) differ by more than {TOLERANCE}: {differences}"
    assert set(recomputed) <= set(stated)
    for side in ("sensitivity", "specificity"):
        fall = recomputed[side] - recomputed[f"apparent_{side}"]
        assert fall <= OPERATING_POINT_FALL, (
            f"{task}: at the card's threshold the shipped score's {side} on the development films is "
            f"{recomputed[f'apparent_{side}']:.3f} against {recomputed[side]:.3f} out of fold: the served score "
            "is not on the scale the operating point was chosen on"
        )
    card = (model_dir / "card.md").read_text()
    # The card shows the same numbers as metrics.json (rounded to three places).
    assert f"{stated['val_auroc']:.3f}" in card and f"{stated['threshold']:.3f}" in card
