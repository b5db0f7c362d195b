"""Pull from the PACS: studies since a date found by C-FIND and retrieved by C-GET into the normal ingest path.

For a site that starts up (last month's studies) and for studies the PACS failed to send. Each retrieved
instance goes through ``InstanceIngestor.accept_file`` exactly as a pushed one does (spooled with fsync,
recorded, completed by the quiet period, routed, scored), so nothing here scores anything itself.

- Never re-scoring what was scored: a study medscreen already holds (pushed, or backfilled to the end before)
  is skipped; instances medscreen wrote itself (Manufacturer ``medscreen``: the heat-map SC written back into
  the study) are dropped on arrival, so a backfill never feeds medscreen its own output.
- Resumable: a study retrieved to the end gets a ``backfilled`` event in its timeline. A run that was
  interrupted, or a study of which medscreen refused an instance for now (disk under the watermark: 0xA700, a
  processing failure: 0x0110), left the study without one: the next run retrieves that study again (instances already
  held are acknowledged and stored once) and skips the finished ones.
- Rate limit: at most ``studies_per_minute`` retrievals start per minute, so a month of studies does not
  take the PACS away from the radiologists.
"""

from __future__ import annotations

import logging
import ssl
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, _config, build_role, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from inference.errors import IngestError, OutOfResources
from inference.ingest import InstanceIngestor
from inference.receive.dimse import TRANSFER_SYNTAXES
from inference.receive.status import PROCESSING_FAILURE, SUCCESS, dicom_status_for
from inference.sop_classes import ACCEPTED_SOP_CLASSES
from inference.study_record import add_event
from inference.tables import Instance, Study, StudyEvent
from inference.writeback import MANUFACTURER
from service.db import session_scope, utcnow

__all__ = ["PacsStudy", "BackfillReport", "find_studies", "retrieve_study", "plan_backfill", "run_backfill"]

log = logging.getLogger(__name__)

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
BACKFILLED = "backfilled"
SOURCE = "backfill"  # the `source` of an instance that a backfill retrieved


@dataclass(frozen=True)
class PacsStudy:
    study_instance_uid: str
    study_date: str
    modalities: tuple[str, ...]
    instances: int | None


@dataclass
class BackfillReport:
    found: int = 0
    skipped_known: int = 0
    retrieved_studies: int = 0
    stored: int = 0
    duplicates: int = 0
    refused: int = 0
    # Refused for a reason that passes (out of disk, a processing failure): the study is retrieved again.
    refused_for_now: int = 0
    own_output_dropped: int = 0
    failed_studies: int = 0


def _association(ae: AE, host: str, port: int, called_ae: str, **kwargs: Any) -> Association:
    assoc = ae.associate(host, port, ae_title=called_ae, **kwargs)
    if not assoc.is_established:
        raise ConnectionError(f"association with {called_ae}@{host}:{port} failed")
    return assoc


