"""Query and path parameters of the HTTP API: a mistyped filter is a 422 naming the allowed values (it had been
an empty list, which reads as "nothing there"), and no integer parameter reaches the database unbounded (past
2^63 - 1 SQLite and PostgreSQL fail to bind it: it had been a 500 on eight routes)."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import delete

from inference.api import QUARANTINE_KINDS
from service.db import session_scope, utcnow
from service.lifecycle import JobState, StudyStatus, Task
from service.outbox_api import Channel
from service.request_params import MAX_INT32_ROW_ID, MAX_OFFSET, MAX_PAGE, MAX_ROW_ID
from tests.service.conftest import AddUser
from worklist.tables import WorklistEvent

TOO_LARGE = 2**63


def _refused(client: TestClient, path: str, params: dict[str, str], headers: dict[str, str], name: str) -> str:
    answer = client.get(path, params=params, headers=headers)
    assert answer.status_code == 422, (path, params, answer.text)
    (error,) = answer.json()["detail"]
    assert error["loc"] == ["query", name], error
    return str(error["msg"])


def _parameter_enum(schema: dict[str, Any], path: str, name: str) -> set[str]:
    """The values the OpenAPI document lists for a query parameter (inline, or through a component)."""
    (parameter,) = [p for p in schema["paths"][path]["get"]["parameters"] if p["name"] == name]
    for option in parameter["schema"].get("anyOf", [parameter["schema"]]):
        if "$ref" in option:
            option = schema["components"]["schemas"][option["$ref"].rsplit("/", 1)[1]]
        if "enum" in option:
            return set(option["enum"])
    raise AssertionError(f"{path} {name}: no enum in {parameter}")


def test_a_mistyped_filter_is_a_422_listing_the_values(app: FastAPI, add_user: AddUser) -> None:
    admin = add_user("ada", "admin")
    client = TestClient(app, raise_server_exceptions=False)
    # Each of these had been 200 with an empty list.
    assert "'routed'" in _refused(client, "/api/studies", {"status": "routd"}, admin, "status")
    assert "'chest-xray'" in _refused(client, "/api/studies", {"task": "chest_xray"}, admin, "task")
    assert "'dead'" in _refused(client, "/api/jobs", {"state": "ded"}, admin, "state")
    # A result sent is `done` here (`sent` is the outbox's word).
    assert "'done'" in _refused(client, "/api/outgoing", {"state": "sent"}, admin, "state")
    assert "'not-dicom'" in _refused(client, "/api/quarantine", {"kind": "not_dicom"}, admin, "kind")
    assert "'hl7'" in _refused(client, "/api/outbox", {"channel": "HL7"}, admin, "channel")
    for path, params in [
        ("/api/studies", {"status": "routed", "task": "chest-xray"}),
        ("/api/jobs", {"state": "dead"}),
        ("/api/outgoing", {"state": "done"}),
        ("/api/quarantine", {"kind": "not-dicom"}),
        ("/api/outbox", {"channel": "hl7", "state": "rejected"}),
    ]:
        answer = client.get(path, params=params, headers=admin)
        assert answer.status_code == 200 and answer.json()["items"] == [], (path, answer.text)

    schema = client.get("/openapi.json", headers=admin).json()
    assert _parameter_enum(schema, "/api/studies", "status") == set(StudyStatus)
    assert _parameter_enum(schema, "/api/studies", "task") == set(Task)
    assert _parameter_enum(schema, "/api/jobs", "state") == set(JobState)
    assert _parameter_enum(schema, "/api/outgoing", "state") == set(JobState)
    assert (
        _parameter_enum(schema, "/api/quarantine", "kind") == set(QUARANTINE_KINDS) >= {"not-dicom", "patient-mismatch"}
    )
    assert _parameter_enum(schema, "/api/outbox", "channel") == {"hl7", "fhir"}


def test_the_outbox_channels_are_the_producers_channels() -> None:
    from inference.fhir_feed import FHIR_CHANNEL as RESULTS_CHANNEL
    from screening.fhir_feed import FHIR_CHANNEL as SCREENING_CHANNEL
    from worklist.ris_feed import CHANNEL as RIS_CHANNEL

    assert set(typing.get_args(Channel)) == {RIS_CHANNEL, RESULTS_CHANNEL, SCREENING_CHANNEL}


def _fields(dependant: Dependant) -> Iterator[tuple[str, Any]]:
    """(where, field) of every path, query and header parameter of a route, its dependencies' too."""
    for field in dependant.path_params:
        yield "path", field
    for field in dependant.query_params:
        yield "query", field
    for field in dependant.header_params:
        yield "header", field
    for sub in dependant.dependencies:
        yield from _fields(sub)


