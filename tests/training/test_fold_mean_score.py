"""A fold ensemble's served score is the mean of its calibrated fold scores (the scale its threshold was chosen on).

The mammography file once served the calibrated maximum of the fold networks' mean heat-map: with max
pooling that runs far below each network's own maximum, so a threshold chosen on out-of-fold (single
network) scores flagged 0.10 of abnormal films instead of 0.90. Both the export and the in-place
re-wiring of an already shipped file must give ``score == mean(fold_scores)``.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch

from models.networks import FoldEnsemble, HeatmapClassifier
from training.export import export_onnx
from training.rewire_fold_mean import rewire_score_to_fold_mean

OUTPUTS = ["score", "heatmap", "fold_scores"]


def _ensemble(score: str) -> FoldEnsemble:
    torch.manual_seed(0)
    networks = [HeatmapClassifier(1, 2, channels=(4, 8), strides=(2, 2), pooling="max") for _ in range(3)]
    return FoldEnsemble(networks, [1.5, 0.8], [-0.3, 0.2], score=score).eval()


def _run(path, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip(OUTPUTS, session.run(OUTPUTS, {"image": x}), strict=True))


def test_fold_mean_export_scores_with_the_mean_of_the_fold_scores(tmp_path) -> None:
    x = np.random.default_rng(0).random((4, 1, 32, 32), dtype=np.float32)
    out = _run(export_onnx(_ensemble("fold_mean"), torch.from_numpy(x[:1]), tmp_path / "m.onnx", input_name="image", output_names=OUTPUTS), x)
    np.testing.assert_allclose(out["score"], out["fold_scores"].mean(axis=-1), atol=1e-6)


def test_pooled_score_runs_below_the_fold_scores_and_rewiring_fixes_it(tmp_path) -> None:
    x = np.random.default_rng(1).random((6, 1, 32, 32), dtype=np.float32)
    path = export_onnx(_ensemble("pooled"), torch.from_numpy(x[:1]), tmp_path / "m.onnx", input_name="image", output_names=OUTPUTS)
    before = _run(path, x)
    # The defect: the max of a mean map is never above the mean of the maxima.
    assert (before["score"] <= before["fold_scores"].mean(axis=-1) + 1e-6).all()
    onnx.save(rewire_score_to_fold_mean(onnx.load(str(path))), str(path))
    after = _run(path, x)
    np.testing.assert_allclose(after["score"], after["fold_scores"].mean(axis=-1), atol=1e-6)
    np.testing.assert_allclose(after["fold_scores"], before["fold_scores"], atol=1e-6)
    np.testing.assert_allclose(after["heatmap"], before["heatmap"], atol=1e-6)
