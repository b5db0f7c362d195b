"""Chest X-ray: pneumonia vs normal on Kermany paediatric films, whole image, 128 px."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from datasets.chest_xray import LabelledImage, load_kermany, load_nih1000
from datasets.preprocess import PreprocessSpec, prepare_image, read_image_file
from datasets.splits import patient_split
from training.cache import cached_arrays

__all__ = ["train", "SPEC"]

log = logging.getLogger(__name__)

SPEC = PreprocessSpec(size=(128, 128), window=None, percentiles=(0.5, 99.5))
TASK = "chest-xray"
# A triage flag that misses one pneumonia in ten is too lax; the ROC is steep enough to afford 0.95.
MIN_SENSITIVITY = 0.95


def _limit(items: list[LabelledImage], limit: int | None, seed: int) -> list[LabelledImage]:
    if not limit or limit >= len(items):
        return items
    rng = np.random.default_rng(seed)
    by_label = {lab: [i for i in items if i.label == lab] for lab in (0, 1)}
    picked = []
    for group in by_label.values():
        take = max(2, limit)
        picked += [group[i] for i in sorted(rng.choice(len(group), min(take, len(group)), replace=False))]
    return picked


def _load_arrays(items: list[LabelledImage], cache_dir: Path | None, name: str) -> np.ndarray:
    def build() -> dict[str, np.ndarray]:
        images = [prepare_image(read_image_file(i.path), SPEC)[0] for i in tqdm(items, desc=f"preprocess {name}", unit="img")]
        return {"x": np.stack(images).astype(np.float16)}

    key = {"name": name, "files": [str(i.path) for i in items], "spec": SPEC.to_dict(), "v": 1}
    return cached_arrays(cache_dir, key, build)["x"]


def train(data_dir: Path, out_dir: Path, tracking_uri: str, *, epochs: int, seed: int, limit: int | None, cache_dir: Path | None) -> dict[str, Any]:
    import mlflow
    import torch

    from models.networks import ScoreAndHeatmap, build_network
    from training.augment import build_augmentation
    from training.engine import ArraySet, fit, predict, seed_everything
    from training.metrics import evaluate_binary
    from training.publish import Evaluation, TaskReport, training_run, write_bundle

    seed_everything(seed)
    items = _limit(load_kermany(Path(data_dir) / "chest-xray" / "kermany"), limit, seed)
    labels = np.array([i.label for i in items])
    train_idx, val_idx = patient_split([i.patient_id for i in items], labels, 0.2, seed)
    x = _load_arrays(items, cache_dir, "kermany")
    train_set = ArraySet(x[train_idx], labels[train_idx], batch_size=32)
    x_val, y_val = x[val_idx], labels[val_idx]
    params = {
        "task": TASK, "epochs": epochs, "seed": seed, "limit": limit, "lr": 2e-3, "batch_size": 32,
        "image_size": list(SPEC.size), "n_train": len(train_idx), "n_val": len(val_idx),
        "n_train_patients": len({items[i].patient_id for i in train_idx}),
        "n_val_patients": len({items[i].patient_id for i in val_idx}),
        "architecture": "HeatmapClassifier(1->1, channels 16-32-64-128, avg pooling)",
    }
    network = build_network(TASK)
    params["parameters"] = sum(p.numel() for p in network.parameters())

    def validate(model: torch.nn.Module) -> dict[str, float]:
        from sklearn.metrics import roc_auc_score

        scores = predict(model, x_val)[:, 0]
        return {"val_auroc": float(roc_auc_score(y_val, scores)) if len(set(y_val)) > 1 else 0.5}

    with training_run(tracking_uri, TASK, params) as run:
        result = fit(
            network, [train_set], epochs=epochs, lr=2e-3, seed=seed,
            transform=build_augmentation(TASK, seed), validate=validate,
            on_epoch=lambda e, m: mlflow.log_metrics(m, step=e), desc=TASK,
        )
        mlflow.log_metrics({"best_epoch": result.best_epoch, "train_seconds": result.seconds})
        scores = predict(network, x_val)[:, 0]
        headline = Evaluation("validation", "Kermany validation patients: pneumonia vs normal", y_val, scores, evaluate_binary(y_val, scores, min_sensitivity=MIN_SENSITIVITY, seed=seed))
        evaluations = [headline]
        nih_root = Path(data_dir) / "chest-xray" / "nih1000"
        if nih_root.is_dir() and not limit:
            nih = load_nih1000(nih_root)
            x_nih = _load_arrays(nih, cache_dir, "nih1000")
            y_nih = np.array([i.label for i in nih])
            s_nih = predict(network, x_nih)[:, 0]
            evaluations.append(
                Evaluation("nih1000_external", "NIH ChestX-ray14 adults, any finding vs none (out of scope)", y_nih, s_nih,
                           evaluate_binary(y_nih, s_nih, threshold=headline.metrics.threshold, seed=seed))
            )
        report = TaskReport(
            task=TASK,
            export_module=ScoreAndHeatmap(network).eval(),
            parity_inputs=x_val[:16].astype(np.float32),
            input_name="image",
            input_shape=[-1, 1, *SPEC.size],
            outputs=[
                {"name": "score", "shape": [-1, 1], "meaning": "probability of pneumonia (abnormal)"},
                {"name": "heatmap", "shape": [-1, 1, 8, 8], "meaning": "per-region probability, 16 px cells of the 128 px input (coarse localisation)"},
            ],
            preprocess={**SPEC.to_dict(), "function": "datasets.preprocess.prepare_image", "modalities": ["CR", "DX"]},
            headline=headline,
            evaluations=evaluations,
            card=_card_text(params, headline, result.best_epoch + 1, epochs, evaluations[1] if len(evaluations) > 1 else None),
            params=params,
            history=result.history,
            bundle_extra={"score_output": "score", "score_index": 0, "localisation": {"kind": "heatmap", "output": "heatmap"}},
        )
        metrics = write_bundle(report, out_dir, run)
    return metrics


def _card_text(params: dict[str, Any], headline: Any, best_epoch: int, epochs: int, nih: Any) -> dict[str, str]:
    m = headline.metrics
    return {
        "intended_use": (
            "Triage aid for paediatric frontal chest radiographs (CR/DX): scores the probability of pneumonia "
            "(bacterial or viral) so that likely-abnormal films rise in the reading worklist. It does not "
            "diagnose, does not replace a radiologist's read, and was not trained on adults."
        ),
        "data": (
            "Kermany et al. 2018, *Identifying Medical Diagnoses and Treatable Diseases by Image-Based Deep "
            "Learning* (Cell), chest X-ray images of children aged 1-5 from Guangzhou Women and Children's "
            "Medical Center; CC BY 4.0. The development half here: 5,216 JPEGs squashed to 224x224 "
            "(1,341 normal, 3,875 pneumonia), read from `chest-xray/kermany/train`."
        ),
        "split": (
            f"Patient-level, stratified, seeded: patient ids come from the file names (`person123_*`, `IM-0115-*`, "
            f"`NORMAL2-IM-0383-*`), 20% of patients per class held out. Train {params['n_train']} images "
            f"({params['n_train_patients']} patients), validation {params['n_val']} images ({params['n_val_patients']} "
            "patients); no patient on both sides. The weights kept are those of the epoch with the best validation "
            f"AUROC (epoch {best_epoch} of {epochs}), so the validation figures are mildly optimistic."
        ),
        "model": (
            f"MONAI residual CNN (`models.networks.HeatmapClassifier`, {params['parameters']:,} parameters): strided "
            "stem, four residual stages, 1x1 conv to a logit map, average pooling; input 1x128x128 in [0, 1] "
            "(percentile 0.5-99.5 rescale after the file's VOI LUT, MONOCHROME1 inverted; `datasets.preprocess`). "
            "Trained on CPU with AdamW, one-cycle LR 2e-3, batch 32, MONAI affine/contrast/noise augmentation, "
            f"seed {params['seed']}."
        ),
        "operating_point": (
            f"Threshold {m.threshold:.3f} on `score`: the highest threshold keeping validation sensitivity >= "
            f"{MIN_SENSITIVITY:.2f} "
            f"(sensitivity {m.sensitivity:.3f}, specificity {m.specificity:.3f}). Chosen and reported on the same "
            "validation patients, so expect slightly lower figures on new data."
        ),
        "localisation": "`heatmap` (8x8): the sigmoid of the logit map before pooling; each cell covers 16x16 px of the input (about 1/8 of the film side).",
        "limitations": (
            "- Single-centre paediatric data; JPEG exports, not DICOM: a hospital's DICOM films go through the same "
            "percentile rescale, but detector, processing and positioning differ.\n"
            "- Pneumonia vs normal only: other abnormalities (effusion, pneumothorax, lines, masses) are out of scope "
            "and may score either way."
            + (
                f"\n- On adult NIH ChestX-ray14 thumbnails (any finding vs none, 64 px upsampled) the AUROC is "
                f"{nih.metrics.auroc:.3f} ({nih.metrics.auroc_ci_low:.3f}-{nih.metrics.auroc_ci_high:.3f}): "
                "it is not an adult chest X-ray model."
                if nih is not None
                else ""
            )
            + "\n- The Kermany images carry site- and label-correlated cues (text markers, cropping); part of the high "
            "AUROC may come from them, which is a known weakness of this data set."
        ),
        "reproduce": f"medscreen train chest-xray --data ../shared/data --epochs {epochs} --seed {params['seed']} --out models/chest-xray",
    }
