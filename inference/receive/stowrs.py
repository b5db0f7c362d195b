"""DICOMweb STOW-RS (PS3.18 10.5): ``POST /dicomweb/studies[/{study}]`` with multipart/related application/dicom.

The body is streamed part by part into the spool's incoming folder (memory stays flat for large
uploads); each part then goes through the same ingest path as a C-STORE, with the same durability
guarantee. Bytes are counted as they arrive: a part past ``MEDSCREEN_MAX_INSTANCE_MB`` stops being written
(its partial file removed at once, the part failed 0xA700), a body past ``MEDSCREEN_MAX_STOW_REQUEST_MB`` is
413 and the disk going under the watermark (checked at each part and every 16 MB of one) or found full 503
with a ``Retry-After``, with nothing of the request kept. The response lists stored
instances and, for failed ones, the DICOM failure reason and a human-readable explanation (TextValue in the
Failed SOP Sequence item).
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Annotated, Any, BinaryIO, NamedTuple

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from inference.errors import IngestError, InstanceTooLarge, NotDicom, OutOfResources
from inference.ingest import InstanceIngestor, name_refused
from inference.receive.status import PROCESSING_FAILURE, dicom_status_for
from inference.wadors import instance_url
from service.auth import AuthenticatedUser, Role, require_role

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])
# Only sending systems (role `sender`, or admin) may inject imaging studies.
Sender = Annotated[AuthenticatedUser, Depends(require_role(Role.sender))]


def _ingestor(request: Request) -> InstanceIngestor:
    return request.app.state.ingestor


MB = 1024 * 1024
# Free disk is looked up before the body, at the start of each part and again after every this many bytes of one.
_DISK_CHECK_BYTES = 16 * MB
# Retry-After of a 503: long enough for an operator or the retention pass to free disk without a PACS retrying in a
# loop, short enough that a study held back by a passing peak is not late for the worklist.
RETRY_AFTER_S = 60


def _out_of_resources(reason: str) -> HTTPException:
    """The 503 of a refused request, with the Retry-After that tells the sender when to try again (RFC 9110 10.2.3)."""
    return HTTPException(503, detail=f"out of resources: {reason}; retry later",
                         headers={"Retry-After": str(RETRY_AFTER_S)})


class _BodyTooLarge(Exception):
    """The request body passed MEDSCREEN_MAX_STOW_REQUEST_MB."""


class _Part(NamedTuple):
    path: Path
    content_type: str
    refused: IngestError | None  # refused while streaming: its file is already gone


class _PartWriter:
    """Callbacks for the streaming multipart parser: each part becomes a file in ``incoming``."""

    def __init__(self, ingestor: InstanceIngestor) -> None:
        self.ingestor = ingestor
        self.parts: list[_Part] = []
        self._file: BinaryIO | None = None
        self._path: Path | None = None
        self._written = 0
        self._refused: IngestError | None = None
        self._header_field = b""
        self._header_value = b""
        self._content_type = ""

    def on_part_begin(self) -> None:
        # Each part is checked: a request of many small parts (SR, KO, small images) must not run past the watermark.
        self.ingestor.check_resources()  # OutOfResources ends the request (503)
        self._path = self.ingestor.spool.new_incoming_path()
        self._file = self._path.open("wb")
        self._content_type = ""
        self._written = 0
        self._refused = None

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._refused is not None:
            return  # the rest of a refused part is read and dropped
        assert self._file is not None
        before = self._written
        self._written += end - start
        limit = self.ingestor.max_instance_bytes
        if self._written > limit:
            # What fits is written first, so that the refused instance can be named from its file meta.
            self._file.write(data[start : start + max(0, limit - before)])
            self._refuse(InstanceTooLarge(f"instance exceeds the {limit / MB:.0f} MB limit: refused while streaming, nothing of it kept"))
            return
        if before // _DISK_CHECK_BYTES != self._written // _DISK_CHECK_BYTES:
            self.ingestor.check_resources()  # OutOfResources ends the request (503)
        self._file.write(data[start:end])  # a full disk (ENOSPC) ends the request (503), see _receive_parts

    def _refuse(self, refused: IngestError) -> None:
        """Remove the part's partial file now, naming the instance from its file meta if that was received."""
        assert self._file is not None and self._path is not None
        self._file.close()
        self._file = None
        name_refused(refused, self._path, None)
        self._path.unlink(missing_ok=True)
        self._refused = refused

    def on_part_end(self) -> None:
        assert self._path is not None
        file, self._file = self._file, None
        if file is not None:
            file.close()  # a part's last bytes reach the disk here: ENOSPC ends the request (503)
        self.parts.append(_Part(self._path, self._content_type, self._refused))

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_field.lower() == b"content-type":
            self._content_type = self._header_value.decode("latin-1").split(";")[0].strip().lower()
        self._header_field = self._header_value = b""

    def discard(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass  # the disk is full: the file is removed below whatever its buffer held
            self._file = None
        for part in self.parts:
            part.path.unlink(missing_ok=True)
        if self._path is not None:
            self._path.unlink(missing_ok=True)


def _sop_item(sop_class_uid: str | None, sop_instance_uid: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if sop_class_uid:
        item["00081150"] = {"vr": "UI", "Value": [sop_class_uid]}
    if sop_instance_uid:
        item["00081155"] = {"vr": "UI", "Value": [sop_instance_uid]}
    return item


async def _receive_parts(request: Request, ingestor: InstanceIngestor) -> list[_Part]:
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/related":
        raise HTTPException(415, detail="STOW-RS needs Content-Type multipart/related; type=\"application/dicom\"")
    declared = params.get(b"type", b"application/dicom").decode().lower()
    if declared != "application/dicom":
        raise HTTPException(415, detail=f"only application/dicom parts are accepted, not {declared}")
    boundary = params.get(b"boundary")
    if not boundary:
        raise HTTPException(400, detail="multipart/related without a boundary parameter")
    limit = ingestor.max_stow_request_bytes
    too_large = (
        f"the STOW-RS request body exceeds the {limit / MB:.0f} MB limit (MEDSCREEN_MAX_STOW_REQUEST_MB); nothing "
        "of it was stored: send the instances in several requests"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, detail=too_large)
    writer = _PartWriter(ingestor)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": writer.on_part_begin,
            "on_part_data": writer.on_part_data,
            "on_part_end": writer.on_part_end,
            "on_header_field": writer.on_header_field,
            "on_header_value": writer.on_header_value,
            "on_header_end": writer.on_header_end,
        },
    )
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise _BodyTooLarge
            parser.write(chunk)
        parser.finalize()
    except _BodyTooLarge:
        writer.discard()
        log.warning("refused a STOW-RS request: its body passed the %d MB limit", limit // MB)
        raise HTTPException(413, detail=too_large) from None
    except (OutOfResources, OSError) as exc:
        writer.discard()
        if isinstance(exc, OSError) and exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise  # the spool cannot be written (read-only, missing): a server error, not the sender's
        # A truly full disk (watermark 0, or another writer filled it) shows on a write, on the close that flushes
        # a part's last bytes, or on creating a part's file.
        reason = exc.reason if isinstance(exc, OutOfResources) else f"no space left under {ingestor.settings.home}"
        log.warning("refused a STOW-RS request: %s", reason)
        raise _out_of_resources(reason) from exc
    except Exception as exc:
        writer.discard()
        raise HTTPException(400, detail=f"malformed multipart body: {exc}") from exc
    if not writer.parts:
        raise HTTPException(400, detail="the multipart body holds no parts")
    return writer.parts


async def _store(request: Request, user: AuthenticatedUser, study_uid: str | None) -> JSONResponse:
    ingestor = _ingestor(request)
    if not ingestor.has_free_disk():
        raise _out_of_resources("free disk is under the watermark")
    parts = await _receive_parts(request, ingestor)
    stored: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for path, content_type, refused in parts:
        try:
            if refused is not None:
                await run_in_threadpool(ingestor.record_refusal, refused, source="stow-rs", calling_ae=user.username)
                raise refused
            if content_type and content_type != "application/dicom":
                raise NotDicom(f"part of type {content_type} is not application/dicom")
            result = await run_in_threadpool(
                ingestor.accept_file, path, source="stow-rs", calling_ae=user.username, expected_study_uid=study_uid
            )
        except IngestError as exc:
            path.unlink(missing_ok=True)
            # PS3.18 10.5.3: each failed item names its instance, so the sender can retry or report that one.
            item = _sop_item(exc.sop_class_uid, exc.sop_instance_uid)
            item["00081197"] = {"vr": "US", "Value": [dicom_status_for(exc)]}
            item["0040A160"] = {"vr": "UT", "Value": [f"{exc.kind}: {exc.reason}"]}
            failed.append(item)
            continue
        except Exception:
            log.exception("unexpected failure storing a STOW-RS part")
            path.unlink(missing_ok=True)
            item = {"00081197": {"vr": "US", "Value": [PROCESSING_FAILURE]},
                    "0040A160": {"vr": "UT", "Value": ["processing failure"]}}
            failed.append(item)
            continue
        headers = result.headers
        item = _sop_item(headers.sop_class_uid, headers.sop_instance_uid)
        # RetrieveURL (0008,1190): this node's WADO-RS, as long as the spooled file is kept (retention).
        item["00081190"] = {"vr": "UR", "Value": [instance_url(
            str(request.base_url), headers.study_instance_uid, headers.series_instance_uid, headers.sop_instance_uid
        )]}
        stored.append(item)
    body: dict[str, Any] = {}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": stored}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    # PS3.18 10.5.3: 200 all stored, 202 some failed, 409 none stored.
    status_code = 200 if not failed else (202 if stored else 409)
    return JSONResponse(body, status_code=status_code, media_type="application/dicom+json")


@router.post("/studies", summary="STOW-RS: store instances")
async def store_instances(request: Request, user: Sender) -> JSONResponse:
    return await _store(request, user, None)


@router.post("/studies/{study_uid}", summary="STOW-RS: store instances of one study")
async def store_study_instances(study_uid: str, request: Request, user: Sender) -> JSONResponse:
    return await _store(request, user, study_uid)
