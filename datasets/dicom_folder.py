"""DICOM files and folders grouped into studies and series: the one folder reader every command uses
(offline scoring, the routing dry-run, retraining on a hospital's labelled export).

Files are found by content, not suffix, since PACS exports often have none; the caller reads each header
its own way (``read_header`` returns None for a file it skips) and gets studies back in first-seen order.
For training, :func:`load_dicom_folder` adds a CSV of labels by StudyInstanceUID: columns
``StudyInstanceUID`` and ``label`` (0/1), optionally ``PatientID`` (for patient-level splits; the study
UID stands in when absent).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from datasets.errors import LabelsError

__all__ = ["FolderStudy", "LabelledStudy", "dicom_files", "group_into_studies", "load_dicom_folder"]

log = logging.getLogger(__name__)

Header = TypeVar("Header")


def dicom_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Every file named or under a named folder (recursively, in sorted order), each once however often it is named
    (a folder given with one of its own sub-folders, a link); a missing path is an error."""
    seen: set[Path] = set()
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found: Iterable[Path] = (p for p in sorted(path.rglob("*")) if p.is_file())
        elif path.is_file():
            found = (path,)
        else:
            raise FileNotFoundError(f"{path} does not exist")
        for file in found:
            real = file.resolve()
            if real not in seen:
                seen.add(real)
                yield file


@dataclass
class FolderStudy(Generic[Header]):
    """One study found in files: its series' paths in file order, and the header of each series' first file."""

    study_instance_uid: str
    series: dict[str, list[Path]] = field(default_factory=dict)
    headers: dict[str, Header] = field(default_factory=dict)

    @property
    def paths(self) -> list[Path]:
        return [path for paths in self.series.values() for path in paths]


def group_into_studies(
    files: Iterable[Path],
    read_header: Callable[[Path], Header | None],
    uids: Callable[[Header], tuple[str, str]],
    *,
    instance_uid: Callable[[Header], str] | None = None,
    on_duplicate: Callable[[Path, Path], None] | None = None,
) -> list[FolderStudy[Header]]:
    """Group ``files`` by (StudyInstanceUID, SeriesInstanceUID) as ``uids`` reads them from each header.

    With ``instance_uid`` (the SOP Instance UID), an instance is kept once, from the first file that holds it, as
    ingest stores it: a later file of the same UID (two exports of a study) is passed to ``on_duplicate`` (it, the
    first) and left out."""
    studies: dict[str, FolderStudy[Header]] = {}
    first_file: dict[str, Path] = {}
    for path in files:
        header = read_header(path)
        if header is None:
            continue
        if instance_uid is not None:
            uid = instance_uid(header)
            if uid in first_file:
                if on_duplicate is not None:
                    on_duplicate(path, first_file[uid])
                continue
            first_file[uid] = path
        study_uid, series_uid = uids(header)
        study = studies.setdefault(study_uid, FolderStudy(study_uid))
        study.series.setdefault(series_uid, []).append(path)
        study.headers.setdefault(series_uid, header)
    return list(studies.values())


def _pydicom_header(path: Path) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError):
        return None


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
    labels = _read_labels(Path(labels_csv))
    found = group_into_studies(
        dicom_files([Path(folder)]),
        _pydicom_header,
        lambda ds: (str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesInstanceUID", ""))),
    )
    unlabelled = sum(len(study.paths) for study in found if study.study_instance_uid not in labels)
    if unlabelled:
        log.info("%d DICOM files under %s have no label row and were skipped", unlabelled, folder)
    result = []
    for study in found:
        if study.study_instance_uid not in labels:
            continue
        label, patient = labels[study.study_instance_uid]
        first = next(iter(study.headers.values()))
        uid = study.study_instance_uid
        result.append(LabelledStudy(uid, patient or str(first.get("PatientID", "")) or uid, label, str(first.get("Modality", "")), study.series))
    missing = set(labels) - {study.study_instance_uid for study in found}
    if missing:
        log.warning("%d labelled studies have no DICOM files under %s", len(missing), folder)
    return sorted(result, key=lambda s: s.study_instance_uid)
