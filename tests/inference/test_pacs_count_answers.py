"""A PACS count answer that is not a count is "no count": completeness goes on by the quiet period.

An HTTP 200 login page from the QIDO-RS URL made ``count`` raise, which rolled back the whole completeness
pass, every pass: no study ever completed (review defect 3).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy import select

from inference.complete import CompletenessMonitor
from inference.ingest import InstanceIngestor
from inference.pacs_count import CFindInstanceCounter, QidoInstanceCounter
from inference.route import load_rules
from inference.tables import Study
from service.db import make_engine, make_session_factory
from tests.conftest import free_port
from tests.inference.conftest import INFERENCE_FIXTURES

DX = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"
CT = INFERENCE_FIXTURES / "images" / "ct_small_pydicom.dcm"
COUNT = Tag(0x00201208)  # NumberOfStudyRelatedInstances
LOGIN_PAGE = ("text/html", b"<html><body>Please log in</body></html>")


@dataclass
class QidoServer:
    """A loopback HTTP server answering every QIDO-RS study search with ``answer`` (content type, body)."""

    url: str
    answer: tuple[str, bytes] = field(default=LOGIN_PAGE)


@pytest.fixture
def qido() -> Iterator[QidoServer]:
    server_state = QidoServer("")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            content_type, body = server_state.answer
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server_state.url = f"http://127.0.0.1:{httpd.server_address[1]}/dicom-web"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield server_state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _json(value: object) -> tuple[str, bytes]:
    return ("application/dicom+json", json.dumps(value).encode())


@pytest.mark.parametrize(
    "answer",
    [
        LOGIN_PAGE,
        _json({"error": "unauthorised"}),
        _json([{"00201208": {"vr": "IS", "Value": ["twelve"]}}]),
        _json([{"00201208": "12"}]),
        _json(["not a study"]),
        _json([{"00201208": {"vr": "IS", "Value": [-3]}}]),
    ],
    ids=["html", "json-error-object", "non-numeric", "not-an-element", "not-an-object", "negative"],
)
def test_a_qido_answer_that_is_not_a_count_is_no_count(qido: QidoServer, answer: tuple[str, bytes]) -> None:
    qido.answer = answer
    assert QidoInstanceCounter(qido.url).count("1.2.3") is None


def test_a_well_formed_qido_count_is_read(qido: QidoServer) -> None:
    qido.answer = _json([{"00201208": {"vr": "IS", "Value": [12]}}])
    assert QidoInstanceCounter(qido.url).count("1.2.3") == 12


def _monitor(ingestor: InstanceIngestor, counter: object) -> CompletenessMonitor:
    factory = make_session_factory(make_engine(ingestor.settings.resolved_database_url, serialise_writes=True))
    return CompletenessMonitor(ingestor.settings.model_copy(update={"quiet_period_s": 0.0}), factory, load_rules(), counter)


def _receive(ingestor: InstanceIngestor, incoming_copy, *paths) -> None:  # noqa: ANN001 - the conftest fixture
    for path in paths:
        ingestor.accept_file(incoming_copy(path), source="dimse")


def _statuses(ingestor: InstanceIngestor) -> dict[str, str]:
    with make_session_factory(ingestor.engine)() as session:
        return {study.modality: study.status for study in session.scalars(select(Study))}


def test_a_login_page_from_the_qido_url_does_not_stop_completeness(
    ingestor: InstanceIngestor, incoming_copy, qido: QidoServer  # noqa: ANN001
) -> None:
    _receive(ingestor, incoming_copy, DX, CT)
    completed = _monitor(ingestor, QidoInstanceCounter(qido.url)).complete_quiet_studies()
    assert sorted(c.reason for c in completed) == ["quiet-period", "quiet-period"]
    assert _statuses(ingestor) == {"DX": "complete", "CT": "complete"}


class _FailsFor:
    """A counter that breaks for one study only: whatever it raises must stay that study's problem."""

    def __init__(self, study_uid: str) -> None:
        self.study_uid = study_uid

    def count(self, study_instance_uid: str) -> int | None:
        if study_instance_uid == self.study_uid:
            raise RuntimeError("the PACS connection broke mid-answer")
        return None


def test_one_studys_failure_does_not_roll_back_the_others(
    ingestor: InstanceIngestor, incoming_copy  # noqa: ANN001
) -> None:
    _receive(ingestor, incoming_copy, DX, CT)
    with make_session_factory(ingestor.engine)() as session:
        ct_uid = session.scalars(select(Study.study_instance_uid).where(Study.modality == "CT")).one()
    monitor = _monitor(ingestor, _FailsFor(ct_uid))
    assert [c.study_instance_uid for c in monitor.complete_quiet_studies()] != []
    assert _statuses(ingestor) == {"DX": "complete", "CT": "receiving"}
    monitor.counter = _FailsFor("none")  # the next pass, once the PACS answers again
    monitor.complete_quiet_studies()
    assert _statuses(ingestor) == {"DX": "complete", "CT": "complete"}


@pytest.fixture
def cfind_scp() -> Iterator[tuple[ThreadedAssociationServer, int]]:
    """A real pynetdicom Q/R SCP answering a non-numeric NumberOfStudyRelatedInstances."""

    def on_find(event: evt.Event):  # noqa: ANN202 - pynetdicom's handler shape
        answer = Dataset()
        answer.QueryRetrieveLevel = "STUDY"
        answer.StudyInstanceUID = event.identifier.StudyInstanceUID
        # Raw bytes: pydicom would refuse to encode the bad value, as a well-behaved PACS does not.
        answer[COUNT] = RawDataElement(COUNT, "IS", 6, b"twelve", 0, False, True)
        yield 0xFF00, answer

    ae = AE(ae_title="PACS")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_FIND, on_find)])
    yield server, port
    server.shutdown()


def test_a_cfind_count_that_is_not_a_number_is_no_count(cfind_scp: tuple[ThreadedAssociationServer, int]) -> None:
    assert CFindInstanceCounter("127.0.0.1", cfind_scp[1], "PACS", "MEDSCREEN").count("1.2.3") is None
