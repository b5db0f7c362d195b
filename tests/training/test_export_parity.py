"""The ONNX export gate: ONNX Runtime must reproduce PyTorch, and a mismatched model must fail."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.networks import ScoreAndHeatmap, build_network
from tests.training.conftest import tiny_network
from training.errors import ParityError
from training.export import check_parity, export_onnx


def test_exported_model_matches_pytorch(tmp_path, parity_inputs) -> None:
    model = tiny_network()
    path = export_onnx(model, torch.zeros(1, 1, 32, 32), tmp_path / "m.onnx", input_name="image", output_names=["score", "heatmap"])
    worst = check_parity(model, path, parity_inputs)
    assert worst < 1e-5
    session = ort.InferenceSession(str(path))
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["score", "heatmap"]
    score, heatmap = session.run(None, {"image": parity_inputs})
    assert score.shape == (4, 1) and heatmap.shape == (4, 1, 8, 8)  # dynamic batch axis


def test_parity_check_fails_on_a_mismatched_model(tmp_path, parity_inputs) -> None:
    exported = tiny_network(seed=0)
    path = export_onnx(exported, torch.zeros(1, 1, 32, 32), tmp_path / "m.onnx", input_name="image", output_names=["score", "heatmap"])
    other = tiny_network(seed=1)  # same architecture, different weights
    with pytest.raises(ParityError, match="differs from PyTorch"):
        check_parity(other, path, parity_inputs)


@pytest.mark.parametrize(("task", "shape"), [("chest-xray", (2, 1, 128, 128)), ("mammography", (1, 1, 512, 512)), ("ct-chest", (3, 3, 32, 32))])
def test_task_networks_export_with_parity(tmp_path, task, shape) -> None:
    model = ScoreAndHeatmap(build_network(task)).eval()
    inputs = np.random.default_rng(1).random(shape, dtype=np.float32)
    path = export_onnx(model, torch.from_numpy(inputs[:1]), tmp_path / f"{task}.onnx", input_name="x", output_names=["score", "heatmap"])
    assert check_parity(model, path, inputs) < 1e-4


def test_a_failed_parity_gate_leaves_the_bundle_folder_as_it_was(tmp_path, make_bundle, parity_inputs, monkeypatch) -> None:
    """Review 7 (ML engineer), defect 5: the export had been written over the folder's model.onnx before the gate, so
    a failed gate (or a Ctrl-C) left a network beside another model's bundle.json, card and threshold."""
    import training.publish
    from training.publish import TaskReport, write_bundle

    folder = make_bundle()
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def failing_parity(*args, **kwargs):
        raise ParityError("output score: ONNX Runtime differs from PyTorch by up to 0.2")

    monkeypatch.setattr(training.publish, "check_parity", failing_parity)
    report = TaskReport(
        task="chest-xray", export_module=tiny_network(seed=1), parity_inputs=parity_inputs, input_name="image",
        input_shape=[-1, 1, 32, 32], outputs=[{"name": "score", "shape": [-1, 1]}, {"name": "heatmap", "shape": [-1, 1, 8, 8]}],
        preprocess={"size": [32, 32]}, headline=None, evaluations=[], card={}, params={}, history=[],  # type: ignore[arg-type]
    )
    with pytest.raises(ParityError):
        write_bundle(report, folder, run=None)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no file changed, nothing left behind
