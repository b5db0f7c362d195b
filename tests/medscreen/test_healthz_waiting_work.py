"""``/healthz`` is degraded while work waits past ``MEDSCREEN_HEALTHZ_MAX_WAIT_S``: a process alive but hung (a scoring
worker stopped in a model call, the completeness loop blocked) is ``running`` to the supervisor, and a RIS that closes
the connection without an ACK is retried without limit; ``/healthz`` had answered 200 ok while every new study stayed
unscored, or every result stayed unsent."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid
from sqlalchemy import delete

from inference.study_record import add_event
from inference.tables import OutgoingResult, ScoringJob, Study, StudyEvent
from medscreen.app import create_app
from service.db import session_scope, utcnow
from service.outbox import OutboxMessage, OutboxState, RetryPolicy, add_message, dispatch
from service.settings import Settings
from tests.ports import free_port


@pytest.fixture(scope="module")
def silent_ris() -> Iterator[int]:
    """A RIS listener that takes each message and closes the connection without an ACK (one it cannot parse)."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            connection.recv(65536)
            connection.close()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, silent_ris: int) -> Iterator[TestClient]:
    settings = Settings(home=tmp_path_factory.mktemp("home") / "var", http_port=free_port(), dicom_port=free_port(),
                        min_free_disk_mb=1, healthz_max_wait_s=600, ris_host="127.0.0.1", ris_port=silent_ris)
    app = create_app(settings, process_states=lambda: [])
    with TestClient(app) as client:
        yield client
    app.state.engine.dispose()


@pytest.fixture(autouse=True)
def empty(client: TestClient) -> Iterator[None]:
    yield
    with session_scope(client.app.state.session_factory) as session:  # type: ignore[attr-defined]
        for table in (StudyEvent, ScoringJob, OutgoingResult, Study, OutboxMessage):
            session.execute(delete(table))


def _ages_dropped(problems: list[str]) -> list[str]:
    """The ages as N, after checking each is about an hour or 20 minutes (the rows' ages below, plus the test's run)."""
    ages = [int(age) for problem in problems for age in re.findall(r"the oldest (\d+) s", problem)]
    assert all(any(0 <= age - expected < 30 for expected in (3600, 1200)) for age in ages), ages
    return [re.sub(r"the oldest \d+ s", "the oldest N s", problem) for problem in problems]


def _study(client: TestClient, status: str, age_s: float) -> int:
    at = utcnow() - timedelta(seconds=age_s)
    with session_scope(client.app.state.session_factory) as session:  # type: ignore[attr-defined]
        study = Study(study_instance_uid=generate_uid(), status=status, revision=1, modality="CR", task="chest-xray",
                      instance_count=1, first_received_at=at, last_received_at=at, completed_at=at, routed_at=at)
        session.add(study)
        session.flush()
        add_event(session, study.id, 1, "routed", at, task="chest-xray")
        return study.id


def _job(client: TestClient, study_id: int, state: str, age_s: float) -> None:
    at = utcnow() - timedelta(seconds=age_s)
    with session_scope(client.app.state.session_factory) as session:  # type: ignore[attr-defined]
        session.add(ScoringJob(study_id=study_id, revision=1, task="chest-xray", model_name="chest-xray",
                               model_version="1", role="champion", state=state, attempts=0, next_attempt_at=at,
                               lease_owner="host:1", lease_until=utcnow() + timedelta(seconds=30),
                               created_at=at, updated_at=at))


def test_a_study_routed_long_ago_with_no_job_is_degraded(client: TestClient) -> None:
    """The scoring worker SIGSTOPped (or stuck in a model call): studies stay routed, no job is ever queued."""
    _study(client, "routed", 60)
    assert client.get("/healthz").status_code == 200  # routed a minute ago: within the limit
    _study(client, "routed", 3600)
    answer = client.get("/healthz")
    assert answer.status_code == 503 and answer.json()["status"] == "degraded"
    assert _ages_dropped(answer.json()["problems"]) == [
        "1 routed studies have waited more than the MEDSCREEN_HEALTHZ_MAX_WAIT_S limit (the oldest N s): no scoring "
        "job queued (a scoring worker may be hung, or the task has no champion)"
    ]


def test_a_job_running_or_due_long_ago_is_degraded_and_a_waiting_retry_is_not(client: TestClient) -> None:
    """A worker hung in a model call keeps renewing its lease from its lease thread: the job stays `running` for ever."""
    study = _study(client, "scoring", 10)
    _job(client, study, "retry", -60)  # due in a minute: its backoff, not a backlog
    assert client.get("/healthz").status_code == 200
    _job(client, _study(client, "scoring", 10), "running", 1200)
    answer = client.get("/healthz")
    assert answer.status_code == 503
    assert [p for p in _ages_dropped(answer.json()["problems"]) if "scoring jobs" in p] == [
        "1 scoring jobs have waited more than the MEDSCREEN_HEALTHZ_MAX_WAIT_S limit (the oldest N s): not been "
        "scored (a scoring worker may be hung or too few for the load)"
    ]


