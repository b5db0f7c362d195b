"""The durable spool: where an accepted instance lives, mercure-style folders showing the flow.

    spool/incoming/   files being received (temporary; removed at start-up, never acknowledged)
    spool/studies/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm   accepted instances
    quarantine/<YYYYMMDD>/<time>-<kind>-<id>.dcm (+ .json with the reason)      refused ones

An instance is durable once its bytes and the directory entry that names it are fsynced: only then
is it recorded in the database and acknowledged to the sender.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from inference.records import InstanceHeaders

__all__ = ["Spool", "fsync_file", "fsync_dir"]

log = logging.getLogger(__name__)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    def __init__(self, spool_dir: Path, quarantine_dir: Path) -> None:
        self.incoming = spool_dir / "incoming"
        self.studies = spool_dir / "studies"
        self.quarantine = quarantine_dir
        # Directories already known to exist durably; saves a mkdir + two fsyncs per instance.
        self._durable_dirs: set[Path] = set()
        for directory in (self.incoming, self.studies, self.quarantine):
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

    def new_incoming_path(self) -> Path:
        return self.incoming / f"{secrets.token_hex(12)}.part"

    def path_for(self, headers: InstanceHeaders) -> Path:
        return (
            self.studies / headers.study_instance_uid / headers.series_instance_uid / f"{headers.sop_instance_uid}.dcm"
        )

    def commit(self, received: Path, headers: InstanceHeaders) -> Path:
        """Make ``received`` durable under its study folder and return its final path."""
        final = self.path_for(headers)
        self._ensure_dir(final.parent)
        fsync_file(received)
        os.replace(received, final)
        fsync_dir(final.parent)
        return final

    def quarantine_file(self, received: Path | None, kind: str, reason: str, meta: dict[str, Any], now: datetime) -> Path:
        """Move a refused file aside with a JSON sidecar that says why; returns the sidecar's path."""
        day_dir = self.quarantine / now.strftime("%Y%m%d")
        self._ensure_dir(day_dir)
        stem = f"{now.strftime('%H%M%S%f')}-{kind}-{secrets.token_hex(4)}"
        sidecar = day_dir / f"{stem}.json"
        if received is not None and received.exists():
            target = day_dir / f"{stem}.dcm"
            if received.parent == self.incoming or received.stat().st_dev == day_dir.stat().st_dev:
                os.replace(received, target)
            else:
                shutil.copyfile(received, target)
            meta = {**meta, "file": target.name}
        sidecar.write_text(json.dumps({"kind": kind, "reason": reason, "at": now.isoformat(), **meta}, indent=2))
        fsync_file(sidecar)
        fsync_dir(day_dir)
        return sidecar

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
