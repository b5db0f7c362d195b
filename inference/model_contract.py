"""A model version's ONNX file held to its ``bundle.json``, when a bundle is registered and when a version is loaded.

A file that is not the model its bundle describes (another input size or type, a missing output, raw logits instead of
a probability, an operating point outside [0, 1]) had been registered without a word and then failed every study of
its task with ONNX Runtime's message (or, with an operating point of ``67``, called every study negative). It is now
refused with the reason: ``medscreen models register-shipped`` says so in one line, and a registered version that
fails the check is not loaded (``inference.champions``), named on ``/healthz`` and in each job's reason.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnxruntime as ort

from datasets.preprocess import PreprocessSpec
from inference.errors import BundleInvalid, OnnxUnreadable

__all__ = ["check_contract", "check_declared_outputs", "check_threshold", "open_session"]

# ONNX Runtime's names of the tensor types a bundle may declare (``input.dtype``, numpy's names).
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
}


def open_session(path: str, *, intra_op_threads: int = 1) -> ort.InferenceSession:
    """The ONNX Runtime session of ``path``; OnnxUnreadable when the file is not a model ONNX Runtime can run (a
    truncated or corrupt file, an operator it lacks)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own classes (Fail, InvalidGraph, ...)
        raise OnnxUnreadable(f"model.onnx cannot be opened by ONNX Runtime: {type(exc).__name__}: {exc}") from exc


def check_threshold(value: Any) -> float:
    """The operating point as a probability in [0, 1]; BundleInvalid otherwise (a percentage, a typo, NaN)."""
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        raise BundleInvalid(f"the operating point {value!r} is not a number") from None
    if not math.isfinite(threshold) or not 0.0 <= threshold <= 1.0:
        raise BundleInvalid(f"the operating point {value!r} is not a probability in [0, 1]")
    return threshold


def _declared_input(bundle: dict[str, Any]) -> tuple[str, list[int], str]:
    spec = bundle.get("input")
    if not isinstance(spec, dict):
        raise BundleInvalid("bundle.json has no 'input' (name, shape, dtype)")
    name, shape, dtype = spec.get("name"), spec.get("shape"), spec.get("dtype")
    if not isinstance(name, str) or not name:
        raise BundleInvalid("bundle.json 'input' has no name")
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and (d > 0 or d == -1) for d in shape):
        raise BundleInvalid(f"bundle.json 'input' shape {shape!r} is not a list of sizes (-1 for the batch)")
    if dtype not in _ORT_TYPES.values():
        raise BundleInvalid(f"bundle.json 'input' dtype {dtype!r} is not one of {', '.join(sorted(set(_ORT_TYPES.values())))}")
    return name, shape, str(dtype)


def check_declared_outputs(bundle: dict[str, Any], session: ort.InferenceSession) -> None:
    """Refuse (BundleInvalid) a bundle whose ``outputs`` are not the graph's: each declared output must be one of
    model.onnx's with its rank and fixed sizes (-1 matches any). They become the registered version's MLflow signature
    and the card's description: a retrained chest version had declared an 8x8 heat-map where its graph gives 14x14.
    Checked at registration only, so that a version registered before this check still loads."""
    declared = bundle.get("outputs")
    if not isinstance(declared, list) or not declared:
        raise BundleInvalid("bundle.json has no 'outputs' (name and shape of each)")
    graph = {o.name: list(o.shape) for o in session.get_outputs()}
    for output in declared:
        name, shape = (output.get("name"), output.get("shape")) if isinstance(output, dict) else (None, None)
        if name not in graph:
            raise BundleInvalid(f"bundle.json declares output {name!r}; model.onnx has {sorted(graph)}")
        actual = graph[name]
        if not isinstance(shape, list) or len(shape) != len(actual) or any(
            isinstance(a, int) and a > 0 and d != -1 and a != d for a, d in zip(actual, shape, strict=True)
        ):
            raise BundleInvalid(f"model.onnx output {name!r} has shape {actual}; bundle.json declares {shape}")


def check_contract(bundle: Any, session: ort.InferenceSession, threshold: Any) -> None:
    """Refuse (BundleInvalid) a model whose ONNX graph is not the one ``bundle`` describes, or whose score on a blank
    input of the declared shape is not a probability. ``threshold``: the operating point the version is served at."""
    if not isinstance(bundle, dict) or not bundle:
        raise BundleInvalid("the version carries no bundle.json (its MLmodel metadata has no 'bundle')")
    check_threshold(threshold)
    if not isinstance(bundle.get("preprocess"), dict):
        raise BundleInvalid("bundle.json has no 'preprocess'")
    try:
        PreprocessSpec.from_dict(bundle["preprocess"])
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise BundleInvalid(f"bundle.json 'preprocess' cannot be used: {type(exc).__name__}: {exc}") from exc
    name, shape, dtype = _declared_input(bundle)
    inputs = session.get_inputs()
    if [i.name for i in inputs] != [name]:
        raise BundleInvalid(f"model.onnx takes {[i.name for i in inputs]}; bundle.json declares one input {name!r}")
    model_dtype = _ORT_TYPES.get(inputs[0].type, inputs[0].type)
    if model_dtype != dtype:
        raise BundleInvalid(f"model.onnx input {name!r} is {model_dtype}; bundle.json declares {dtype}")
    model_shape = list(inputs[0].shape)
    if len(model_shape) != len(shape) or any(
        isinstance(m, int) and m > 0 and d != -1 and m != d for m, d in zip(model_shape, shape, strict=True)
    ):
        raise BundleInvalid(f"model.onnx input {name!r} has shape {model_shape}; bundle.json declares {shape}")
    outputs = [o.name for o in session.get_outputs()]
    score_output = bundle.get("score_output") or outputs[0]
    if score_output not in outputs:
        raise BundleInvalid(f"model.onnx has no output {score_output!r} (it has {outputs})")
    localisation = bundle.get("localisation") or {}
    if localisation.get("kind") == "heatmap" and localisation.get("output") not in outputs:
        raise BundleInvalid(f"model.onnx has no heat-map output {localisation.get('output')!r} (it has {outputs})")
    blank = np.zeros([1 if d == -1 else d for d in shape], dtype=dtype)
    try:
        values = session.run([score_output], {name: blank})[0]
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's own classes, as above
        raise BundleInvalid(f"model.onnx does not run on a blank input of shape {list(blank.shape)}: "
                            f"{type(exc).__name__}: {exc}") from exc
    scores = np.asarray(values, dtype=np.float64).reshape(1, -1)
    index = int(bundle.get("score_index", 0))
    if not 0 <= index < scores.shape[1]:
        raise BundleInvalid(f"bundle.json score_index {index} is past model.onnx's {scores.shape[1]} scores")
    score = float(scores[0, index])
    if not math.isfinite(score) or not 0.0 <= score <= 1.0:
        raise BundleInvalid(f"model.onnx scores a blank input {score!r}: its {score_output!r} output is not a "
                            "probability in [0, 1] (raw logits?)")
