"""Patient-level splits: every image of one patient lands on the same side."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["patient_split"]


def patient_split(
    patient_ids: Sequence[str],
    labels: Sequence[int],
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
