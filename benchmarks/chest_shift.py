"""How the chest model's out-of-fold figures move under a new site's acquisition, and how much of its
score comes from outside the lungs, measured from a shipped bundle on the Kermany development films.

    python benchmarks/chest_shift.py --data ../shared/data [--model models/chest-xray] [--json]

Each development film is scored by the fold network that did not train on it (the bundle's
``fold_scores`` output and the fold plan in ``metrics.json``: the card's out-of-fold figures), after one
perturbation at a time. Rows:

* acquisition shifts another hospital's films show: JPEG re-encoded at quality 30, gamma 0.7 and 1.4
  (processing curve), Gaussian blur (a softer detector), noise, the film zoomed out 15% inside a black
  border (wider collimation) and zoomed in 15% (tighter);
* shortcut probes: the central ellipse, where the lungs lie on a centred frontal film, blanked, so that
  only the periphery (markers, shoulders, abdomen, cropping) is left to score from; and its converse,
  only the ellipse kept. A model that reads the lungs scores the periphery-only films near chance.

Printed per row: AUROC (95% patient-bootstrap interval), and sensitivity and specificity at the
bundle's own threshold (a shift that moves scores shows as a specificity that falls at that threshold,
which is what a new site saw). None of this is the evaluation half: a shift here is simulated, so the
figures bound what it does, they do not predict another hospital.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

Perturbation = Callable[[np.ndarray], np.ndarray]


def _jpeg(quality: int) -> Perturbation:
    from training.augment import jpeg_roundtrip  # the training augmentation's own re-encoding

    return lambda image: jpeg_roundtrip(image, quality)


def _gamma(value: float) -> Perturbation:
    return lambda image: np.clip(image, 0, 1) ** value


def _blur(sigma_fraction: float) -> Perturbation:
    from scipy import ndimage

    return lambda image: ndimage.gaussian_filter(image, sigma=sigma_fraction * image.shape[0])


def _noise(std: float, seed: int) -> Perturbation:
    rng = np.random.default_rng(seed)
    return lambda image: np.clip(image + rng.normal(0, std, image.shape).astype(np.float32), 0, 1)


def _zoom(factor: float) -> Perturbation:
    """factor < 1: the film shrunk inside a black border; > 1: its centre enlarged to the full size."""
    from datasets.preprocess import resize

    def apply(image: np.ndarray) -> np.ndarray:
        rows, cols = image.shape
        if factor < 1:
            small = resize(image, (round(rows * factor), round(cols * factor)))
            out = np.zeros_like(image)
            top, left = (rows - small.shape[0]) // 2, (cols - small.shape[1]) // 2
            out[top : top + small.shape[0], left : left + small.shape[1]] = small
            return out
        keep_r, keep_c = round(rows / factor), round(cols / factor)
        top, left = (rows - keep_r) // 2, (cols - keep_c) // 2
        return resize(image[top : top + keep_r, left : left + keep_c], (rows, cols))

    return apply


def _ellipse(keep_inside: bool) -> Perturbation:
    from datasets.lung_fields import central_ellipse

    def apply(image: np.ndarray) -> np.ndarray:
        inside = central_ellipse(image.shape)
        return np.where(inside if keep_inside else ~inside, image, 0.0).astype(np.float32)

    return apply


ROWS: dict[str, Callable[[int], Perturbation | None]] = {
    "as developed": lambda seed: None,
    "JPEG quality 30": lambda seed: _jpeg(30),
    "gamma 0.7": lambda seed: _gamma(0.7),
    "gamma 1.4": lambda seed: _gamma(1.4),
    "blur (sigma 0.5% of the side)": lambda seed: _blur(0.005),
    "noise (sd 0.03)": lambda seed: _noise(0.03, seed),
    "zoomed out 15% (black border)": lambda seed: _zoom(0.85),
    "zoomed in 15%": lambda seed: _zoom(1.15),
    "periphery only (central ellipse blanked)": lambda seed: _ellipse(False),
    "central ellipse only": lambda seed: _ellipse(True),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("MEDSCREEN_SHARED_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--model", type=Path, default=REPO / "models" / "chest-xray")
    parser.add_argument("--limit", type=int, default=None, help="at most this many films (seeded sample; default all 5,216)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from datasets.chest_xray import load_kermany
    from datasets.preprocess import PreprocessSpec, prepare_image, read_image_file
    from datasets.splits import patient_folds
    from training.card_figures import run_ensemble
    from training.metrics import evaluate_binary

    bundle = json.loads((args.model / "bundle.json").read_text())
    plan = json.loads((args.model / "metrics.json").read_text())["cross_validation"]
    threshold = float(bundle["threshold"])
    spec = PreprocessSpec.from_dict(bundle["preprocess"])
    items = load_kermany(args.data / "chest-xray" / "kermany")
    labels = np.array([i.label for i in items])
    groups = np.array([i.patient_id for i in items])
    # The fold plan is over all films; a --limit sample keeps each film's own fold.
    folds = np.array(patient_folds(list(groups), list(labels), int(plan["k"]), int(plan["seed"])))
    chosen = np.arange(len(items))
    if args.limit and args.limit < len(items):
        chosen = np.sort(np.random.default_rng(0).choice(len(items), args.limit, replace=False))
    started = time.perf_counter()
    x = np.stack([prepare_image(read_image_file(items[i].path), spec)[0] for i in chosen])
    rows: list[dict[str, Any]] = []
    for name, make in ROWS.items():
        perturb = make(0)
        shifted = x if perturb is None else np.stack([perturb(image[0])[None] for image in x]).astype(np.float32)
        _, fold_scores = run_ensemble(args.model / "model.onnx", shifted, input_name=bundle["input"]["name"])
        oof = fold_scores[np.arange(len(chosen)), folds[chosen]]
        m = evaluate_binary(labels[chosen], oof, threshold=threshold, seed=0, groups=groups[chosen])
        rows.append({"shift": name, "auroc": round(m.auroc, 4), "auroc_ci": [round(m.auroc_ci_low, 4), round(m.auroc_ci_high, 4)],
                     "sensitivity": round(m.sensitivity, 4), "specificity": round(m.specificity, 4)})
    result = {"model": str(args.model), "version": bundle.get("version"), "input": spec.size, "threshold": threshold,
              "films": len(chosen), "seconds": round(time.perf_counter() - started, 1), "rows": rows}
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return 0
    sys.stdout.write(f"{args.model} ({spec.size[0]} px), {len(chosen)} films out of fold, threshold {threshold:.3f}\n")
    sys.stdout.write(f"{'shift':<44}{'AUROC (95% CI)':<24}{'sens':>7}{'spec':>7}\n")
    for row in rows:
        ci = f"{row['auroc']:.3f} ({row['auroc_ci'][0]:.3f}-{row['auroc_ci'][1]:.3f})"
        sys.stdout.write(f"{row['shift']:<44}{ci:<24}{row['sensitivity']:>7.3f}{row['specificity']:>7.3f}\n")
    sys.stdout.write(f"{result['seconds']} s\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
