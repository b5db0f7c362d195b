"""DICOMweb WADO-RS (PS3.18 10.4) for what this node stored: a study, or one instance, as multipart/related
application/dicom with each spooled file's bytes as received.

Who may retrieve: ``sender`` (the STOW-RS role; a remote ``medscreen worker`` logs in with such a machine
account to fetch the studies it scores), admin implied. The files are the instances as received, patient name, ID,
birth date and accession in their headers, so ``ml-engineer``, which reads studies without patient identity
(README, roles), is refused with a 403 that says so. Each retrieval is audited. medscreen is not an archive: an
instance whose spooled file retention removed is gone (404).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from inference.tables import Instance, Series, Study
from service.audit import record_audit
from service.auth import AuthenticatedUser, CurrentUser, Role
from service.deps import SessionDep

__all__ = ["router", "instance_url"]

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

# Said to an ml-engineer: the role had been let through and read every patient's name and ID in the headers while
# GET /api/studies/{uid} nulled them for it.
IDENTIFIED_INSTANCES = (
    "WADO-RS answers the instances as received, with the patient's name, ID, birth date and accession number in "
    "their headers; role ml-engineer reads studies without patient identity (GET /api/studies/{uid}). Needs role sender"
)


def _retriever(user: CurrentUser) -> AuthenticatedUser:
    if user.has_role(Role.sender):
        return user
    if Role.ml_engineer in user.roles:
        raise HTTPException(403, detail=IDENTIFIED_INSTANCES)
    raise HTTPException(403, detail=f"needs role {Role.sender}")


Retriever = Annotated[AuthenticatedUser, Depends(_retriever)]

_CHUNK = 1024 * 1024


def instance_url(base_url: str, study_uid: str, series_uid: str, sop_uid: str) -> str:
    """The WADO-RS URL of one stored instance (the STOW-RS answer's RetrieveURL)."""
    return f"{base_url.rstrip('/')}/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"


def _multipart(paths: list[Path], boundary: str) -> Iterator[bytes]:
    for path in paths:
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def _respond(paths: list[Path]) -> StreamingResponse:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise HTTPException(404, detail=f"{len(missing)} instance file(s) no longer in the spool (retention)")
    boundary = secrets.token_hex(16)
    return StreamingResponse(
        _multipart(paths, boundary),
        media_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
        headers={"Cache-Control": "no-store"},
    )


@router.get("/studies/{study_uid}", summary="WADO-RS: retrieve a study's stored instances")
def retrieve_study(study_uid: str, session: SessionDep, user: Retriever) -> StreamingResponse:
    rows = session.execute(
        select(Instance.sop_instance_uid, Instance.path)
        .join(Study, Study.id == Instance.study_id)
        .where(Study.study_instance_uid == study_uid)
        .order_by(Instance.id)
    ).all()
    if not rows:
        raise HTTPException(404, detail=f"no study {study_uid}")
    record_audit(session, user.username, "study.retrieve", "study", study_uid, {"instances": len(rows)})
    return _respond([Path(path) for _, path in rows])


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}", summary="WADO-RS: retrieve one stored instance"
)
def retrieve_instance(
    study_uid: str, series_uid: str, sop_uid: str, session: SessionDep, user: Retriever
) -> StreamingResponse:
    path = session.scalar(
        select(Instance.path)
        .join(Study, Study.id == Instance.study_id)
        .join(Series, Series.id == Instance.series_id)
        .where(
            Study.study_instance_uid == study_uid,
            Series.series_instance_uid == series_uid,
            Instance.sop_instance_uid == sop_uid,
        )
    )
    if path is None:
        raise HTTPException(404, detail=f"no instance {sop_uid} in series {series_uid} of study {study_uid}")
    record_audit(session, user.username, "instance.retrieve", "study", study_uid, {"sop_instance_uid": sop_uid})
    return _respond([Path(path)])
