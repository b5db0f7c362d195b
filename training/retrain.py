"""Retraining on a hospital's own confirmed cases: the folder ``medscreen export-training`` writes (de-identified
DICOM + labels CSV) in, a new registered version with the ``challenger`` alias out, so that the worker
shadow-scores it and the gate decides. Chest X-ray only for now: one whole-image film per study.

The export is split by patient three ways (:func:`split_export`): the fitting patients train the weights (the last
epoch is kept), the operating-point patients choose the threshold, and the validation patients report the figures,
the AUROC's interval resampling patients. The validation patients choose nothing, so their figures, which the
version's steering right rests on, are not optimistic by selection.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from datasets.splits import patient_split
from service.lifecycle import ModelRole, Task
from service.steering import DeferRules, development_right
from training.errors import TrainingError, TrainingInputError

__all__ = ["retrain_from_export", "split_export", "RETRAINABLE_TASKS"]

log = logging.getLogger(__name__)

RETRAINABLE_TASKS = (Task.chest_xray,)
# The films a chest-xray retrain reads, as its bundle declares them.
MODALITIES = ("CR", "DX")
MIN_STUDIES_PER_CLASS = 4
# Shares of the patients: validation of the export, then operating point of the rest (the remainder fits the weights).
VALIDATION_FRACTION = 0.25
OPERATING_POINT_FRACTION = 0.2


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
    other_modalities: Counter[str] = Counter()
    for study in studies:
        first = pydicom.dcmread(next(iter(study.series.values()))[0])
        modality = str(first.get("Modality", "") or "none")
        if modality not in MODALITIES:
            other_modalities[modality] += 1
            continue
        images.append(prepare_image(dicom_to_array(first), SPEC)[0])
        labels.append(study.label)
        patients.append(study.patient_id)
    if other_modalities:
        # An export of another task (mammograms) had trained the chest model and become its challenger.
        found = ", ".join(f"{name} {count}" for name, count in sorted(other_modalities.items()))
        raise TrainingInputError(
            f"--data {data_dir}: {sum(other_modalities.values())} of {len(studies)} studies are not {' or '.join(MODALITIES)} "
            f"films ({found}): a chest-xray retrain takes chest radiographs only (an export of another task?)"
        )
    if not images:
        raise TrainingInputError(f"--data {data_dir} holds no labelled study (no DICOM study under dicom/ has a row in labels.csv); {expected}")
    return np.stack(images).astype(np.float32), np.asarray(labels), patients


def split_export(patients: list[str], labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Study indices (fitting, operating point, validation), each patient's studies on one side, stratified.

    Validation is the same patient-level split as before the operating-point part existed; the operating-point
    patients are then taken from the training side. Raises :class:`TrainingError` when a part would lack a class:
    its threshold or its AUROC could not be computed.
    """
    labels = np.asarray(labels)
    train_idx, val_idx = patient_split(patients, labels, VALIDATION_FRACTION, seed)
    inner_fit, inner_op = patient_split([patients[i] for i in train_idx], labels[train_idx], OPERATING_POINT_FRACTION, seed)
    parts = {"fitting": train_idx[inner_fit], "operating-point": train_idx[inner_op], "validation": val_idx}
    lacking = [name for name, idx in parts.items() if len(set(labels[idx].tolist())) < 2]
    if lacking:
        with_positive = len({patients[i] for i in np.flatnonzero(labels == 1)})
        without = len(set(patients)) - with_positive
        raise TrainingError(
            f"the export's studies come from {with_positive} patients with a positive study and {without} without; "
            f"split by patient, the {' and '.join(lacking)} part(s) would hold one class only: at least 3 patients of "
            "each are needed (fitting, operating point, validation)"
        )
    return parts["fitting"], parts["operating-point"], parts["validation"]


