"""A worker's instances: the study's files at the paths the ingest node recorded (a shared spool), or, with
MEDSCREEN_INGEST_URL set (fetch mode: the recorded paths are never read), fetched from the ingest node over
WADO-RS into ``$MEDSCREEN_HOME/instance-cache/<job id>/`` (one folder per job, so that two processes scoring the
champion and the challenger of one study never remove each other's files).

Each fetched instance is fsynced and renamed to ``<SOPInstanceUID>.dcm`` only once whole, so a crash never
leaves a partial file under a final name; a study is scored only when every instance of the job's revision
is there, else ``InstancesUnavailable`` (the job retries, it is never a could-not-score).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Collection
from pathlib import Path
from typing import BinaryIO

import httpx
from pydicom import dcmread
from python_multipart.multipart import MultipartParser, parse_options_header

from inference.errors import InstancesUnavailable
from inference.spool import fsync_dir, fsync_file
from service.settings import Settings

__all__ = ["IngestLogin", "instance_files", "instance_cache_dir", "drop_cached_study", "clear_instance_cache"]

log = logging.getLogger(__name__)

_TIMEOUT = httpx.Timeout(30.0, read=300.0)


def instance_cache_dir(settings: Settings, job_id: int) -> Path:
    return settings.home / "instance-cache" / str(job_id)


def drop_cached_study(settings: Settings, job_id: int) -> None:
    """Remove a job's fetched instances once it is over (the ingest node keeps the originals)."""
    shutil.rmtree(instance_cache_dir(settings, job_id), ignore_errors=True)


def clear_instance_cache(settings: Settings, running_here: Callable[[], Collection[int]]) -> int:
    """Remove the folders of jobs that no process of this machine runs now (left by a killed worker or a job
    another worker took over); returns how many. ``running_here`` is asked after the folders are listed, so a
    job claimed meanwhile keeps its folder."""
    root = settings.home / "instance-cache"
    if not root.is_dir():
        return 0
    folders = list(root.iterdir())
    keep = {str(job_id) for job_id in running_here()}
    removed = 0
    for folder in folders:
        if folder.name not in keep:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    if removed:
        log.info("removed %d stale instance-cache folder(s) from %s", removed, root)
    return removed


class _Parts:
    """Streaming multipart callbacks: each part to a temporary file, then renamed after its SOP Instance UID."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0
        self._file: BinaryIO | None = None
        self._path: Path | None = None

    def on_part_begin(self) -> None:
        self._path = self.directory / f".part-{os.getpid()}-{self.count}"
        self._file = self._path.open("wb")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        assert self._file is not None
        self._file.write(data[start:end])

    def on_part_end(self) -> None:
        assert self._file is not None and self._path is not None
        self._file.close()
        fsync_file(self._path)
        sop_uid = str(dcmread(self._path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)
        self._path.replace(self.directory / f"{sop_uid}.dcm")
        self._file = self._path = None
        self.count += 1

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._path is not None:
            self._path.unlink(missing_ok=True)


class IngestLogin:
    """A fetching worker's bearer token on the ingest node, reused until the node refuses it (401).

    A login costs the ingest node a bcrypt check (cost 12, about a quarter of a CPU-second), more than serving
    a radiograph: logging in for every study made the ingest node the bottleneck of fetching workers.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._token: str | None = None

    def token(self, client: httpx.Client, *, fresh: bool = False) -> str:
        if self._token is None or fresh:
            settings = self.settings
            assert settings.ingest_url is not None
            password = settings.ingest_password.get_secret_value() if settings.ingest_password else ""
            login = client.post(
                f"{settings.ingest_url.rstrip('/')}/api/auth/token",
                data={"username": settings.ingest_username or "", "password": password},
            )
            if login.status_code != 200:
                self._token = None
                raise InstancesUnavailable(f"cannot log in to the ingest node: HTTP {login.status_code}")
            self._token = str(login.json()["access_token"])
        return self._token


def _fetch_study(settings: Settings, study_uid: str, directory: Path, login: IngestLogin) -> int:
    assert settings.ingest_url is not None
    base = settings.ingest_url.rstrip("/")
    verify: str | bool = str(settings.ingest_ca_file) if settings.ingest_ca_file else True
    with httpx.Client(timeout=_TIMEOUT, verify=verify) as client:
        for attempt in range(2):
            headers = {
                "Authorization": f"Bearer {login.token(client, fresh=attempt > 0)}",
                "Accept": 'multipart/related; type="application/dicom"',
            }
            with client.stream("GET", f"{base}/dicomweb/studies/{study_uid}", headers=headers) as response:
                if response.status_code == 401 and attempt == 0:
                    continue  # the token expired or the node's key changed: log in again, once
                if response.status_code != 200:
                    raise InstancesUnavailable(f"WADO-RS retrieve of the study answered HTTP {response.status_code}")
                return _store_parts(response, directory)
    raise InstancesUnavailable("the ingest node refused a fresh login's token")


def _store_parts(response: httpx.Response, directory: Path) -> int:
    kind, params = parse_options_header(response.headers.get("content-type", ""))
    if kind != b"multipart/related" or not params.get(b"boundary"):
        raise InstancesUnavailable(f"WADO-RS answered {kind.decode()}, not multipart/related")
    parts = _Parts(directory)
    parser = MultipartParser(
        params[b"boundary"],
        {"on_part_begin": parts.on_part_begin, "on_part_data": parts.on_part_data, "on_part_end": parts.on_part_end},
    )
    try:
        for chunk in response.iter_bytes():
            parser.write(chunk)
        parser.finalize()
    finally:
        parts.discard()
    fsync_dir(directory)
    return parts.count


def instance_files(
    settings: Settings, job_id: int, study_uid: str, instances: list[tuple[str, Path]], login: IngestLogin | None = None
) -> list[Path]:
    """The files to score for ``instances`` (SOP Instance UID, recorded path), fetched in fetch mode (with
    ``login``, the worker's reused token; a fresh login without)."""
    if not settings.ingest_url:
        return [path for _, path in instances]
    directory = instance_cache_dir(settings, job_id)
    cached = [directory / f"{sop_uid}.dcm" for sop_uid, _ in instances]
    if not all(path.is_file() for path in cached):
        directory.mkdir(parents=True, exist_ok=True)
        fsync_dir(directory.parent)
        try:
            fetched = _fetch_study(settings, study_uid, directory, login or IngestLogin(settings))
        except httpx.HTTPError as exc:
            raise InstancesUnavailable(f"cannot fetch the study from the ingest node: {type(exc).__name__}: {exc}") from exc
        log.info("job %d: fetched %d instance(s) over WADO-RS into %s", job_id, fetched, directory)
    missing = sum(not path.is_file() for path in cached)
    if missing:
        raise InstancesUnavailable(f"{missing} instance(s) of the study are missing from the ingest node's WADO-RS answer")
    return cached
