"""The retraining export: studies a radiologist has read, de-identified, with a labels CSV.

Layout of ``OUT`` (what :func:`datasets.dicom_folder.load_dicom_folder` reads)::

    OUT/dicom/<new study UID>/<new series UID>/<new SOP UID>.dcm
    OUT/labels.csv            StudyInstanceUID,PatientID,label   (new UIDs and pseudonyms only)

The crosswalk (original to new study UIDs and patient IDs) is written elsewhere, never inside ``OUT``, so
that the folder can leave the hospital while the way back stays behind. Each exported study is an audit row
(``study.export``), and the export itself one more (``training.export``: counts and paths), in the transaction that
read the studies.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from inference.tables import Instance, Study
from service.audit import record_audit, subject_digest
from training.deidentify import Deidentifier
from training.errors import ExportError
from worklist.tables import FinalRead, FinalReadFinding

__all__ = ["ExportSummary", "confirmed_studies", "deidentify_file", "export_training"]

log = logging.getLogger(__name__)


@dataclass
class ExportSummary:
    out_dir: Path
    labels_csv: Path
    crosswalk: Path
    studies: int = 0
    instances: int = 0
    positives: int = 0
    negatives: int = 0
    skipped: list[str] = field(default_factory=list)


def confirmed_studies(session: Session, task: str, since: datetime | None) -> list[tuple[Study, bool]]:
    """Studies of ``task`` with a final read at or after ``since``, each with its latest read's finding."""
    query = (
        select(Study, FinalRead, FinalReadFinding.present)
        .join(FinalRead, FinalRead.study_id == Study.id)
        .join(FinalReadFinding, (FinalReadFinding.read_id == FinalRead.id) & (FinalReadFinding.task == task))
        .order_by(Study.id, FinalRead.read_at, FinalRead.id)
    )
    if since is not None:
        query = query.where(FinalRead.read_at >= since)
    latest: dict[int, tuple[Study, bool]] = {}
    for study, _read, present in session.execute(query):
        latest[study.id] = (study, bool(present))  # ordered by read time: the last one wins
    return list(latest.values())


def deidentify_file(source: Path, out_root: Path, deidentifier: Deidentifier) -> Path | None:
    """Write the de-identified copy of one instance under ``out_root``; None when it must not leave (burned-in text)."""
    import pydicom

    ds = pydicom.dcmread(source)
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        # The Basic Profile without the Clean Pixel Data option may not pass pixels with burned-in text.
        return None
    deidentifier.apply(ds)
    target = out_root / str(ds.StudyInstanceUID) / str(ds.SeriesInstanceUID) / f"{ds.SOPInstanceUID}.dcm"
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target)
    return target


def export_training(
    session: Session,
    task: str,
    since: datetime | None,
    out_dir: Path,
    crosswalk_path: Path,
    *,
    actor: str,
    deidentifier: Deidentifier | None = None,
) -> ExportSummary:
    """``actor`` is who ran the export, for its audit rows (``cli:<login>`` from the command)."""
    out_dir, crosswalk_path = Path(out_dir).resolve(), Path(crosswalk_path).resolve()
    if crosswalk_path.is_relative_to(out_dir):
        raise ExportError(f"the crosswalk {crosswalk_path} must be kept outside the export folder {out_dir}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ExportError(f"{out_dir} is not empty")
    deidentifier = deidentifier or Deidentifier()
    summary = ExportSummary(out_dir, out_dir / "labels.csv", crosswalk_path)
    labels: list[tuple[str, str, int]] = []
    studies_map: list[tuple[str, str]] = []
    patients: set[str] = set()
    for study, present in confirmed_studies(session, task, since):
        paths = session.scalars(
            select(Instance.path).where(Instance.study_id == study.id).order_by(Instance.id)
        ).all()
        written = []
        for path in paths:
            try:
                target = deidentify_file(Path(path), out_dir / "dicom", deidentifier)
            except (OSError, ValueError) as exc:
                log.warning("export skipped an instance of study %s: %s", subject_digest(study.study_instance_uid), exc)
                continue
            if target is not None:
                written.append(target)
        if not written:
            summary.skipped.append(f"study {subject_digest(study.study_instance_uid)}: no exportable instance")
            continue
        new_uid = deidentifier.new_uid(study.study_instance_uid)
        # The study's own row, as for any other read of it: an admin asking who had this study finds the export.
        record_audit(session, actor, "study.export", "study", study.study_instance_uid,
                     {"task": task, "out": str(out_dir), "instances": len(written)})
        patients.add(study.patient_id)
        labels.append((new_uid, deidentifier.pseudonym(study.patient_id), int(present)))
        studies_map.append((study.study_instance_uid, new_uid))
        summary.studies += 1
        summary.instances += len(written)
        summary.positives += int(present)
        summary.negatives += int(not present)
    record_audit(session, actor, "training.export", "export", str(out_dir), {
        "task": task, "since": since.isoformat() if since else None, "studies": summary.studies,
        "patients": len(patients), "instances": summary.instances, "skipped": len(summary.skipped),
        "labels": str(summary.labels_csv), "crosswalk": str(crosswalk_path),
    })
    # Written to the database before the crosswalk exists: a locked or failing database stops the export here,
    # not after a file that re-identifies every study has been written with no row saying who made it.
    session.flush()
    out_dir.mkdir(parents=True, exist_ok=True)
    with summary.labels_csv.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["StudyInstanceUID", "PatientID", "label"])
        writer.writerows(labels)
    crosswalk_path.parent.mkdir(parents=True, exist_ok=True)
    # Owner-only: the crosswalk re-identifies every exported study.
    fd = os.open(crosswalk_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["kind", "original", "deidentified"])
        writer.writerows(("study", old, new) for old, new in studies_map)
        writer.writerows(("patient", old, new) for old, new in deidentifier.crosswalk.patients.items())
        writer.writerows(("uid", old, new) for old, new in deidentifier.crosswalk.uids.items())
    log.info("exported %d %s studies (%d instances), %d skipped", summary.studies, task, summary.instances, len(summary.skipped))
    return summary