def _is_int(annotation: Any) -> bool:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_int(arg) for arg in typing.get_args(annotation))
    return annotation is int


def _integer_parameters(app: FastAPI) -> Iterator[tuple[RouteContext, str, str]]:
    # Included routers are resolved lazily (FastAPI 0.165): app.routes holds them, not their routes.
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute):
            for where, field in _fields(route.dependant):
                if _is_int(field.field_info.annotation):
                    yield route, where, field.alias


def test_no_integer_parameter_takes_a_value_the_database_cannot(app: FastAPI, add_user: AddUser) -> None:
    """Every route's integer query and path parameters, found by walking the app (hidden routes too), are refused
    at 2^63 with a 422 naming the parameter: a new unbounded one fails here, not as a 500 in service."""
    admin = add_user("ada", "admin")  # admin passes every role check, so the parameters are what is judged
    client = TestClient(app, raise_server_exceptions=False)
    found = set()
    for route, where, name in _integer_parameters(app):
        path = str(route.path_format)
        for other in route.param_convertors:
            path = path.replace("{" + other + "}", str(TOO_LARGE) if (where, other) == ("path", name) else "1")
        params = {name: str(TOO_LARGE)} if where == "query" else {}
        headers = {**admin, name: str(TOO_LARGE)} if where == "header" else admin
        for method in sorted(route.methods or ()):
            answer = client.request(method, path, params=params, headers=headers)
            assert answer.status_code == 422, (method, route.path, name, answer.status_code, answer.text)
            assert [where, name] in [error["loc"] for error in answer.json()["detail"]], (route.path, answer.text)
            found.add((method, route.path, name))
    # The walk saw the parameters the review found unbounded (and those bounded before it).
    assert {
        ("GET", "/api/studies", "offset"),
        ("GET", "/api/jobs", "offset"),
        ("GET", "/api/quarantine", "offset"),
        ("GET", "/api/outgoing", "offset"),
        ("POST", "/api/outgoing/{outgoing_id}/abandon", "outgoing_id"),
        ("POST", "/api/jobs/{job_id}/replay", "job_id"),
        ("GET", "/api/screening/flags", "page"),
        ("POST", "/api/screening/flags/{result_id}/outcome", "result_id"),
        ("GET", "/api/screening/outcomes", "offset"),
        ("GET", "/api/worklist", "offset"),
        ("GET", "/api/audit", "offset"),
        ("POST", "/api/outbox/{message_id}/replay", "message_id"),
    } <= found

    # The OpenAPI document states each bound.
    schema = client.get("/openapi.json", headers=admin).json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                options = parameter["schema"].get("anyOf", [parameter["schema"]])
                if any(option.get("type") == "integer" for option in options):
                    bounded = [option for option in options if option.get("type") == "integer"]
                    assert all(option.get("maximum", TOO_LARGE) <= MAX_ROW_ID for option in bounded), (
                        method,
                        path,
                        parameter,
                    )


