"""ONNX export and the ONNX Runtime vs PyTorch parity check that gates every shipped model."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from training.errors import ParityError

__all__ = ["export_onnx", "check_parity"]

log = logging.getLogger(__name__)


def export_onnx(
    model: torch.nn.Module,
    example: torch.Tensor,
    path: Path,
    *,
    input_name: str,
    output_names: Sequence[str],
    dynamic_batch: bool = True,
) -> Path:
    """Export ``model`` (in eval mode) with a named input and outputs; one file, weights inside."""
    model.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic_axes = {input_name: {0: "batch"}, **{name: {0: "batch"} for name in output_names}} if dynamic_batch else None
    with torch.no_grad(), warnings.catch_warnings():
        # torch marks the TorchScript exporter deprecated; it is still the one that needs no onnxscript.
        warnings.simplefilter("ignore", DeprecationWarning)
        # The TorchScript exporter writes a single self-contained file at opset 17, which every
        # ONNX Runtime >= 1.14 runs; the dynamo exporter would need onnxscript at export time.
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=17,
            dynamo=False,
        )
    return path


def check_parity(
    model: torch.nn.Module,
    onnx_path: Path,
    inputs: np.ndarray,
    *,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> float:
    """Run the same ``inputs`` through PyTorch and ONNX Runtime; raise :class:`ParityError` beyond tolerance.

    Returns the largest absolute difference over all outputs, which the run logs.
    """
    import onnxruntime as ort

    model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)))
    if isinstance(expected, torch.Tensor):
        expected = (expected,)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    actual = session.run(None, {input_name: inputs.astype(np.float32)})
    if len(actual) != len(expected):
        raise ParityError(f"ONNX model has {len(actual)} outputs, PyTorch {len(expected)}")
    worst = 0.0
    for name, want, got in zip([o.name for o in session.get_outputs()], expected, actual, strict=True):
        want_np = want.numpy()
        if want_np.shape != got.shape:
            raise ParityError(f"output {name}: ONNX shape {got.shape}, PyTorch {want_np.shape}")
        diff = float(np.max(np.abs(want_np - got))) if got.size else 0.0
        worst = max(worst, diff)
        if not np.allclose(got, want_np, atol=atol, rtol=rtol):
            raise ParityError(f"output {name}: ONNX Runtime differs from PyTorch by up to {diff:.3g} (atol {atol}, rtol {rtol})")
    log.info("onnx parity ok: max abs diff %.3g over %d inputs", worst, len(inputs))
    return worst