def find_studies(
    host: str, port: int, called_ae: str, calling_ae: str, *, since: date, until: date | None = None,
    modalities: Iterable[str] = (), tls_args: tuple[ssl.SSLContext, str] | None = None,
) -> list[PacsStudy]:
    """C-FIND at STUDY level: studies dated ``since``..``until`` with any of ``modalities`` (all when empty)."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ae.add_requested_context(STUDY_ROOT_FIND)
    wanted = [m.upper() for m in modalities]
    found: dict[str, PacsStudy] = {}
    # One query per modality: matching a multi-valued ModalitiesInStudy against a list is optional in
    # PS3.4 and PACSs differ; one value each is matched by all of them.
    for modality in wanted or [""]:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        query.StudyDate = f"{since:%Y%m%d}-{until:%Y%m%d}" if until else f"{since:%Y%m%d}-"
        query.ModalitiesInStudy = modality
        query.NumberOfStudyRelatedInstances = ""
        assoc = _association(ae, host, port, called_ae, tls_args=tls_args)
        try:
            for status, identifier in assoc.send_c_find(query, STUDY_ROOT_FIND):
                if status is None:
                    raise ConnectionError(f"C-FIND to {called_ae}: no answer")
                if status.Status in (0xFF00, 0xFF01) and identifier is not None:
                    uid = str(identifier.get("StudyInstanceUID", ""))
                    if not uid:
                        continue
                    count = identifier.get("NumberOfStudyRelatedInstances")
                    in_study = identifier.get("ModalitiesInStudy") or []
                    found[uid] = PacsStudy(
                        study_instance_uid=uid,
                        study_date=str(identifier.get("StudyDate", "")),
                        modalities=tuple(in_study) if not isinstance(in_study, str) else (in_study,),
                        instances=int(count) if count not in (None, "") else None,
                    )
                elif status.Status not in (0x0000,):
                    raise ConnectionError(f"C-FIND to {called_ae} failed: status 0x{status.Status:04X}")
        finally:
            assoc.release()
    return sorted(found.values(), key=lambda s: (s.study_date, s.study_instance_uid))


def _on_store(event: Event, ingestor: InstanceIngestor, pacs_ae: str, report: BackfillReport) -> int:
    received = Path(event.dataset_path)
    try:
        header = dcmread(received, stop_before_pixels=True, specific_tags=["Manufacturer"])
        if str(header.get("Manufacturer", "")) == MANUFACTURER:
            # medscreen's own heat-map, written back into this study: taking it in would score it.
            received.unlink(missing_ok=True)
            report.own_output_dropped += 1
            return SUCCESS
        stored = ingestor.accept_file(received, source=SOURCE, calling_ae=pacs_ae)
    except IngestError as exc:
        report.refused += 1
        status = dicom_status_for(exc)
        if isinstance(exc, OutOfResources) or status == PROCESSING_FAILURE:
            report.refused_for_now += 1
        return status
    except Exception:
        log.exception("unexpected failure storing a retrieved instance")
        received.unlink(missing_ok=True)
        report.refused += 1
        report.refused_for_now += 1
        return PROCESSING_FAILURE
    if stored.duplicate:
        report.duplicates += 1
    else:
        report.stored += 1
    return SUCCESS


def retrieve_study(
    ingestor: InstanceIngestor, study_uid: str, *, host: str, port: int, called_ae: str, calling_ae: str,
    report: BackfillReport, tls_args: tuple[ssl.SSLContext, str] | None = None,
) -> None:
    """C-GET one study; its instances arrive as C-STORE sub-operations on the same association."""
    _config.STORE_RECV_CHUNKED_DATASET = True
    tempfile.tempdir = str(ingestor.spool.incoming)  # received straight into the spool's file system
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.network_timeout = 60
    ae.dimse_timeout = 600
    ae.add_requested_context(STUDY_ROOT_GET)
    roles = []
    # Only the classes medscreen scores: anything else in the study (SR, PR, ...) is not taken.
    for sop_class in ACCEPTED_SOP_CLASSES:
        ae.add_requested_context(sop_class, TRANSFER_SYNTAXES)
        roles.append(build_role(sop_class, scp_role=True))
    handlers = [(evt.EVT_C_STORE, _on_store, [ingestor, called_ae, report])]
    assoc = _association(ae, host, port, called_ae, ext_neg=roles, evt_handlers=handlers, tls_args=tls_args)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    try:
        last = None
        for status, _identifier in assoc.send_c_get(query, STUDY_ROOT_GET):
            if status is None:
                raise ConnectionError(f"C-GET of a study from {called_ae}: no answer")
            last = status
        # 0xB000: some sub-operations failed (e.g. a SOP class we did not negotiate); the rest arrived.
        if last is None or last.Status not in (0x0000, 0xB000):
            code = "none" if last is None else f"0x{last.Status:04X}"
            raise ConnectionError(f"C-GET of a study from {called_ae} ended with status {code}")
    finally:
        assoc.release()


def plan_backfill(session: Session, studies: list[PacsStudy]) -> tuple[list[PacsStudy], int]:
    """The studies still to retrieve: those medscreen does not hold, or whose backfill did not finish."""
    uids = [s.study_instance_uid for s in studies]
    held: dict[str, int] = {}
    for index in range(0, len(uids), 500):
        for uid, study_id in session.execute(
            select(Study.study_instance_uid, Study.id).where(Study.study_instance_uid.in_(uids[index:index + 500]))
        ):
            held[uid] = study_id
    finished = set(session.scalars(
        select(StudyEvent.study_id).where(StudyEvent.kind == BACKFILLED, StudyEvent.study_id.in_(list(held.values())))
    )) if held else set()
    # Held, not finished, and fed by a backfill: the run that retrieved it was interrupted.
    unfinished_backfills = set(session.scalars(
        select(Instance.study_id).distinct().where(Instance.source == SOURCE, Instance.study_id.in_(list(held.values())))
    )) if held else set()
    todo = []
    for study in studies:
        held_id = held.get(study.study_instance_uid)
        if held_id is None or (held_id in unfinished_backfills and held_id not in finished):
            todo.append(study)
    return todo, len(studies) - len(todo)


def run_backfill(
    ingestor: InstanceIngestor,
    session_factory: sessionmaker[Session],
    studies: list[PacsStudy],
    *,
    host: str,
    port: int,
    called_ae: str,
    calling_ae: str,
    studies_per_minute: float = 0.0,
    tls_args: tuple[ssl.SSLContext, str] | None = None,
    progress: Callable[[PacsStudy, BackfillReport], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> BackfillReport:
    report = BackfillReport(found=len(studies))
    with session_scope(session_factory) as session:
        todo, report.skipped_known = plan_backfill(session, studies)
    interval = 60.0 / studies_per_minute if studies_per_minute > 0 else 0.0
    next_start = time.monotonic()
    for study in todo:
        wait = next_start - time.monotonic()
        if wait > 0:
            sleep(wait)
        next_start = time.monotonic() + interval
        refused_before = report.refused_for_now
        try:
            retrieve_study(ingestor, study.study_instance_uid, host=host, port=port, called_ae=called_ae,
                           calling_ae=calling_ae, report=report, tls_args=tls_args)
        except ConnectionError as exc:
            report.failed_studies += 1
            log.warning("backfill: study not retrieved (again next run): %s", exc)
        else:
            if report.refused_for_now > refused_before:
                # The PACS ends with 0xB000 for these too; marked finished, the study would stay partial for good.
                report.failed_studies += 1
                log.warning("backfill: %d instance(s) of a study refused for now (again next run)",
                            report.refused_for_now - refused_before)
            else:
                _mark(session_factory, study.study_instance_uid, BACKFILLED, instances=study.instances)
                report.retrieved_studies += 1
        if progress is not None:
            progress(study, report)
    return report


def _mark(session_factory: sessionmaker[Session], study_uid: str, kind: str, **detail: object) -> None:
    with session_scope(session_factory) as session:
        study = session.scalar(select(Study).where(Study.study_instance_uid == study_uid))
        if study is not None:
            add_event(session, study.id, study.revision, kind, utcnow(), **detail)
