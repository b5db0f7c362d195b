"""Can an adult chest X-ray model earn a right to move studies? Measured on the NIH thumbnails here.

Issue 12's rule: an adult chest model (NIH ChestX-ray14, any finding vs none) ships only if the lower 95%
bound of its patient-level cross-validated AUROC reaches 0.80 (``service.steering.development_right``);
otherwise adult films stay outside the chest model's intended use. This trains the chest architecture on
the 800 thumbnails in k folds by patient, from scratch and starting from a network first trained on every
Kermany film (the only other chest films here, children with pneumonia), and reports each variant's
out-of-fold AUROC with its interval and the right it would earn. Every variant is an MLflow run of
experiment ``medscreen-chest-xray-adult``. Nothing is exported or registered: a variant that earned
``raise-only`` would become a task of its own, with its card.

    python -m training.adult_chest --data ../shared/data [--size 128] [--epochs 20] [--json]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datasets.preprocess import PreprocessSpec
from datasets.splits import patient_folds
from service.steering import RAISE_ONLY_MIN_AUROC_CI_LOW, development_right
from training.errors import TrainingInputError
from training.metrics import BinaryMetrics
from training.task_data import kermany_images, nih1000_images
from training.tasks.chest_xray import load_arrays

__all__ = ["VariantResult", "measure", "main"]

log = logging.getLogger(__name__)

TASK = "chest-xray-adult"
# A triage flag for adults is held to the paediatric model's operating rule.
MIN_SENSITIVITY = 0.95
VARIANTS = ("scratch", "kermany-init")


@dataclass
class VariantResult:
    variant: str
    metrics: BinaryMetrics
    right: dict[str, str]
    cpu_seconds: float
    wall_seconds: float
    run_id: str

    def to_dict(self) -> dict[str, Any]:
        m = self.metrics
        return {"variant": self.variant, "n": m.n, "n_positive": m.n_positive, "auroc": m.auroc, "auroc_ci": [m.auroc_ci_low, m.auroc_ci_high],
                "threshold": m.threshold, "sensitivity": m.sensitivity, "specificity": m.specificity, "right": self.right,
                "cpu_seconds": round(self.cpu_seconds), "wall_seconds": round(self.wall_seconds), "mlflow_run_id": self.run_id}


def _pretrained(kermany_x: np.ndarray, kermany_y: np.ndarray, *, epochs: int, seed: int) -> Any:
    """The chest network trained on every Kermany film: the starting point of the ``kermany-init`` folds."""
    from models.networks import build_network
    from training.augment import AcquisitionShift
    from training.engine import ArraySet, fit, seed_everything

    seed_everything(seed)
    network = build_network("chest-xray")
    fit(network, [ArraySet(kermany_x, kermany_y, batch_size=32)], epochs=epochs, lr=2e-3, seed=seed, transform=AcquisitionShift(seed),
        validate=lambda _: {}, select_best=False, desc="kermany pretraining")
    return network


def measure(
    data_dir: Path, tracking_uri: str, *, size: int = 128, epochs: int = 20, pretrain_epochs: int = 4, folds: int = 5, seed: int = 0,
    variants: Sequence[str] = VARIANTS, cache_dir: Path | None = None, limit: int | None = None,
) -> list[VariantResult]:
    """Each variant's out-of-fold figures on the NIH thumbnails (``limit`` images per class, for tests)."""
    import mlflow
    import torch

    from models.networks import build_network
    from training.augment import AcquisitionShift
    from training.crossval import cross_validate, fit_platt
    from training.engine import ArraySet, fit, predict, seed_everything
    from training.metrics import evaluate_binary
    from training.publish import training_run

    spec = PreprocessSpec(size=(size, size), window=None, percentiles=(0.5, 99.5))
    items = nih1000_images(data_dir)
    if limit:
        items = [i for label in (0, 1) for i in [j for j in items if j.label == label][:limit]]
    x = load_arrays(items, cache_dir, f"nih1000-{size}", spec)
    labels = np.array([i.label for i in items])
    groups = np.array([i.patient_id for i in items])
    fold_of = patient_folds(list(groups), list(labels), folds, seed)
    start: Any = None
    results = []
    for variant in variants:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
        params = {"task": TASK, "variant": variant, "size": size, "epochs": epochs, "folds": folds, "seed": seed, "lr": 1e-3,
                  "n_images": len(items), "n_patients": len(set(groups.tolist())), "limit": limit,
                  "pretrain_epochs": pretrain_epochs if variant == "kermany-init" else 0, "torch_threads": torch.get_num_threads()}
        wall, cpu = time.monotonic(), time.process_time()
        with training_run(tracking_uri, TASK, params) as run:
            if variant == "kermany-init" and start is None:
                kermany = kermany_images(data_dir)
                if limit:
                    kermany = [i for label in (0, 1) for i in [j for j in kermany if j.label == label][:limit]]
                start = _pretrained(load_arrays(kermany, cache_dir, f"kermany-{size}", spec), np.array([i.label for i in kermany]),
                                    epochs=pretrain_epochs, seed=seed)

            def train_fold(fold: int, train_idx: np.ndarray, test_idx: np.ndarray, initial: Any = start if variant == "kermany-init" else None,
                           variant: str = variant) -> tuple[Any, list[dict[str, float]]]:
                seed_everything(seed + fold)
                network = copy.deepcopy(initial) if initial is not None else build_network("chest-xray")
                result = fit(network, [ArraySet(x[train_idx], labels[train_idx], batch_size=32)], epochs=epochs, lr=1e-3, seed=seed + fold,
                             transform=AcquisitionShift(seed + fold), validate=lambda _: {}, select_best=False,
                             on_epoch=lambda e, m: mlflow.log_metrics({f"fold{fold}.{k}": v for k, v in m.items()}, step=e),
                             desc=f"{variant} fold {fold + 1}/{folds}")
                return network, result.history

            cv = cross_validate(fold_of, train_fold, lambda net, idx: predict(net, x[idx], logits=True))
            # Platt on the out-of-fold logits: monotone (the AUROC is the logits'), and the threshold rule wants probabilities.
            slope, intercept = fit_platt(cv.oof_logits[:, 0], labels)
            scores = 1.0 / (1.0 + np.exp(-(slope * cv.oof_logits[:, 0] + intercept)))
            metrics = evaluate_binary(labels, scores, min_sensitivity=MIN_SENSITIVITY, seed=seed, groups=groups)
            right = development_right(metrics.auroc_ci_low, metrics.n, metrics.n_positive,
                                      validated_on=f"{metrics.n} NIH adult thumbnails, {folds}-fold cross-validated by patient")
            mlflow.log_metrics({"val_auroc": metrics.auroc, "val_auroc_ci_low": metrics.auroc_ci_low, "val_auroc_ci_high": metrics.auroc_ci_high,
                                "sensitivity": metrics.sensitivity, "specificity": metrics.specificity})
            mlflow.set_tags({"steering": right["right"], "steering_why": right["why"]})
            results.append(VariantResult(variant, metrics, right, time.process_time() - cpu, time.monotonic() - wall, run.info.run_id))
            log.info("%s: AUROC %.3f (%.3f-%.3f), %s", variant, metrics.auroc, metrics.auroc_ci_low, metrics.auroc_ci_high, right["right"])
    return results


