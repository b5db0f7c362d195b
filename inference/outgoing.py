"""``spool/outgoing/``: result documents built once, stored durably, and the row saying where they go.

    spool/outgoing/<StudyInstanceUID>/<SOPInstanceUID>.dcm   an SR, a heat-map, ... (kept for the study view)

Files are fsynced before the row that names them commits, so a row never points at a missing file; a
crash between the two leaves unnamed files and re-runs the job (nothing was sent yet).
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy.orm import Session

from inference.spool import fsync_dir, fsync_file
from inference.tables import OutgoingResult
from service.lifecycle import JobState
from service.settings import Settings

__all__ = ["outgoing_dir", "store_documents", "discard_documents", "read_documents", "read_document", "queue_outgoing", "pacs_destination"]

log = logging.getLogger(__name__)


def outgoing_dir(settings: Settings) -> Path:
    return settings.spool_dir / "outgoing"


def store_documents(settings: Settings, folder: str, documents: list[Dataset]) -> list[str]:
    """Write each document as ``<SOPInstanceUID>.dcm`` under ``outgoing/<folder>``, durably; returns the UIDs.

    When a write fails (a full disk: ENOSPC, EDQUOT) the documents of this call already written, and the one cut
    short, are removed before the error propagates: no row will ever name them, and a retry makes new UIDs.
    """
    directory = outgoing_dir(settings) / folder
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    uids = []
    try:
        for ds in documents:
            uid = str(ds.SOPInstanceUID)
            path = directory / f"{uid}.dcm"
            ds.save_as(path, enforce_file_format=True)
            fsync_file(path)
            uids.append(uid)
        fsync_dir(directory)
        if created:
            fsync_dir(directory.parent)
    except BaseException:
        _remove_partial(directory, documents)
        raise
    return uids


def _remove_partial(directory: Path, documents: list[Dataset]) -> None:
    """Best effort: the write's own error is the one that matters, so a failed removal is only logged."""
    for ds in documents:
        try:
            (directory / f"{ds.SOPInstanceUID}.dcm").unlink(missing_ok=True)
        except OSError:
            log.warning("outgoing document %s of a failed write not removed", ds.SOPInstanceUID, exc_info=True)


def discard_documents(settings: Settings, folder: str, documents: list[Dataset]) -> None:
    """Remove documents that were stored but never named by a row (a worker that lost its job to another)."""
    directory = outgoing_dir(settings) / folder
    for ds in documents:
        (directory / f"{ds.SOPInstanceUID}.dcm").unlink(missing_ok=True)
    if documents and directory.is_dir():
        fsync_dir(directory)


def read_document(settings: Settings, folder: str, sop_instance_uid: str) -> Dataset | None:
    path = outgoing_dir(settings) / folder / f"{sop_instance_uid}.dcm"
    return dcmread(path) if path.is_file() else None


def read_documents(settings: Settings, outgoing: OutgoingResult) -> list[Dataset]:
    """The stored documents of one row, in the order they were stored; FileNotFoundError if one is gone."""
    directory = outgoing_dir(settings) / outgoing.folder
    return [dcmread(directory / f"{uid}.dcm") for uid in outgoing.sop_instance_uids]


def pacs_destination(settings: Settings) -> dict[str, Any] | None:
    """The configured PACS as a STOW-RS destination (MEDSCREEN_PACS_STOW_URL) or a C-STORE one, or None when
    write-back is off or no PACS is set. The token is not stored in the row: it is read from settings at send."""
    if not settings.writeback:
        return None
    if settings.pacs_stow_url:
        return {"kind": "stow-rs", "url": settings.pacs_stow_url}
    if not (settings.pacs_ae_title and settings.pacs_host and settings.pacs_port):
        return None
    return {"kind": "c-store", "ae_title": settings.pacs_ae_title, "host": settings.pacs_host, "port": int(settings.pacs_port)}


def queue_outgoing(
    session: Session, *, study_id: int, score_result_id: int | None, folder: str, sop_instance_uids: list[str],
    destination: dict[str, Any], now: datetime, node: str | None = None,
) -> OutgoingResult:
    """Record stored documents as waiting for the dispatcher of ``node``, the node whose spool holds them
    (in the caller's transaction)."""
    row = OutgoingResult(
        study_id=study_id,
        score_result_id=score_result_id,
        folder=folder,
        node=node,
        sop_instance_uids=list(sop_instance_uids),
        destination=destination,
        state=JobState.queued.value,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(row)
    return row
