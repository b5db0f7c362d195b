"""Patient-level splits: every image of one patient lands on the same side."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["patient_split", "patient_folds"]


def patient_split(
    patient_ids: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    val_fraction: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation), grouped by patient and stratified by the patient's highest label.

    Stratifying per patient keeps the class balance of small sets (MIAS: 85 patients) close in both
    halves; the seed makes the split reproducible.
    """
    patient_label: dict[str, int] = {}
    for pid, label in zip(patient_ids, labels, strict=True):
        patient_label[pid] = max(patient_label.get(pid, 0), int(label))
    rng = np.random.default_rng(seed)
    val_patients: set[str] = set()
    for label in sorted(set(patient_label.values())):
        group = sorted(pid for pid, lab in patient_label.items() if lab == label)
        rng.shuffle(group)
        n_val = max(1, round(len(group) * val_fraction)) if len(group) > 1 else 0
        val_patients.update(group[:n_val])
    is_val = np.array([pid in val_patients for pid in patient_ids])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def patient_folds(patient_ids: Sequence[str], labels: Sequence[int], k: int, seed: int) -> np.ndarray:
    """Fold index (0..k-1) of every item for patient-level k-fold cross-validation.

    Patients are stratified by their highest label and dealt round-robin after a seeded shuffle, so
    each fold holds about 1/k of each class and every image of a patient sits in one fold. The card
    reproduction test recomputes these folds, so the assignment must depend only on ids, labels, k, seed.
    """
    if k < 2:
        raise ValueError("k-fold cross-validation needs k >= 2")
    patient_label: dict[str, int] = {}
    for pid, label in zip(patient_ids, labels, strict=True):
        patient_label[pid] = max(patient_label.get(pid, 0), int(label))
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    offset = 0
    for label in sorted(set(patient_label.values())):
        group = sorted(pid for pid, lab in patient_label.items() if lab == label)
        rng.shuffle(group)
        for i, pid in enumerate(group):
            fold_of[pid] = (i + offset) % k
        # Continue the deal where the last class stopped so that small folds stay balanced in size.
        offset = (offset + len(group)) % k
    return np.array([fold_of[pid] for pid in patient_ids], dtype=np.int64)
