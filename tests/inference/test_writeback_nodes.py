"""Outgoing results name the node whose spool holds their files: the spool keeps its node's name, a dispatcher
claims only its node's rows (and the unnamed rows of before, where it reads the ingest node's spool), and
``GET /api/outgoing`` shows each node's waiting results and their age (an operator abandons those of a node
gone for good); a re-score names the previous SR as its predecessor even when that SR's file is on another node."""

from __future__ import annotations

import shutil
import socket
import warnings
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from pydicom import dcmread
from pydicom.uid import Comprehensive3DSRStorage
from sqlalchemy import select

from inference.dispatch import Dispatcher
from inference.ingest import InstanceIngestor
from inference.jobs import request_rescore
from inference.outgoing import outgoing_dir, queue_outgoing
from inference.shipped_models import SHIPPED_MODELS_DIR, log_onnx_bundle
from inference.spool_node import NODE_FILE, spool_node
from inference.tables import OutgoingResult, ScoreResult, Study
from medscreen.app import create_app
from service.db import make_session_factory, session_scope, utcnow
from service.settings import Settings
from service.tables import AuditEvent
from service.users import create_user
from tests.conftest import free_port
from tests.inference.conftest import INFERENCE_FIXTURES, Pipeline

DX_CHEST = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"


def test_a_spool_is_named_once_and_two_homes_on_one_machine_are_two_nodes(settings: Settings, tmp_path: Path) -> None:
    first = settings.model_copy(update={"home": tmp_path / "a"})
    second = settings.model_copy(update={"home": tmp_path / "b"})
    name = spool_node(first)
    assert name == f"{socket.gethostname()}:{(tmp_path / 'a').resolve()}"
    assert spool_node(second) != name
    assert (first.spool_dir / NODE_FILE).read_text().strip() == name
    # Kept, even when the setting changes later: the rows already made name the spool's first name.
    assert spool_node(first.model_copy(update={"node_id": "renamed"})) == name
    # A worker with this spool mounted (MEDSCREEN_SPOOL_PATH) sends as the node that named it.
    mounted = settings.model_copy(update={"home": tmp_path / "c", "spool_path": first.spool_dir, "node_id": "worker-c"})
    assert spool_node(mounted) == name
    # A fresh spool takes MEDSCREEN_NODE_ID when it is set.
    assert spool_node(settings.model_copy(update={"home": tmp_path / "d", "node_id": "ward-7"})) == "ward-7"


def _rows(ingestor: InstanceIngestor, incoming_copy, nodes: list[str | None]) -> list[int]:  # type: ignore[no-untyped-def]
    ingestor.accept_file(incoming_copy(DX_CHEST), source="dimse")
    factory = make_session_factory(ingestor.engine)
    closed = {"kind": "c-store", "ae_title": "PACS", "host": "127.0.0.1", "port": free_port()}
    ids = []
    with session_scope(factory) as session:
        study = session.scalars(select(Study)).one()
        for node in nodes:
            row = queue_outgoing(
                session, study_id=study.id, score_result_id=None, folder=study.study_instance_uid,
                sop_instance_uids=["1.2.3"], destination=closed, now=utcnow() - timedelta(hours=2), node=node,
            )
            session.flush()
            ids.append(row.id)
    return ids


def _attempts(ingestor: InstanceIngestor) -> dict[int, int]:
    with make_session_factory(ingestor.engine)() as session:
        return {row.id: row.attempts for row in session.scalars(select(OutgoingResult))}


def test_a_dispatcher_claims_only_its_own_nodes_rows(
    sqlite_settings: Settings, ingestor: InstanceIngestor, incoming_copy  # type: ignore[no-untyped-def]
) -> None:
    by_a, by_b, before = _rows(ingestor, incoming_copy, ["node-a", "node-b", None])
    factory = make_session_factory(ingestor.engine)
    slow = sqlite_settings.model_copy(update={"dispatch_retry_base_s": 3600.0})

    # A fetching worker (its own spool): its row only; the other node's and the ingest node's are not its files.
    fetching = Dispatcher(slow.model_copy(update={"ingest_url": "http://ingest:8000"}), factory, "node-a")
    claimed = fetching.dispatch_one()
    assert claimed is not None and claimed.outgoing_id == by_a and not claimed.sent
    assert fetching.dispatch_one() is None
    assert _attempts(ingestor) == {by_a: 1, by_b: 0, before: 0}

    # The ingest node (or a worker with its spool mounted): its own rows and the unnamed ones from before.
    ingest = Dispatcher(slow, factory, "node-b")
    assert [ingest.dispatch_one().outgoing_id for _ in range(2)] == [by_b, before]  # type: ignore[union-attr]
    assert ingest.dispatch_one() is None
    assert _attempts(ingestor) == {by_a: 1, by_b: 1, before: 1}