def test_the_largest_ids_and_pages_allowed_are_a_404_or_an_empty_page(app: FastAPI, add_user: AddUser) -> None:
    """At the bound, not past it: the key of jobs, outgoing results and screening results is 32-bit on PostgreSQL
    (2^31 had been a 500 there), the outbox's 64-bit."""
    admin = add_user("ada", "admin")
    client = TestClient(app, raise_server_exceptions=False)
    for path, largest in [
        ("/api/outgoing/{}/abandon", MAX_INT32_ROW_ID),
        ("/api/jobs/{}/replay", MAX_INT32_ROW_ID),
        ("/api/screening/flags/{}/outcome", MAX_INT32_ROW_ID),
        ("/api/outbox/{}/replay", MAX_ROW_ID),
    ]:
        for row_id, expected in ((largest, 404), (largest + 1, 422), (0, 422)):
            answer = client.post(path.format(row_id), json={"outcome": "referred"}, headers=admin)
            assert answer.status_code == expected, (path, row_id, answer.text)
    for path in ("/api/studies", "/api/jobs", "/api/quarantine", "/api/outgoing", "/api/screening/outcomes"):
        answer = client.get(path, params={"offset": MAX_OFFSET}, headers=admin)
        assert answer.status_code == 200, (path, answer.text)
    flags = client.get("/api/screening/flags", params={"page": MAX_PAGE}, headers=admin)
    assert flags.status_code == 200 and flags.json()["page"] == 1  # a page past the last is the last


def test_a_last_event_id_the_database_cannot_take_starts_the_live_feed_from_now(
    app: FastAPI, add_user: AddUser
) -> None:
    """Last-Event-ID of 2^63 had failed the stream when bound (the page reconnected with it every second) and
    '²' (str.isdigit) had failed int() as a 500; either now starts from now, as a new subscriber, and the feed goes on."""
    rita = add_user("rita", "radiologist")
    client = TestClient(app, raise_server_exceptions=False)
    with session_scope(app.state.session_factory) as session:
        session.add(WorklistEvent(at=utcnow(), kind="added", study_instance_uid="1.2.3", detail={}))
    for last_event_id in (str(2**63), "9" * 5000, "\u00b2".encode("latin-1")):
        with client.stream("GET", "/api/worklist/events", headers={**rita, "Last-Event-ID": last_event_id}) as answer:
            assert answer.status_code == 200
            lines = answer.iter_lines()
            assert [next(lines) for _ in range(3)] == ["retry: 1000", "id: 1", "event: hello"]
            with session_scope(app.state.session_factory) as session:
                session.add(WorklistEvent(at=utcnow(), kind="claimed", study_instance_uid="1.2.3", detail={}))
            while (line := next(lines)) != "event: claimed":
                assert not line.startswith("event: added"), line  # the event before it connected is not sent
        with session_scope(app.state.session_factory) as session:
            session.execute(delete(WorklistEvent).where(WorklistEvent.kind == "claimed"))


def test_a_fhir_read_of_an_id_past_the_key_range_is_not_found(app: FastAPI, add_user: AddUser) -> None:
    """medscreen's FHIR ids carry a row id; one past the key's range (32-bit on PostgreSQL, 64-bit on SQLite) had
    been a 500 when bound, on PostgreSQL from 2^31 and on SQLite from 2^63, and '²' (str.isdigit) one in int()."""
    reader = add_user("ada", "admin", "radiologist", "paediatrician")
    client = TestClient(app, raise_server_exceptions=False)
    for number in (str(MAX_INT32_ROW_ID), str(MAX_INT32_ROW_ID + 1), str(TOO_LARGE), "9" * 5000, "\u00b2"):
        for resource in (
            f"DiagnosticReport/medscreen-dr-{number}",
            f"Observation/medscreen-obs-{number}-chest-xray",
            f"RiskAssessment/medscreen-ra-{number}",
            f"Flag/medscreen-flag-{number}",
        ):
            answer = client.get(f"/fhir/{resource}", headers=reader)
            assert answer.status_code == 404, (resource[:60], answer.status_code)
            assert answer.json()["resourceType"] == "OperationOutcome"
