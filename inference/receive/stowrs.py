"""DICOMweb STOW-RS (PS3.18 10.5): ``POST /dicomweb/studies[/{study}]`` with multipart/related application/dicom.

The body is streamed part by part into the spool's incoming folder (memory stays flat for large
uploads); each part then goes through the same ingest path as a C-STORE, with the same durability
guarantee. The response lists stored instances and, for failed ones, the DICOM failure reason and
a human-readable explanation (TextValue in the Failed SOP Sequence item).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from inference.errors import IngestError, NotDicom
from inference.ingest import InstanceIngestor
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


class _PartWriter:
    """Callbacks for the streaming multipart parser: each part becomes a file in ``incoming``."""

    def __init__(self, ingestor: InstanceIngestor) -> None:
        self.ingestor = ingestor
        self.parts: list[tuple[Path, str]] = []
        self._file: BinaryIO | None = None
        self._path: Path | None = None
        self._header_field = b""
        self._header_value = b""
        self._content_type = ""

    def on_part_begin(self) -> None:
        self._path = self.ingestor.spool.new_incoming_path()
        self._file = self._path.open("wb")
        self._content_type = ""

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        assert self._file is not None
        self._file.write(data[start:end])

    def on_part_end(self) -> None:
        assert self._file is not None and self._path is not None
        self._file.close()
        self.parts.append((self._path, self._content_type))
        self._file = None

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
            self._file.close()
        for path, _ in self.parts:
            path.unlink(missing_ok=True)
        if self._path is not None:
            self._path.unlink(missing_ok=True)


def _sop_item(sop_class_uid: str | None, sop_instance_uid: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if sop_class_uid:
        item["00081150"] = {"vr": "UI", "Value": [sop_class_uid]}
    if sop_instance_uid:
        item["00081155"] = {"vr": "UI", "Value": [sop_instance_uid]}
    return item


async def _receive_parts(request: Request, ingestor: InstanceIngestor) -> list[tuple[Path, str]]:
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/related":
        raise HTTPException(415, detail="STOW-RS needs Content-Type multipart/related; type=\"application/dicom\"")
    declared = params.get(b"type", b"application/dicom").decode().lower()
    if declared != "application/dicom":
        raise HTTPException(415, detail=f"only application/dicom parts are accepted, not {declared}")
    boundary = params.get(b"boundary")
    if not boundary:
        raise HTTPException(400, detail="multipart/related without a boundary parameter")
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
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except Exception as exc:
        writer.discard()
        raise HTTPException(400, detail=f"malformed multipart body: {exc}") from exc
    if not writer.parts:
        raise HTTPException(400, detail="the multipart body holds no parts")
    return writer.parts


async def _store(request: Request, user: AuthenticatedUser, study_uid: str | None) -> JSONResponse:
    ingestor = _ingestor(request)
    if not ingestor.has_free_disk():
        raise HTTPException(503, detail="out of resources: free disk is under the watermark; retry later")
    parts = await _receive_parts(request, ingestor)
    stored: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for path, content_type in parts:
        try:
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
