"""The committed bundles in models/: their contract holds and they score real inputs through the serving path."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from datasets.chest_xray import load_kermany
from datasets.ct_candidates import extract_patches, find_candidates
from datasets.lidc import load_lidc, nodule_centres
from datasets.mias import load_mias, read_film
from datasets.preprocess import PreprocessSpec, prepare_image, read_image_file
from inference.shipped_models import SHIPPED_MODELS_DIR, TASKS, read_bundle
from tests.conftest import FIXTURES

DATA = FIXTURES / "datasets"


def _session(task: str) -> tuple[ort.InferenceSession, dict]:
    shipped = read_bundle(SHIPPED_MODELS_DIR / task)
    return ort.InferenceSession(str(shipped.onnx_path), providers=["CPUExecutionProvider"]), shipped.bundle


@pytest.mark.parametrize("task", TASKS)
def test_bundle_contract_matches_the_onnx_graph(task: str) -> None:
    session, bundle = _session(task)
    (graph_input,) = session.get_inputs()
    assert graph_input.name == bundle["input"]["name"] and graph_input.type == "tensor(float)"
    assert list(graph_input.shape[1:]) == bundle["input"]["shape"][1:]
    assert [o.name for o in session.get_outputs()] == [o["name"] for o in bundle["outputs"]]
    assert 0.0 < bundle["threshold"] < 1.0
    metrics = json.loads((SHIPPED_MODELS_DIR / task / "metrics.json").read_text())
    assert metrics["headline"]["threshold"] == bundle["threshold"]
    assert metrics["onnx_parity_max_abs_diff"] < 1e-4
    assert metrics["mlflow_run_id"] in (SHIPPED_MODELS_DIR / task / "card.md").read_text()


def test_chest_xray_scores_pneumonia_above_normal() -> None:
    session, bundle = _session("chest-xray")
    spec = PreprocessSpec.from_dict(bundle["preprocess"])
    items = load_kermany(DATA / "kermany")
    batch = np.concatenate([prepare_image(read_image_file(i.path), spec) for i in items])
    score, heatmap = session.run(["score", "heatmap"], {bundle["input"]["name"]: batch})
    labels = np.array([i.label for i in items])
    assert score[labels == 1].mean() > score[labels == 0].mean()
    declared = next(o for o in bundle["outputs"] if o["name"] == "heatmap")["shape"]
    # One cell per 16 px of the input (the network's stride), as the bundle declares.
    assert heatmap.shape == (len(items), *declared[1:]) == (len(items), 1, spec.size[0] // 16, spec.size[1] // 16)
    assert ((0 <= heatmap) & (heatmap <= 1)).all()


def test_mammography_scores_a_whole_film_with_two_outputs() -> None:
    session, bundle = _session("mammography")
    spec = PreprocessSpec.from_dict(bundle["preprocess"])
    film = load_mias(DATA / "mias")[0]
    score, heatmap, fold_scores = session.run(["score", "heatmap", "fold_scores"], {"image": prepare_image(read_film(film), spec)})
    assert score.shape == (1, 2) and heatmap.shape == (1, 2, 32, 32)
    # The score is the mean of the fold networks' calibrated scores: the scale the card's threshold was chosen on.
    assert np.allclose(score[0], fold_scores[0].mean(axis=-1), atol=1e-6)


def test_ct_series_path_puts_the_top_candidate_on_the_nodule() -> None:
    session, bundle = _session("ct-chest")
    (case,) = load_lidc(DATA / "lidc")
    volume = case.volume()
    candidates = find_candidates(volume)
    score = session.run(["score"], {bundle["input"]["name"]: extract_patches(volume, candidates)})[0]
    top = candidates[int(np.argmax(score[:, 0]))]
    _, row, col, radius, _ = max(nodule_centres(case, volume), key=lambda m: m[3])
    assert np.hypot(top.row - row, top.col - col) <= radius + 4
    # The calibrated series score is called positive at the card's operating point (no longer a saturated 0.99+).
    assert float(score.max()) >= bundle["threshold"]
