"""Every image and CT candidate a model scores must be a probability, not only the study's best: a study takes its
most suspicious image, and a NaN among them had been passed over."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inference.shipped_models import SHIPPED_MODELS_DIR
from tests.inference.conftest import INFERENCE_FIXTURES

DX_CHEST = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"


def _sqrt_of_mean_minus(offset: float, path: Path, size: int) -> None:
    """A model scoring sqrt(mean(image) - offset): a probability for a bright film, NaN for a darker one, as a broken
    version (an overflow in half precision, a division by a near-zero norm) gives on some films only."""
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image"], ["mean"], keepdims=0),
            helper.make_node("Sub", ["mean", "offset"], ["shifted"]),
            helper.make_node("Sqrt", ["shifted"], ["root"]),
            helper.make_node("Reshape", ["root", "to"], ["score"]),
        ],
        "nan-on-dark-films",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, size, size])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [1, 1])],
        [helper.make_tensor("offset", TensorProto.FLOAT, [], [offset]), helper.make_tensor("to", TensorProto.INT64, [2], [1, 1])],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_a_film_the_model_scores_nan_fails_the_study_whatever_its_place(tmp_path: Path) -> None:
    """A study with a repeated exposure takes its most suspicious film: a NaN film after a valid one was passed over
    by max() (NaN compares false), so the study was called on the other film alone, as if the NaN film were normal.
    Only a NaN on the first film was refused."""
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    from datasets.preprocess import PreprocessSpec, prepare_image
    from inference.assemble import decode
    from inference.champions import LoadedModel
    from inference.errors import CouldNotScore
    from inference.model_contract import open_session
    from inference.scorers import score_task

    bundle = json.loads((SHIPPED_MODELS_DIR / "chest-xray" / "bundle.json").read_text())
    bundle.pop("localisation", None)
    size = bundle["input"]["shape"][-1]
    films = [dcmread(DX_CHEST), dcmread(DX_CHEST)]
    pixels = films[1].pixel_array.copy()
    pixels[: pixels.shape[0] // 2] = pixels.min()  # the upper half blank: another mean once rescaled
    films[1].PixelData, films[1].SOPInstanceUID = pixels.tobytes(), generate_uid()
    spec = PreprocessSpec.from_dict(bundle["preprocess"])
    means = [float(prepare_image(decode(ds, apply_voi=True), spec).mean()) for ds in films]
    assert abs(means[0] - means[1]) > 0.05
    dark, bright = sorted(films, key=lambda ds: means[films.index(ds)])
    _sqrt_of_mean_minus(sum(means) / 2, tmp_path / "model.onnx", size)
    model = LoadedModel("chest-xray", "chest-xray", "9", None, 0.5, bundle, open_session(str(tmp_path / "model.onnx")))
    for first, second in ((bright, dark), (dark, bright)):
        first.InstanceNumber, second.InstanceNumber = 1, 2
        with pytest.raises(CouldNotScore, match="outside \\[0, 1\\]: nan"):
            score_task("chest-xray", model, [first, second], min_ct_slices=16)
