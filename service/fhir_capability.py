"""``GET /fhir/metadata``: the CapabilityStatement that FHIR clients read before anything else.

A HAPI FHIR client (its default server validation) fetches ``[base]/metadata`` before its first request and gives up
with "Failed to retrieve the server metadata statement" without one; it also refuses a server whose ``fhirVersion``
is not its own, so this one says R4 (4.0.1): the resources are R4's (built with fhir.resources' R4B models, which
carry them unchanged). A SMART app or an interface engine's set-up reads it without a token, so it is public, and
holds no patient data. The statement is made from the app's own routes under ``/fhir`` (their OpenAPI description),
so a resource or a search parameter added there is declared without a second list to keep in step.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from service.fhir_push import FHIR_JSON

__all__ = ["capability_router", "capability_statement", "FHIR_VERSION"]

FHIR_VERSION = "4.0.1"
_READ = re.compile(r"/fhir/([A-Z][A-Za-z]+)/\{[a-z_]+\}")
_SEARCH = re.compile(r"/fhir/([A-Z][A-Za-z]+)")
# FHIR's type of each search parameter the routes take (search.html#ptypes): a study by its UID is a token,
# a subject or patient a reference. A name not listed is declared a string, the plainest type.
_SEARCH_TYPES = {"study": "token", "subject": "reference", "patient": "reference"}


def capability_statement(openapi: dict[str, Any], base_url: str, software_version: str, started: datetime) -> dict[str, Any]:
    """The statement of the FHIR interactions the ``/fhir`` paths of ``openapi`` offer, validated as R4B's model."""
    resources: dict[str, dict[str, Any]] = {}
    for path, operations in sorted(openapi.get("paths", {}).items()):
        get = operations.get("get")
        read, search = _READ.fullmatch(path), _SEARCH.fullmatch(path)
        if get is None or not (read or search):
            continue
        kind = (read or search).group(1)  # type: ignore[union-attr]
        resource = resources.setdefault(kind, {"type": kind, "interaction": [], "searchParam": []})
        if read:
            resource["interaction"].append({"code": "read", "documentation": get.get("summary", "")})
            continue
        resource["interaction"].append({"code": "search-type", "documentation": get.get("summary", "")})
        for parameter in get.get("parameters", []):
            if parameter.get("in") == "query":
                resource["searchParam"].append({
                    "name": parameter["name"],
                    "type": _SEARCH_TYPES.get(parameter["name"], "string"),
                    "documentation": parameter.get("description", "")
                    + (" (required)" if parameter.get("required") else ""),
                })
    statement = CapabilityStatement.model_validate({
        "status": "active",
        "date": started.isoformat(timespec="seconds"),
        "publisher": "medscreen",
        "kind": "instance",
        "software": {"name": "medscreen", "version": software_version},
        "implementation": {
            "description": "medscreen decision support: results and screening flags, read only; not diagnoses",
            "url": base_url,
        },
        "fhirVersion": FHIR_VERSION,
        "format": [FHIR_JSON, "json"],
        "rest": [{
            "mode": "server",
            "security": {"description": "Every resource needs a bearer token from POST /api/auth/token and the "
                                        "role its read names; this statement needs none."},
            "resource": [
                {key: value for key, value in resource.items() if value} for _, resource in sorted(resources.items())
            ],
        }],
    })
    return statement.model_dump(mode="json", exclude_none=True)


def capability_router() -> APIRouter:
    """The ``/fhir/metadata`` route; the statement is dated when the router is made (the app's start)."""
    router = APIRouter(prefix="/fhir", tags=["fhir"])
    started = datetime.now(UTC)

    @router.get("/metadata", summary="The server's CapabilityStatement (FHIR R4), without login")
    def metadata(request: Request) -> JSONResponse:
        body = capability_statement(request.app.openapi(), str(request.base_url) + "fhir", request.app.version, started)
        return JSONResponse(body, media_type=FHIR_JSON)

    return router
