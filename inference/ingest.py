"""Accept one received instance: check resources, validate, spool durably, record. Shared by DIMSE and STOW-RS.

The order is the durability contract: the sender is told "success" only after the file and its
directory entry are fsynced and the database transaction that records it has committed.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from sqlalchemy import Engine

from inference.errors import IngestError, InstanceTooLarge, OutOfResources, StudyMismatch
from inference.instance_headers import read_instance_headers
from inference.records import InstanceHeaders, InstanceStored
from inference.spool import Spool
from inference.study_record import record_instance, record_quarantine
from service.db import utcnow
from service.settings import Settings

__all__ = ["InstanceIngestor"]

log = logging.getLogger(__name__)


class InstanceIngestor:
    def __init__(self, settings: Settings, engine: Engine, spool: Spool) -> None:
        self.settings = settings
        self.engine = engine
        self.spool = spool
        self.min_free_bytes = settings.min_free_disk_mb * 1024 * 1024
        self.max_instance_bytes = settings.max_instance_mb * 1024 * 1024

    def has_free_disk(self) -> bool:
        return shutil.disk_usage(self.spool.studies).free >= self.min_free_bytes

    def check_resources(self) -> None:
        if not self.has_free_disk():
            raise OutOfResources(
                f"free disk under {self.settings.home} is below the {self.settings.min_free_disk_mb} MB watermark"
            )

    def accept_file(
        self, received: Path, *, source: str, calling_ae: str = "", expected_study_uid: str | None = None
    ) -> InstanceStored:
        """Take ownership of ``received`` (a Part 10 file in the spool's incoming folder).

        Raises an :class:`IngestError` after quarantining the file when it is refused.
        """
        headers: InstanceHeaders | None = None
        try:
            self.check_resources()
            size = received.stat().st_size
            if size > self.max_instance_bytes:
                raise InstanceTooLarge(
                    f"instance of {size / 1e6:.0f} MB exceeds the {self.settings.max_instance_mb} MB limit"
                )
            headers = read_instance_headers(received)
            if expected_study_uid is not None and headers.study_instance_uid != expected_study_uid:
                raise StudyMismatch(
                    f"instance belongs to study {headers.study_instance_uid}, not {expected_study_uid} named in the URL"
                )
            # A re-sent instance lands on the same path (same UIDs), so committing it before the
            # duplicate check costs nothing and keeps the check inside the one write transaction.
            final = self.spool.commit(received, headers)
            now = utcnow()
            with self.engine.begin() as connection:
                recorded = record_instance(
                    connection, headers, path=str(final), size=size, source=source, calling_ae=calling_ae, now=now
                )
        except OutOfResources:
            received.unlink(missing_ok=True)
            log.warning("refused an instance from %s: disk under watermark", calling_ae or source)
            raise
        except IngestError as exc:
            self._quarantine(received, exc, headers, source=source, calling_ae=calling_ae)
            raise
        if recorded.duplicate:
            log.debug("duplicate SOP instance acknowledged again (revision %d)", recorded.revision)
            if recorded.path != str(final):
                # Same SOP Instance UID filed under another study/series: the first record wins.
                final.unlink(missing_ok=True)
                final = Path(recorded.path)
        return InstanceStored(
            headers=headers,
            path=final,
            size=size,
            revision=recorded.revision,
            duplicate=recorded.duplicate,
            source=source,
            calling_ae=calling_ae,
        )

    def _quarantine(
        self, received: Path, exc: IngestError, headers: InstanceHeaders | None, *, source: str, calling_ae: str
    ) -> None:
        now = utcnow()
        sidecar = self.spool.quarantine_file(
            received, exc.kind, exc.reason, {"source": source, "calling_ae": calling_ae}, now
        )
        with self.engine.begin() as connection:
            record_quarantine(
                connection,
                kind=exc.kind,
                reason=exc.reason,
                source=source,
                calling_ae=calling_ae,
                path=str(sidecar),
                sop_instance_uid=headers.sop_instance_uid if headers else None,
                study_instance_uid=headers.study_instance_uid if headers else None,
                now=now,
            )
        log.warning("quarantined an instance from %s: %s (%s)", calling_ae or source, exc.kind, exc.reason)