def test_studies_the_completeness_loop_never_completed_or_routed_are_degraded(client: TestClient) -> None:
    _study(client, "receiving", 5)  # within its quiet period
    assert client.get("/healthz").status_code == 200
    _study(client, "receiving", 3600)
    _study(client, "complete", 3600)
    problems = client.get("/healthz").json()["problems"]
    assert len(problems) == 2 and all("the completeness loop may be hung" in p for p in problems)


def test_a_ris_that_never_acknowledges_the_oldest_message_is_degraded(client: TestClient, silent_ris: int) -> None:
    """Each pass offers the oldest message again (an unreachable peer is waited for without limit) and every later
    one waits behind it; only the RIS channel is configured, so an EMR message left over is not a problem."""
    from worklist.mllp import send_mllp
    from worklist.ris_feed import CONTENT_TYPE

    factory = client.app.state.session_factory  # type: ignore[attr-defined]
    with session_scope(factory) as session:
        add_message(session, "hl7", "MSR1", "result 1", "MSH|^~\\&|", CONTENT_TYPE, utcnow() - timedelta(hours=1))
        add_message(session, "hl7", "MSR2", "result 2", "MSH|^~\\&|", CONTENT_TYPE, utcnow())
        add_message(session, "fhir", "R1", "result 1", "{}", "application/fhir+json", utcnow() - timedelta(hours=1))
    sent = dispatch(factory, "hl7", lambda out: send_mllp("127.0.0.1", silent_ris, out.payload, timeout=2),
                    RetryPolicy(retry_s=30, max_attempts=3))
    with session_scope(factory) as session:
        states = {m.key: (m.state, m.attempts) for m in session.query(OutboxMessage).where(OutboxMessage.channel == "hl7")}
        head = session.query(OutboxMessage).where(OutboxMessage.key == "MSR1").one()
        assert "RIS at 127.0.0.1" in (head.last_error or "")  # the connection closed without an ACK
    assert sent == 0 and states == {"MSR1": (OutboxState.pending, 1), "MSR2": (OutboxState.pending, 0)}
    answer = client.get("/healthz")
    assert answer.status_code == 503
    assert _ages_dropped(answer.json()["problems"]) == [
        "1 messages for the RIS have waited more than the MEDSCREEN_HEALTHZ_MAX_WAIT_S limit (the oldest N s): not "
        "been sent (the RIS is down or does not acknowledge the oldest; GET /api/outbox?channel=hl7&state=pending says why)"
    ]
    assert str(silent_ris) not in answer.text  # the peer's address stays behind login


def _write_back(client: TestClient, state: str, *, last_error: str | None = None, age_s: float = 60) -> None:
    at = utcnow() - timedelta(seconds=age_s)
    study = _study(client, "scored", age_s)
    with session_scope(client.app.state.session_factory) as session:  # type: ignore[attr-defined]
        session.add(OutgoingResult(study_id=study, folder=f"r{study}", sop_instance_uids=[generate_uid()],
                                   destination={"kind": "c-store", "ae_title": "PACS", "host": "127.0.0.1", "port": 1},
                                   state=state, attempts=8 if state == "dead" else 0, next_attempt_at=at,
                                   last_error=last_error, created_at=at, sent_at=at if state == "done" else None))


def test_write_backs_dead_since_the_last_that_reached_the_pacs_are_degraded_until_one_does(client: TestClient) -> None:
    """A result is retried for minutes and then dead, so its age never passed the limit: /healthz had said ok while
    every SR and heat-map failed to reach the PACS (review round 8, left by monitoring)."""
    _write_back(client, "done")
    _write_back(client, "dead", last_error="abandoned by eve: node w2 gone with the files")  # known already
    assert client.get("/healthz").status_code == 200
    _write_back(client, "dead", last_error="association rejected by the PACS")
    _write_back(client, "dead", last_error="connection refused")
    answer = client.get("/healthz")
    assert answer.status_code == 503
    assert [re.sub(r"made \d+ s ago", "made N s ago", p) for p in answer.json()["problems"]] == [
        "2 results could not be written back to the PACS since the last one that was (the oldest made N s ago): the "
        "PACS refuses them or cannot be reached; GET /api/outgoing?state=dead says why"
    ]
    _write_back(client, "done")  # the PACS takes results again
    assert client.get("/healthz").status_code == 200
    _write_back(client, "retry", age_s=3600)  # due an hour ago: the dispatcher is not sending
    assert _ages_dropped(client.get("/healthz").json()["problems"]) == [
        "1 results for the PACS have waited more than the MEDSCREEN_HEALTHZ_MAX_WAIT_S limit (the oldest N s): not "
        "been sent (the write-back dispatcher may be hung)"
    ]