def retrain_from_export(
    task: str,
    data_dir: Path,
    out_dir: Path,
    tracking_uri: str,
    *,
    epochs: int = 6,
    seed: int = 0,
    alias: str = ModelRole.challenger,
    rules: DeferRules | None = None,
    scored: Mapping[str, Collection[str]] | None = None,
) -> dict[str, Any]:
    """Train ``task`` on the export, write and register the bundle, point ``alias`` at the new version.

    A registry with no version of the model gets the shipped bundle first, as champion (``rules``: the site's defer
    rules, the defaults when None), so that the challenger has a champion to be judged against: it had become version 1
    with no champion, and start-up, seeing a version, registered no shipped bundle, so the task scored nothing.
    ``shipped_first`` in the answer is that version, or None. ``scored``: the site database's models with results;
    a registry lacking one of them is not the site's, and RegistryLost is raised before anything is trained.
    """
    if task not in RETRAINABLE_TASKS:
        raise TrainingError(f"retraining from an export supports {', '.join(RETRAINABLE_TASKS)}, not {task}")
    import mlflow
    import torch  # noqa: F401  (imported here: serving never loads this module's torch)
    from mlflow.tracking import MlflowClient

    from inference.shipped_models import log_onnx_bundle
    from models.networks import ScoreAndHeatmap, build_network
    from training.augment import build_augmentation
    from training.engine import ArraySet, fit, predict, seed_everything
    from training.metrics import choose_threshold, evaluate_binary
    from training.publish import Evaluation, TaskReport, training_run, write_bundle
    from training.registry import register_shipped_first
    from training.tasks.chest_xray import HEATMAP_STRIDE, MIN_SENSITIVITY, SPEC

    seed_everything(seed)
    x, y, patients = _films(Path(data_dir))
    counts = np.bincount(y, minlength=2)
    if counts.min() < MIN_STUDIES_PER_CLASS:
        raise TrainingError(f"the export has {counts[1]} positive and {counts[0]} negative studies; need {MIN_STUDIES_PER_CLASS} of each")
    fit_idx, op_idx, val_idx = split_export(patients, y, seed)
    # After the export is read and found usable: a folder that cannot be trained on registers nothing.
    shipped = register_shipped_first(tracking_uri, task, rules=rules or DeferRules(), scored=scored)
    groups = np.asarray(patients)
    n_patients = {name: len(set(groups[idx].tolist())) for name, idx in (("fit", fit_idx), ("op", op_idx), ("val", val_idx))}
    params = {
        "task": task, "epochs": epochs, "seed": seed, "lr": 2e-3, "batch_size": 16, "source": "export",
        "data": str(data_dir), "n_train": len(fit_idx), "n_operating_point": len(op_idx), "n_val": len(val_idx),
        "n_patients": {"train": n_patients["fit"], "operating_point": n_patients["op"], "val": n_patients["val"]},
        "kept_epoch": "last", "image_size": list(SPEC.size),
    }
    network = build_network(task)
    heatmap_cells = [side // HEATMAP_STRIDE for side in SPEC.size]
    x_val, y_val = x[val_idx], y[val_idx]

    def validate(model: Any) -> dict[str, float]:
        # Logged per epoch as a learning curve only: the last epoch is kept whatever it says.
        from sklearn.metrics import roc_auc_score

        scores = predict(model, x_val)[:, 0]
        return {"val_auroc": float(roc_auc_score(y_val, scores))}

    with training_run(tracking_uri, task, params) as run:
        result = fit(
            network, [ArraySet(x[fit_idx], y[fit_idx], batch_size=16)], epochs=epochs, lr=2e-3, seed=seed,
            transform=build_augmentation(task, seed), validate=validate,
            on_epoch=lambda e, m: mlflow.log_metrics(m, step=e), desc=f"retrain {task}",
            # The validation patients report the figures; had they chosen the epoch, its AUROC would be their maximum.
            select_best=False,
        )
        threshold = choose_threshold(y[op_idx], predict(network, x[op_idx])[:, 0], min_sensitivity=MIN_SENSITIVITY)
        scores = predict(network, x_val)[:, 0]
        headline = Evaluation(
            "validation", "held-out patients of the hospital's confirmed export", y_val, scores,
            # A patient's several studies are resampled together: the steering right rests on this lower bound.
            evaluate_binary(y_val, scores, threshold=threshold, seed=seed, groups=groups[val_idx]),
        )
        report = TaskReport(
            task=task,
            export_module=ScoreAndHeatmap(network).eval(),
            parity_inputs=x_val[:16],
            input_name="image",
            input_shape=[-1, 1, *SPEC.size],
            outputs=[
                {"name": "score", "shape": [-1, 1], "meaning": "probability of pneumonia (abnormal)"},
                # The network's output stride, as the shipped chest model declares it (it had said 8x8; the graph gives 14x14).
                {"name": "heatmap", "shape": [-1, 1, *heatmap_cells], "meaning": "per-region probability (coarse localisation)"},
            ],
            preprocess={**SPEC.to_dict(), "function": "datasets.preprocess.prepare_image", "modalities": list(MODALITIES)},
            headline=headline,
            evaluations=[headline],
            card={
                "intended_use": "Challenger retrained on this hospital's confirmed chest films; shadow-scored until the "
                "evaluation gate passes. Decision support only.",
                "data": f"`medscreen export-training` folder {data_dir}: de-identified studies with final reads as labels.",
                "split": (
                    f"Patient-level, stratified, seeded, in three parts with no patient in two: fitting {len(fit_idx)} "
                    f"studies ({n_patients['fit']} patients), operating point {len(op_idx)} studies ({n_patients['op']} "
                    f"patients), validation {len(val_idx)} studies ({n_patients['val']} patients)."
                ),
                "model": (
                    "The chest-xray architecture (`models.networks.build_network`), trained from scratch on the fitting "
                    f"patients for {epochs} epochs; the last epoch's weights are kept (no epoch is chosen on any held-out "
                    "patient)."
                ),
                "metrics_note": (
                    "Validation on the held-out patients of the export. They chose neither the weights (last epoch "
                    "kept) nor the threshold (chosen on the operating-point patients), so the figures below are not "
                    "optimistic by selection."
                ),
                "intervals": (
                    "95% intervals: AUROC by 2,000 bootstrap resamples of the validation patients (all of a patient's "
                    "studies together); sensitivity and specificity by the Wilson interval over studies, which treats "
                    "a patient's several studies as independent (too narrow when patients have many)."
                ),
                "operating_point": (
                    f"Threshold {threshold:.3f}: the highest that keeps sensitivity >= {MIN_SENSITIVITY} on the "
                    f"operating-point patients ({len(op_idx)} studies, {int(y[op_idx].sum())} positive), which the "
                    "weights were not fitted on; applied unchanged to the validation patients, whose sensitivity and "
                    "specificity at it are reported above. The rule puts it at one of the lowest-scoring positives of "
                    "that part, so on a small export it varies with the split: the gate tests it on new studies."
                ),
                "localisation": (
                    f"{heatmap_cells[0]}x{heatmap_cells[1]} heat map, {HEATMAP_STRIDE} px cells of the {SPEC.size[0]} px "
                    "input, as the shipped chest-xray model."
                ),
                "limitations": "Validation patients come from the same hospital and period as the training ones; only the "
                "gate on new studies, shadow-scored against the champion, says whether it is better.",
                "reproduce": f"medscreen retrain --task {task} --data {data_dir} --epochs {epochs} --seed {seed}",
            },
            params=params,
            history=result.history,
            bundle_extra={"score_output": "score", "score_index": 0, "localisation": {"kind": "heatmap", "output": "heatmap"},
                          "steering": development_right(
                              headline.metrics.auroc_ci_low, headline.metrics.n, headline.metrics.n_positive,
                              validated_on=f"{len(val_idx)} held-out studies ({n_patients['val']} patients) of this "
                                           "hospital's export")},
        )
        metrics = write_bundle(report, out_dir, run)
    registered = log_onnx_bundle(tracking_uri, out_dir, run_id=metrics["mlflow_run_id"], source="retrained", rules=rules)
    MlflowClient(tracking_uri, tracking_uri).set_registered_model_alias(registered.name, alias, registered.version)
    log.info("retrained %s: version %s is %s", task, registered.version, alias)
    return {"name": registered.name, "version": registered.version, "run_id": registered.run_id, "headline": metrics["headline"],
            "shipped_first": shipped.version if shipped is not None else None}
