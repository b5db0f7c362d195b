"""Retraining on a hospital's own confirmed cases: the folder ``medscreen export-training`` writes (de-identified
DICOM + labels CSV) in, a new registered version with the ``challenger`` alias out, so that the worker
shadow-scores it and the gate decides. Chest X-ray only for now: one whole-image film per study.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from service.lifecycle import ModelRole, Task
from service.steering import development_right
from training.errors import TrainingError, TrainingInputError

__all__ = ["retrain_from_export", "RETRAINABLE_TASKS"]

log = logging.getLogger(__name__)

RETRAINABLE_TASKS = (Task.chest_xray,)
MIN_STUDIES_PER_CLASS = 4


def _films(data_dir: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One preprocessed film per labelled study (the first instance of its first series)."""
    import pydicom

    from datasets.dicom_folder import load_dicom_folder
    from datasets.errors import DatasetError
    from datasets.preprocess import dicom_to_array, prepare_image
    from training.tasks.chest_xray import SPEC

    expected = "expected a `medscreen export-training` folder (dicom/ and labels.csv)"
    if not (data_dir / "dicom").is_dir():
        raise TrainingInputError(f"--data {data_dir} has no dicom/ folder: {expected}")
    try:
        studies = load_dicom_folder(data_dir / "dicom", data_dir / "labels.csv")
    except DatasetError as exc:
        raise TrainingInputError(f"--data {data_dir}: {exc}; {expected}") from exc
    images, labels, patients = [], [], []
    for study in studies:
        first = next(iter(study.series.values()))[0]
        images.append(prepare_image(dicom_to_array(pydicom.dcmread(first)), SPEC)[0])
        labels.append(study.label)
        patients.append(study.patient_id)
    if not images:
        raise TrainingInputError(f"--data {data_dir} holds no labelled study (no DICOM study under dicom/ has a row in labels.csv); {expected}")
    return np.stack(images).astype(np.float32), np.asarray(labels), patients


def retrain_from_export(
    task: str,
    data_dir: Path,
    out_dir: Path,
    tracking_uri: str,
    *,
    epochs: int = 6,
    seed: int = 0,
    alias: str = ModelRole.challenger,
) -> dict[str, Any]:
    """Train ``task`` on the export, write and register the bundle, point ``alias`` at the new version."""
    if task not in RETRAINABLE_TASKS:
        raise TrainingError(f"retraining from an export supports {', '.join(RETRAINABLE_TASKS)}, not {task}")
    import mlflow
    import torch  # noqa: F401  (imported here: serving never loads this module's torch)
    from mlflow.tracking import MlflowClient

    from datasets.splits import patient_split
    from inference.shipped_models import log_onnx_bundle
    from models.networks import ScoreAndHeatmap, build_network
    from training.augment import build_augmentation
    from training.engine import ArraySet, fit, predict, seed_everything
    from training.metrics import evaluate_binary
    from training.publish import Evaluation, TaskReport, training_run, write_bundle
    from training.tasks.chest_xray import MIN_SENSITIVITY, SPEC

    seed_everything(seed)
    x, y, patients = _films(Path(data_dir))
    counts = np.bincount(y, minlength=2)
    if counts.min() < MIN_STUDIES_PER_CLASS:
        raise TrainingError(f"the export has {counts[1]} positive and {counts[0]} negative studies; need {MIN_STUDIES_PER_CLASS} of each")
    train_idx, val_idx = patient_split(patients, y, 0.25, seed)
    params = {
        "task": task, "epochs": epochs, "seed": seed, "lr": 2e-3, "batch_size": 16, "source": "export",
        "data": str(data_dir), "n_train": len(train_idx), "n_val": len(val_idx), "image_size": list(SPEC.size),
    }
    network = build_network(task)
    x_val, y_val = x[val_idx], y[val_idx]

    def validate(model: Any) -> dict[str, float]:
        from sklearn.metrics import roc_auc_score

        scores = predict(model, x_val)[:, 0]
        return {"val_auroc": float(roc_auc_score(y_val, scores)) if len(set(y_val.tolist())) > 1 else 0.5}

    with training_run(tracking_uri, task, params) as run:
        result = fit(
            network, [ArraySet(x[train_idx], y[train_idx], batch_size=16)], epochs=epochs, lr=2e-3, seed=seed,
            transform=build_augmentation(task, seed), validate=validate,
            on_epoch=lambda e, m: mlflow.log_metrics(m, step=e), desc=f"retrain {task}",
        )
        scores = predict(network, x_val)[:, 0]
        headline = Evaluation(
            "validation", "held-out patients of the hospital's confirmed export", y_val, scores,
            evaluate_binary(y_val, scores, min_sensitivity=MIN_SENSITIVITY, seed=seed),
        )
        report = TaskReport(
            task=task,
            export_module=ScoreAndHeatmap(network).eval(),
            parity_inputs=x_val[:16],
            input_name="image",
            input_shape=[-1, 1, *SPEC.size],
            outputs=[
                {"name": "score", "shape": [-1, 1], "meaning": "probability of pneumonia (abnormal)"},
                {"name": "heatmap", "shape": [-1, 1, 8, 8], "meaning": "per-region probability (coarse localisation)"},
            ],
            preprocess={**SPEC.to_dict(), "function": "datasets.preprocess.prepare_image", "modalities": ["CR", "DX"]},
            headline=headline,
            evaluations=[headline],
            card={
                "intended_use": "Challenger retrained on this hospital's confirmed chest films; shadow-scored until the "
                "evaluation gate passes. Decision support only.",
                "data": f"`medscreen export-training` folder {data_dir}: de-identified studies with final reads as labels.",
                "split": f"Patient-level, stratified, seeded: train {len(train_idx)}, validation {len(val_idx)} studies.",
                "model": "The chest-xray architecture (`models.networks.build_network`), trained from scratch on the export.",
                "operating_point": f"Threshold for sensitivity >= {MIN_SENSITIVITY} on the held-out patients of the export.",
                "localisation": "8x8 heat map, as the shipped chest-xray model.",
                "limitations": "Validation patients come from the same hospital and period as the training ones; only the "
                "gate on new studies, shadow-scored against the champion, says whether it is better.",
                "reproduce": f"medscreen retrain --task {task} --data {data_dir} --epochs {epochs} --seed {seed}",
            },
            params=params,
            history=result.history,
            bundle_extra={"score_output": "score", "score_index": 0, "localisation": {"kind": "heatmap", "output": "heatmap"},
                          "steering": development_right(
                              headline.metrics.auroc_ci_low, headline.metrics.n, headline.metrics.n_positive,
                              validated_on=f"{len(val_idx)} held-out studies of this hospital's export")},
        )
        metrics = write_bundle(report, out_dir, run)
    registered = log_onnx_bundle(tracking_uri, out_dir, run_id=metrics["mlflow_run_id"], source="retrained")
    MlflowClient(tracking_uri, tracking_uri).set_registered_model_alias(registered.name, alias, registered.version)
    log.info("retrained %s: version %s is %s", task, registered.version, alias)
    return {"name": registered.name, "version": registered.version, "run_id": registered.run_id, "headline": metrics["headline"]}
