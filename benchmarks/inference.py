"""Latency of each shipped model bundle on ONNX Runtime, per modality: the model alone and the whole scorer.

    nice -n 10 python benchmarks/inference.py [--threads 2] [--repeats 30]

The shipped bundles are fold ensembles (``models/<task>/model.onnx``: every fold network and the
calibration in one graph), so this times exactly what the worker runs. For each task, on real studies
wrapped as a PACS sends them (a Kermany film as DX, a MIAS pair as MG, an LIDC slab as it is stored):

- ``model``: one ``InferenceSession.run`` on the prepared input (one film; one mammography view; every
  candidate patch of the CT series, in the scorer's batches of 64);
- ``scorer``: ``inference.scorers.score_task`` on the decoded datasets: pixel decoding, preprocessing, the
  organ mask (lung fields, breast), the model (each view for MG), the heat-map and the localisation.

Reading files, routing, the SR and the write-back are not included (``benchmarks/time_to_result.py``
measures a study end to end). PyTorch is no longer compared: only ONNX files ship, and the fold
weights of the shipped ensembles live in the training store, not in a clone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.percentiles import percentile  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures" / "datasets"


def _timed(fn: Callable[[], object], repeats: int, warmup: int = 3) -> tuple[float, float]:
    """(median, p90) milliseconds; the p90 by nearest rank (:mod:`benchmarks.percentiles`)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), percentile(samples, 90)


def _study(task: str, folder: Path, shared: Path) -> tuple[list[Any], str]:
    """A real study of ``task`` as pydicom datasets, and what it is."""
    from pydicom import dcmread

    from benchmarks.study_factory import wrap_mammogram, wrap_radiograph

    if task == "chest-xray":
        film = FIXTURES / "kermany" / "train" / "PNEUMONIA" / "person1000_bacteria_2931.jpeg"
        return [dcmread(wrap_radiograph(film, folder / "dx.dcm"))], "DX film 224x224 (Kermany)"
    if task == "mammography":
        root = shared / "mammography" / "mias" if (shared / "mammography" / "mias").is_dir() else FIXTURES / "mias"
        paths = [wrap_mammogram(root / f"mdb00{n}.png", folder / f"mg{n}.dcm", laterality=side, study_uid="1.2.826.0.1.3680043.8.498.1")
                 for n, side in ((1, "L"), (2, "R"))]
        return [dcmread(p) for p in paths], "MG study, 2 views 1024x1024 (MIAS)"
    slab = shared / "ct" / "lidc" / "small" / "LIDC-IDRI-0001"
    root = slab if slab.is_dir() else FIXTURES / "lidc" / "small" / "LIDC-IDRI-0001"
    datasets = [dcmread(p) for p in sorted(root.rglob("*.dcm"))]
    return datasets, f"CT series, {len(datasets)} slices 512x512 (LIDC)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (MEDSCREEN_ORT_THREADS)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("MEDSCREEN_SHARED_DATA", REPO.parent / "shared" / "data")),
                        help="../shared/data (MIAS films, LIDC slabs); the test fixtures stand in where it is missing")
    args = parser.parse_args()

    import onnxruntime as ort

    from datasets.ct_candidates import extract_patches, find_candidates
    from datasets.dicom_series import volume_from_datasets
    from datasets.preprocess import PreprocessSpec, dicom_to_array, prepare_image
    from inference.champions import LoadedModel
    from inference.scorers import score_task

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in ("chest-xray", "mammography", "ct-chest"):
            folder = args.models_dir / task
            if not (folder / "model.onnx").is_file():
                print(f"{task}: no shipped bundle, skipped")
                continue
            bundle = json.loads((folder / "bundle.json").read_text())
            session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
            model = LoadedModel(task, task, "shipped", None, float(bundle["threshold"]), bundle, session)
            datasets, what = _study(task, Path(tmp) / task, args.data)
            if task == "ct-chest":
                patches = extract_patches(volume := volume_from_datasets(datasets), find_candidates(volume))
                x, unit = patches, f"{len(patches)} patches"
                batches = [x[i : i + 64] for i in range(0, len(x), 64)]
            else:
                x = prepare_image(dicom_to_array(datasets[0]), PreprocessSpec.from_dict(bundle["preprocess"]))
                unit, batches = "1 image " + "x".join(str(v) for v in x.shape[2:]), [x]
            folds = next((o["shape"][-1] for o in bundle["outputs"] if o["name"] == "fold_scores"), 1)

            def run_model(batches: list[np.ndarray] = batches, name: str = bundle["input"]["name"], session: Any = session) -> object:
                return [session.run(None, {name: b}) for b in batches]

            def run_scorer(task: str = task, model: LoadedModel = model, datasets: list[Any] = datasets) -> object:
                return score_task(task, model, datasets, min_ct_slices=1)

            model_ms = _timed(run_model, args.repeats)
            scorer_ms = _timed(run_scorer, max(5, args.repeats // 3))
            rows.append((task, f"{folds}-fold ensemble", what, unit, model_ms, scorer_ms))

    print(f"Shipped bundles on ONNX Runtime {ort.__version__}, {args.threads} intra-op threads, CPU; "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs at the start")
    print(f"{'model':<12} {'bundle':<16} {'study':<36} {'model input':<18} {'model ms':>9} {'p90':>7} {'scorer ms':>10} {'p90':>7}")
    for task, kind, what, unit, (m50, m90), (s50, s90) in rows:
        print(f"{task:<12} {kind:<16} {what:<36} {unit:<18} {m50:9.1f} {m90:7.1f} {s50:10.1f} {s90:7.1f}")
    end = os.getloadavg()
    print(f"load average {end[0]:.1f} {end[1]:.1f} {end[2]:.1f} at the end (median of {args.repeats} model runs, "
          f"{max(5, args.repeats // 3)} scorer runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
