"""Latency of each shipped model: ONNX Runtime vs PyTorch eager, per image (X-ray, mammogram) and per CT series.

    python benchmarks/inference.py [--threads 2] [--repeats 50]

Both back-ends run the same architecture on the same input with the same thread count. PyTorch
runs the network definition from ``models.networks`` with freshly initialised weights (the
bundles ship ONNX only); weights do not change the arithmetic, so latency is comparable. The CT
line times the whole series path: candidate finding (numpy, identical for both) + patch scoring.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from datasets.dicom_series import Volume

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _time_pair(first: Callable[[], object], second: Callable[[], object], repeats: int, warmup: int = 3) -> list[tuple[float, float]]:
    """(median, p90) ms of each callable, alternating them so both see the same background load."""
    for _ in range(warmup):
        first()
        second()
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((first, samples[0]), (second, samples[1])):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1000)
    result = []
    for out in samples:
        out.sort()
        result.append((statistics.median(out), out[int(0.9 * (len(out) - 1))]))
    return result


def _ct_volume() -> Volume:
    from datasets.lidc import load_lidc

    shared = REPO.parent / "shared" / "data" / "ct" / "lidc"
    root = shared if shared.is_dir() else REPO / "tests" / "fixtures" / "datasets" / "lidc"
    return load_lidc(root)[0].volume()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    from datasets.ct_candidates import extract_patches, find_candidates
    from models.networks import ScoreAndHeatmap, build_network

    torch.set_num_threads(args.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    rows = []
    for task in ("chest-xray", "mammography", "ct-chest"):
        folder = args.models_dir / task
        if not (folder / "model.onnx").is_file():
            print(f"{task}: no shipped bundle, skipped")
            continue
        bundle = json.loads((folder / "bundle.json").read_text())
        session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        model = ScoreAndHeatmap(build_network(task)).eval()
        name = bundle["input"]["name"]
        rng = np.random.default_rng(0)
        if task == "ct-chest":
            volume = _ct_volume()
            started = time.perf_counter()
            for _ in range(3):
                find_candidates(volume)
            candidates_ms = (time.perf_counter() - started) * 1000 / 3
            patches = extract_patches(volume, find_candidates(volume))
            unit = f"series ({volume.hu.shape[0]} slices, {len(patches)} candidates)"
            x = patches
        else:
            shape = [1, *bundle["input"]["shape"][1:]]
            x = rng.random(shape, dtype=np.float32)
            candidates_ms = 0.0
            unit = "image " + "x".join(str(v) for v in shape[2:])
        tensor = torch.from_numpy(x)

        def run_torch(model: torch.nn.Module = model, tensor: torch.Tensor = tensor) -> object:
            with torch.inference_mode():
                return model(tensor)

        def run_ort(session: ort.InferenceSession = session, feed: dict = {name: x}) -> object:  # noqa: B006
            return session.run(None, feed)

        (ort_ms, ort_p90), (torch_ms, torch_p90) = _time_pair(run_ort, run_torch, args.repeats)
        rows.append((task, unit, ort_ms + candidates_ms, ort_p90 + candidates_ms, torch_ms + candidates_ms, torch_p90 + candidates_ms, candidates_ms))

    print(f"ONNX Runtime {ort.__version__} vs PyTorch {torch.__version__} eager, {args.threads} threads, median of {args.repeats} runs (ms)")
    print(f"{'model':<12} {'per':<34} {'ORT':>8} {'ORT p90':>8} {'torch':>8} {'t p90':>8} {'torch/ORT':>9}")
    for task, unit, o, op, t, tp, cand in rows:
        print(f"{task:<12} {unit:<34} {o:8.2f} {op:8.2f} {t:8.2f} {tp:8.2f} {t / o:8.2f}x")
        if cand:
            model_only = f"model only: ORT {o - cand:.2f} ms, torch {t - cand:.2f} ms ({(t - cand) / (o - cand):.2f}x); candidates {cand:.1f} ms"
            print(f"{'':<12} {model_only}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