def test_the_outgoing_listing_shows_each_nodes_waiting_results_and_their_age(
    sqlite_settings: Settings, ingestor: InstanceIngestor, incoming_copy  # type: ignore[no-untyped-def]
) -> None:
    gone, alive, _ = _rows(ingestor, incoming_copy, ["gone-node", "alive-node", "alive-node"])
    with session_scope(make_session_factory(ingestor.engine)) as session:
        sent = session.get(OutgoingResult, alive)
        assert sent is not None
        sent.state, sent.sent_at = "done", utcnow()
    app = create_app(sqlite_settings)
    with TestClient(app) as client:
        with session_scope(app.state.session_factory) as session:
            create_user(session, "mle", "mle-password-long", ["ml-engineer"], actor="test")
        token = client.post("/api/auth/token", data={"username": "mle", "password": "mle-password-long"}).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        page = client.get("/api/outgoing", headers=headers).json()
        assert page["total"] == 3
        nodes = {n["node"]: n for n in page["nodes"]}
        assert nodes["gone-node"]["waiting"] == 1 and nodes["gone-node"]["last_sent_at"] is None
        assert 7000 < nodes["gone-node"]["oldest_waiting_age_s"] < 7300  # stored two hours ago
        assert nodes["alive-node"]["waiting"] == 1 and nodes["alive-node"]["last_sent_at"] is not None
        only = client.get("/api/outgoing", params={"node": "gone-node"}, headers=headers).json()
        assert [(i["id"], i["node"], i["state"]) for i in only["items"]] == [(gone, "gone-node", "queued")]
        assert only["items"][0]["age_s"] > 7000 and only["items"][0]["destination"] == "c-store"
        assert client.get("/api/outgoing").status_code == 401

        # The node is gone for good with its disk: the operator gives its waiting result up, audited.
        abandoned = client.post(f"/api/outgoing/{gone}/abandon", headers=headers)
        assert abandoned.status_code == 200 and abandoned.json()["state"] == "dead"
        assert "abandoned by mle: node gone-node" in abandoned.json()["last_error"]
        assert client.post(f"/api/outgoing/{gone}/abandon", headers=headers).status_code == 409
        assert client.post(f"/api/outgoing/{alive}/abandon", headers=headers).status_code == 409  # sent
        nodes = {n["node"]: n for n in client.get("/api/outgoing", headers=headers).json()["nodes"]}
        assert (nodes["gone-node"]["waiting"], nodes["gone-node"]["dead"]) == (0, 1)
        study_uid = only["items"][0]["study_instance_uid"]
        timeline = client.get(f"/api/studies/{study_uid}", headers=headers).json()["timeline"]
        assert timeline[-1]["kind"] == "write-back-abandoned" and timeline[-1]["detail"]["node"] == "gone-node"
    with session_scope(make_session_factory(ingestor.engine)) as session:
        assert session.scalar(
            select(AuditEvent.id).where(AuditEvent.action == "outgoing.abandon", AuditEvent.subject_id == study_uid)
        )
    # Never claimed again, even by its own node coming back.
    assert Dispatcher(sqlite_settings, make_session_factory(ingestor.engine), "gone-node").dispatch_one() is None


def test_a_rescore_names_the_previous_sr_whose_file_is_on_another_node(pipeline: Pipeline) -> None:
    from mlflow.tracking import MlflowClient

    pipeline.receive(DX_CHEST)
    pipeline.complete_route_and_score()
    with pipeline.session() as session:
        first = session.scalars(select(ScoreResult)).one()
        study = session.scalars(select(Study)).one()
    assert first.sr_sop_instance_uid and first.sr_series_instance_uid
    # The first SR was built by another node: this node's spool does not have its file.
    shutil.rmtree(outgoing_dir(pipeline.settings) / study.study_instance_uid)

    uri = pipeline.settings.resolved_mlflow_tracking_uri
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        new = log_onnx_bundle(uri, SHIPPED_MODELS_DIR / "chest-xray")
    client = MlflowClient(uri, uri)
    try:
        client.set_registered_model_alias("chest-xray", "champion", new.version)
        with session_scope(pipeline.worker.session_factory) as session:
            stored = session.get(Study, study.id)
            assert stored is not None
            request_rescore(session, stored, "test", utcnow())
        pipeline.complete_route_and_score()
    finally:
        client.set_registered_model_alias("chest-xray", "champion", "1")
    with pipeline.session() as session:
        second = session.scalars(select(ScoreResult).order_by(ScoreResult.id.desc())).first()
    assert second is not None and second.model_version == new.version and second.supersedes_id == first.id
    sr = dcmread(outgoing_dir(pipeline.settings) / study.study_instance_uid / f"{second.sr_sop_instance_uid}.dcm")
    (predecessor,) = sr.PredecessorDocumentsSequence
    assert predecessor.StudyInstanceUID == study.study_instance_uid
    (series,) = predecessor.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == first.sr_series_instance_uid
    (instance,) = series.ReferencedSOPSequence
    assert (instance.ReferencedSOPInstanceUID, instance.ReferencedSOPClassUID) == (
        first.sr_sop_instance_uid, Comprehensive3DSRStorage
    )
