"""The durable spool: the one module that knows the folders a study's files pass through (mercure-style).

    spool/incoming/   files being received (temporary; removed at start-up, never acknowledged)
    spool/studies/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm   accepted instances
    spool/outgoing/<StudyInstanceUID>/<SOPInstanceUID>.dcm                       results built for the PACS
    quarantine/<YYYYMMDD>/<time>-<kind>-<id>.dcm (+ .json with the reason)      refused ones

An instance is durable once its bytes and the directory entry that names it are fsynced: only then
is it recorded in the database and acknowledged to the sender. A stored instance is never written
over: the first copy is linked into place (``os.link`` fails when the name exists), and a re-sent copy
is compared with it, not renamed onto it. Files and folders are created owner-only (see
``service/file_modes.py``); the retention cleaner (``inference/retention.py``) removes what is past its time.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import logging
import os
import secrets
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from inference.records import InstanceHeaders
from service.durable_files import fsync_dir, fsync_file

__all__ = ["Spool", "fsync_file", "fsync_dir", "file_digest"]

log = logging.getLogger(__name__)


def file_digest(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class Spool:
    def __init__(self, spool_dir: Path, quarantine_dir: Path) -> None:
        self.incoming = spool_dir / "incoming"
        self.studies = spool_dir / "studies"
        self.outgoing = spool_dir / "outgoing"
        self.quarantine = quarantine_dir
        # Directories already known to exist durably; saves a mkdir + two fsyncs per instance.
        self._durable_dirs: set[Path] = set()
        for directory in (self.incoming, self.studies, self.outgoing, self.quarantine):
            self._ensure_dir(directory)

    def _ensure_dir(self, directory: Path) -> None:
        if directory in self._durable_dirs:
            return
        missing = []
        current = directory
        while not current.exists():
            missing.append(current)
            current = current.parent
        directory.mkdir(parents=True, exist_ok=True)
        # A new directory is durable only once its parent's entry for it is fsynced.
        for created in reversed(missing):
            fsync_dir(created.parent)
        self._durable_dirs.add(directory)

    # --- incoming and studies -----------------------------------------------------------------

    def new_incoming_path(self) -> Path:
        return self.incoming / f"{secrets.token_hex(12)}.part"

    def path_for(self, headers: InstanceHeaders) -> Path:
        return self.study_folder(headers.study_instance_uid) / headers.series_instance_uid / f"{headers.sop_instance_uid}.dcm"

    def study_folder(self, study_uid: str) -> Path:
        return self.studies / study_uid

    def make_durable(self, received: Path) -> None:
        """Flush the received bytes before any name for them is made durable."""
        fsync_file(received)

    def store_first(self, received: Path, final: Path) -> None:
        """Give ``received`` (already fsynced) its final name and drop its incoming name.

        The caller holds the instance's database lock and has checked that no copy was acknowledged, so a
        file found at ``final`` is a leftover of a crash between link and commit and is replaced.
        """
        self._ensure_dir(final.parent)
        try:
            self._link(received, final)
        except FileExistsError:
            os.replace(received, final)
        else:
            received.unlink()
        fsync_dir(final.parent)

    def _link(self, received: Path, final: Path) -> None:
        try:
            os.link(received, final)
        except FileNotFoundError:
            if not received.exists():
                raise
            # The retention cleaner (another process, another Spool) removed the study's folders since this
            # Spool created them: forget them, create them again and link once more.
            self._forget_dirs(final.parent)
            self._ensure_dir(final.parent)
            os.link(received, final)

    def _forget_dirs(self, directory: Path) -> None:
        """Drop ``directory`` and its parents below ``studies`` from the cache of durable directories."""
        current = directory
        while current != self.studies and self.studies in current.parents:
            self._durable_dirs.discard(current)
            current = current.parent

    @staticmethod
    def same_content(received: Path, stored: Path) -> bool:
        return filecmp.cmp(received, stored, shallow=False)

    # --- outgoing -----------------------------------------------------------------------------

    def outgoing_folder(self, study_uid: str) -> Path:
        return self.outgoing / study_uid

    def outgoing_path(self, study_uid: str, sop_instance_uid: str) -> Path:
        return self.outgoing_folder(study_uid) / f"{sop_instance_uid}.dcm"

    # --- quarantine ---------------------------------------------------------------------------

    def quarantine_file(
        self, received: Path | None, kind: str, reason: str, meta: dict[str, Any], now: datetime, *, keep: bool = True
    ) -> Path | None:
        """Move a refused file aside with a JSON sidecar that says why; returns the kept file's path.

        ``keep=False`` (empty, repeated or over-quota files) deletes the bytes: the database row keeps the
        reason, so nothing about the refusal is lost, only a copy nobody needs.
        """
        if received is None or not received.exists():
            return None
        if not keep:
            received.unlink(missing_ok=True)
            return None
        day_dir = self.quarantine / now.strftime("%Y%m%d")
        self._ensure_dir(day_dir)
        stem = f"{now.strftime('%H%M%S%f')}-{kind}-{secrets.token_hex(4)}"
        target = day_dir / f"{stem}.dcm"
        if received.parent == self.incoming or received.stat().st_dev == day_dir.stat().st_dev:
            os.replace(received, target)
        else:
            shutil.copyfile(received, target)
        sidecar = day_dir / f"{stem}.json"
        sidecar.write_text(json.dumps({"kind": kind, "reason": reason, "at": now.isoformat(), **meta, "file": target.name}, indent=2))
        fsync_file(sidecar)
        fsync_dir(day_dir)
        return target

    def remove_quarantined(self, kept: Path) -> int:
        """Remove a quarantined file and its sidecar; returns the bytes freed."""
        freed = 0
        for path in (kept, kept.with_suffix(".json")):
            try:
                freed += path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
        return freed

    # --- clean-up -----------------------------------------------------------------------------

    @staticmethod
    def remove_tree(folder: Path) -> tuple[int, int]:
        """Remove ``folder`` and everything in it; returns (files, bytes) removed."""
        files = size = 0
        if not folder.is_dir():
            return 0, 0
        for path in folder.rglob("*"):
            if path.is_file():
                files += 1
                size += path.stat().st_size
        shutil.rmtree(folder, ignore_errors=True)
        return files, size

    def clear_incoming(self) -> int:
        """Remove files left by a receive that was interrupted; they were never acknowledged."""
        count = 0
        for leftover in self.incoming.iterdir():
            if leftover.is_file():
                leftover.unlink()
                count += 1
        if count:
            log.info("removed %d unacknowledged partial files from %s", count, self.incoming)
        return count
