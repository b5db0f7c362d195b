"""Each view of identifiable study data leaves an audit row naming who saw which study (mutation review 3: A1, A3),
and the ml-engineer-only operations refuse every other role (RO2). The real app on SQLite (the audit table itself
is tested on both backends in tests/service/test_audit.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from sqlalchemy import select

from inference.heatmap import heatmap_path
from service.db import session_scope
from service.tables import AuditEvent
from tests.service.conftest import AddUser
from tests.worklist.conftest import add_result, make_study
from worklist.policy import policy_from_settings
from worklist.recompute import recompute_worklist


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'medscreen.db'}"


def _views(app: FastAPI, uid: str) -> list[tuple[str, str, str, dict | None]]:
    with session_scope(app.state.session_factory) as session:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.subject_id == uid, AuditEvent.action == "study.view").order_by(AuditEvent.id)
        )
        return [(r.actor, r.action, r.subject_type, r.detail) for r in rows]


def _write_heatmap(path: Path) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = path.stem
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 4, 4, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.arange(16, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def test_the_study_detail_is_an_audited_view(app: FastAPI, client: TestClient, add_user: AddUser) -> None:
    with session_scope(app.state.session_factory) as session:
        study = make_study(session)
        add_result(session, study, score=0.81)
        uid = study.study_instance_uid
    reader = add_user("rad", "radiologist")
    assert client.get(f"/api/studies/{uid}", headers=reader).json()["patient_name"] == "Doe^Jane"
    assert _views(app, uid) == [("rad", "study.view", "study", None)]


def test_a_heatmap_view_is_audited(app: FastAPI, client: TestClient, add_user: AddUser) -> None:
    settings = app.state.settings
    with session_scope(app.state.session_factory) as session:
        study = make_study(session)
        sop = generate_uid()
        add_result(session, study, score=0.81, heatmap_sop_instance_uid=sop)
        uid = study.study_instance_uid
    _write_heatmap(heatmap_path(settings, uid, sop))
    with session_scope(app.state.session_factory) as session:
        recompute_worklist(session, policy_from_settings(settings))
    reader = add_user("rad", "radiologist")
    png = client.get(f"/api/worklist/{uid}/heatmap", headers=reader)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert _views(app, uid) == [("rad", "study.view", "study", {"via": "worklist", "part": "heatmap"})]


ENGINEER_ONLY = [
    ("post", "/api/studies/1.2.3.4/rescore"),
    ("post", "/api/jobs/1/replay"),
    ("post", "/api/outgoing/1/abandon"),
    ("get", "/api/jobs"),
    ("get", "/api/outgoing"),
]


def test_only_an_ml_engineer_may_rescore_replay_or_abandon(client: TestClient, add_user: AddUser) -> None:
    users = {role: add_user(f"user-{role}", role) for role in ("radiologist", "quality", "paediatrician", "ml-engineer")}
    for method, path in ENGINEER_ONLY:
        for role, headers in users.items():
            answer = getattr(client, method)(path, headers=headers)
            if role == "ml-engineer":
                assert answer.status_code != 403, (path, answer.text)
            else:
                assert answer.status_code == 403, (role, path, answer.text)
