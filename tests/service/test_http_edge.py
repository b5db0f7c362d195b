"""The HTTP edge app-wide, through the real app: FHIR endpoints answer errors as OperationOutcome and only in JSON,
a FHIR body must be JSON, HEAD is answered as GET without the body (login applies), and a 405 lists every method
of the path (review: http_cli defects 1, 3, 4)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.service.conftest import AddUser

FHIR_JSON = "application/fhir+json"
# The edge does not depend on the database: SQLite only.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def outcome(answer, status_code: int) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    """The issues of an OperationOutcome answer, checked for its status and media type."""
    assert answer.status_code == status_code, answer.text
    assert answer.headers["content-type"].startswith(FHIR_JSON), answer.headers
    body = answer.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert all(issue["severity"] == "error" and issue["diagnostics"] for issue in body["issue"])
    return body["issue"]


def test_every_fhir_error_is_an_operation_outcome(app: FastAPI, client: TestClient, add_user: AddUser) -> None:
    # These had been FastAPI's {"detail": ...} as application/json; only the endpoints' own 404s were outcomes.
    rita = add_user("rita", "radiologist")
    paed = add_user("paula", "paediatrician")

    no_login = client.get("/fhir/DiagnosticReport", params={"study": "1.2.3"})
    assert [issue["code"] for issue in outcome(no_login, 401)] == ["login"]
    assert no_login.headers["www-authenticate"] == "Bearer"
    assert [i["code"] for i in outcome(client.get("/fhir/DiagnosticReport", params={"study": "1.2"}, headers=paed), 403)] == [
        "forbidden"
    ]
    missing = outcome(client.get("/fhir/DiagnosticReport", headers=rita), 422)
    assert missing == [{"severity": "error", "code": "required", "diagnostics": "query study: Field required"}]
    assert [i["code"] for i in outcome(client.get("/fhir/Patient/1", headers=rita), 404)] == ["not-found"]
    assert [i["code"] for i in outcome(client.get("/fhir/DiagnosticReport/medscreen-dr-1", headers=rita), 404)] == [
        "not-found"
    ]
    # A method the path does not take: the request guard's 401 (a body method without a token), then the router's 405.
    assert [i["code"] for i in outcome(client.delete("/fhir/DiagnosticReport/x"), 401)] == ["login"]
    not_allowed = client.delete("/fhir/DiagnosticReport/x", headers=rita)
    assert [i["code"] for i in outcome(not_allowed, 405)] == ["not-supported"]
    assert not_allowed.headers["allow"] == "GET, HEAD"

    # A server error is one too, without the exception's text; the failure still reaches the server's log.
    with app.state.engine.begin() as connection:
        connection.execute(text("ALTER TABLE score_results RENAME TO score_results_gone"))
    failing = TestClient(app, raise_server_exceptions=False)
    broken = outcome(failing.get("/fhir/DiagnosticReport/medscreen-dr-1", headers=rita), 500)
    assert [i["code"] for i in broken] == ["exception"] and "score_results" not in broken[0]["diagnostics"]

    # The rest of the API keeps its own error format.
    plain = client.get("/api/studies")
    assert plain.status_code == 401 and plain.headers["content-type"] == "application/json"
    assert plain.json() == {"detail": "not authenticated"}


def test_fhir_answers_json_only_and_says_so_to_a_client_that_wants_xml(client: TestClient, add_user: AddUser) -> None:
    # Accept: application/fhir+xml had been answered 200 with JSON.
    rita = add_user("rita", "radiologist")
    search = "/fhir/DiagnosticReport?study=1.2.3"
    for accept in ("application/fhir+xml", "application/xml, text/xml", "application/fhir+json;q=0, application/fhir+xml"):
        refused = outcome(client.get(search, headers={**rita, "Accept": accept}), 406)
        assert refused[0]["code"] == "not-supported" and "JSON only" in refused[0]["diagnostics"]
    assert "JSON only" in outcome(client.get(search + "&_format=xml", headers=rita), 406)[0]["diagnostics"]
    for accept in ("application/fhir+json", "application/json", "*/*", "application/fhir+xml, application/fhir+json;q=0.5",
                   "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"):
        answer = client.get(search, headers={**rita, "Accept": accept})
        assert answer.status_code == 200 and answer.json()["resourceType"] == "Bundle", (accept, answer.text)
    # FHIR's _format overrides Accept.
    assert client.get(search + "&_format=json", headers={**rita, "Accept": "application/fhir+xml"}).status_code == 200
    # A '+' left unescaped (as browsers and curl send it) had been read as a space: fhir+json was refused 406.
    for written in ("application/fhir+json", "application/json+fhir", "application/fhir+json;fhirVersion=4.0"):
        assert client.get(f"{search}&_format={written}", headers=rita).status_code == 200, written
    assert "_format=application/fhir+xml" in outcome(client.get(search + "&_format=application/fhir+xml", headers=rita), 406)[0]["diagnostics"]
    # Not FHIR: the rest of the API does not negotiate.
    assert client.get("/api/studies", headers={**rita, "Accept": "application/xml"}).status_code == 200


def test_fhir_xml_posted_for_screening_is_415_with_the_reason(client: TestClient, add_user: AddUser) -> None:
    # It had been a 422 saying the body "should be a valid dictionary".
    paed = add_user("paula", "paediatrician")
    xml = b'<Bundle xmlns="http://hl7.org/fhir"><type value="collection"/></Bundle>'
    for content_type in ("application/fhir+xml", "application/xml", "text/xml; charset=utf-8"):
        answer = client.post("/api/screening", content=xml, headers={**paed, "Content-Type": content_type})
        assert answer.status_code == 415, (content_type, answer.text)
        assert answer.headers["content-type"] == "application/json"  # /api keeps its error format
        detail = answer.json()["detail"]
        assert "must be FHIR JSON" in detail and content_type.split(";")[0] in detail
    # FHIR JSON under its own media type is read (this Bundle holds no Patient: the screener's own 422).
    empty = client.post("/api/screening", content=b'{"resourceType": "Bundle", "type": "collection"}',
                        headers={**paed, "Content-Type": "application/fhir+json; charset=utf-8"})
    assert empty.status_code == 422 and "no Patient resource in the Bundle" in empty.json()["detail"], empty.text


def test_head_is_answered_as_get_without_a_body_and_needs_the_same_login(client: TestClient, add_user: AddUser) -> None:
    # HEAD had been 405 everywhere but /healthz: FastAPI adds no HEAD to its routes.
    rita = add_user("rita", "radiologist")
    for url in ("/api/studies", "/fhir/DiagnosticReport?study=1.2.3", "/worklist"):
        get, head = client.get(url, headers=rita), client.head(url, headers=rita)
        assert get.status_code == head.status_code == 200, (url, head.status_code)
        assert head.content == b"" and int(head.headers["content-length"]) == len(get.content) > 0
        assert head.headers["content-type"] == get.headers["content-type"]
    assert client.head("/api/studies").status_code == 401  # login applies as to GET
    assert client.head("/fhir/DiagnosticReport?study=1.2.3").status_code == 401
    assert client.head("/api/studies", headers=add_user("paula", "paediatrician")).status_code == 403
    # A path without GET has no HEAD either.
    refused = client.head("/api/auth/token")
    assert refused.status_code == 405 and refused.headers["allow"] == "POST" and refused.content == b""


def test_a_405_lists_every_method_of_the_path(client: TestClient, add_user: AddUser) -> None:
    # STOW-RS (POST) and WADO-RS (GET) share /dicomweb/studies/{study}: the 405 had said "Allow: POST".
    sender = add_user("pacs", "sender", "radiologist")
    for method in ("DELETE", "PUT", "PATCH"):
        answer = client.request(method, "/dicomweb/studies/1.2.3", headers=sender)
        assert answer.status_code == 405 and answer.headers["allow"] == "GET, HEAD, POST", (method, answer.headers)
    assert client.delete("/api/studies", headers=sender).headers["allow"] == "GET, HEAD"
    assert client.get("/api/auth/token").headers["allow"] == "POST"
