"""``GET /fhir/metadata``: the CapabilityStatement a FHIR client reads first (review7 fhir_conformance)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_metadata_is_an_r4_capability_statement_of_the_fhir_routes_without_login(client: TestClient) -> None:
    # It had been a 404: a HAPI client (its default server validation) fetches [base]/metadata before its first
    # request and stops without it, and refuses a server whose fhirVersion is not R4's.
    answer = client.get("/fhir/metadata", headers={"Accept": "application/fhir+json"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/fhir+json")
    statement = answer.json()
    CapabilityStatement.model_validate(statement)
    assert statement["fhirVersion"] == "4.0.1" and statement["kind"] == "instance"
    assert statement["implementation"]["url"] == "http://testserver/fhir"
    assert "application/fhir+json" in statement["format"]
    (rest,) = statement["rest"]
    assert rest["mode"] == "server"
    declared = {
        r["type"]: (sorted(i["code"] for i in r["interaction"]), [(p["name"], p["type"]) for p in r.get("searchParam", [])])
        for r in rest["resource"]
    }
    assert declared == {
        "DiagnosticReport": (["read", "search-type"], [("study", "token")]),
        "Observation": (["read"], []),
        "Device": (["read"], []),
        "RiskAssessment": (["read", "search-type"], [("subject", "reference"), ("patient", "reference")]),
        "Flag": (["read"], []),
    }
    assert client.head("/fhir/metadata").status_code == 200