def _table(results: Sequence[VariantResult], floor: float) -> str:
    lines = [f"| variant | AUROC out of fold (95% CI, patients resampled) | specificity at sensitivity >= {MIN_SENSITIVITY} | right (floor {floor:.2f}) | CPU s |",
             "|---|---|---|---|---|"]
    for r in results:
        m = r.metrics
        lines.append(f"| {r.variant} | {m.auroc:.3f} ({m.auroc_ci_low:.3f}-{m.auroc_ci_high:.3f}) | {m.specificity:.3f} (sensitivity {m.sensitivity:.3f}) "
                     f"| `{r.right['right']}` | {r.cpu_seconds:.0f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from service.settings import Settings

    parser = argparse.ArgumentParser(prog="python -m training.adult_chest", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="the shared data folder (default ../shared/data)")
    parser.add_argument("--size", type=int, default=128, help="input size in pixels (the thumbnails are 64 px; default 128)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--pretrain-epochs", type=int, default=4, help="epochs on every Kermany film before the kermany-init folds")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", action="append", choices=VARIANTS, help="repeatable; default both")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared machine)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    settings = Settings()
    try:
        results = measure(args.data, settings.resolved_mlflow_tracking_uri, size=args.size, epochs=args.epochs, pretrain_epochs=args.pretrain_epochs,
                          folds=args.folds, seed=args.seed, variants=args.variant or VARIANTS, cache_dir=settings.home / "cache" / "training")
    except TrainingInputError as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")
    if args.json:
        sys.stdout.write(json.dumps({"floor": RAISE_ONLY_MIN_AUROC_CI_LOW, "variants": [r.to_dict() for r in results]}, indent=2) + "\n")
    else:
        sys.stdout.write(_table(results, RAISE_ONLY_MIN_AUROC_CI_LOW) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
