"""A hospital's own data: a folder of DICOM files plus a CSV of labels by StudyInstanceUID.

The CSV needs the columns ``StudyInstanceUID`` and ``label`` (0/1) and may carry ``PatientID``
(used for patient-level splits; the study UID stands in when absent). Files are found by content,
not suffix, since PACS exports often have none.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

from datasets.errors import LabelsError

__all__ = ["LabelledStudy", "load_dicom_folder"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledStudy:
    study_instance_uid: str
    patient_id: str
    label: int
    modality: str
    # Instances grouped by SeriesInstanceUID, each list in file-name order.
    series: dict[str, list[Path]]


def _read_labels(csv_path: Path) -> dict[str, tuple[int, str | None]]:
    if not csv_path.is_file():
        raise LabelsError(f"{csv_path} is missing")
    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields = set(reader.fieldnames or [])
        if not {"StudyInstanceUID", "label"} <= fields:
            raise LabelsError(f"{csv_path} needs columns StudyInstanceUID and label, has {sorted(fields)}")
        labels: dict[str, tuple[int, str | None]] = {}
        for line, row in enumerate(reader, start=2):
            try:
                label = int(row["label"])
            except ValueError as exc:
                raise LabelsError(f"{csv_path}:{line}: label {row['label']!r} is not 0 or 1") from exc
            if label not in (0, 1):
                raise LabelsError(f"{csv_path}:{line}: label {label} is not 0 or 1")
            labels[row["StudyInstanceUID"].strip()] = (label, (row.get("PatientID") or "").strip() or None)
    return labels


def load_dicom_folder(folder: Path, labels_csv: Path) -> list[LabelledStudy]:
    """Labelled studies found under ``folder`` (recursively); DICOM files without a label row are skipped and counted."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    labels = _read_labels(Path(labels_csv))
    studies: dict[str, dict[str, object]] = {}
    unlabelled = 0
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError):
            continue
        uid = str(ds.get("StudyInstanceUID", ""))
        if uid not in labels:
            unlabelled += 1
            continue
        entry = studies.setdefault(uid, {"modality": str(ds.get("Modality", "")), "series": {}, "patient": str(ds.get("PatientID", ""))})
        entry["series"].setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(path)  # type: ignore[union-attr]
    if unlabelled:
        log.info("%d DICOM files under %s have no label row and were skipped", unlabelled, folder)
    result = []
    for uid, entry in studies.items():
        label, patient = labels[uid]
        result.append(LabelledStudy(uid, patient or str(entry["patient"]) or uid, label, str(entry["modality"]), entry["series"]))  # type: ignore[arg-type]
    missing = set(labels) - set(studies)
    if missing:
        log.warning("%d labelled studies have no DICOM files under %s", len(missing), folder)
    return sorted(result, key=lambda s: s.study_instance_uid)
