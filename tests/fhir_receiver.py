"""A small real FHIR R4 receiver for the tests (no FHIR server installs from the registries here): an HTTP
endpoint that takes transaction Bundles, validates the Bundle and every resource in it with fhir.resources
(R4B), keeps them by type and id as a server would (PUT replaces), and answers a transaction-response."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from tests.peers import app_in_thread


@dataclass
class FhirReceiver:
    url: str = ""
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    transactions: list[list[str]] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    answer_status: list[int] = field(default_factory=list)  # statuses to answer first, one per request

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/fhir")
        async def transaction(request: Request) -> JSONResponse:
            if self.answer_status:
                code = self.answer_status.pop(0)
                return JSONResponse({"resourceType": "OperationOutcome", "issue": [
                    {"severity": "error", "code": "transient" if code >= 500 else "invalid", "diagnostics": "test"}
                ]}, status_code=code, media_type="application/fhir+json")
            try:
                bundle = Bundle.model_validate_json(await request.body())
                assert bundle.type == "transaction"
                keys = []
                for entry in bundle.entry or []:
                    body = entry.resource.model_dump(mode="json", exclude_none=True)
                    model = get_fhir_model_class(body["resourceType"])
                    resource = model.model_validate(body)
                    assert entry.request.method == "PUT"
                    assert entry.request.url == f"{body['resourceType']}/{resource.id}"
                    keys.append(entry.request.url)
                    self.resources[entry.request.url] = body
            except Exception as exc:  # noqa: BLE001 - anything invalid is a 400 with the reason, as a server says
                self.invalid.append(str(exc))
                return JSONResponse({"resourceType": "OperationOutcome", "issue": [
                    {"severity": "error", "code": "invalid", "diagnostics": str(exc)[:500]}]}, status_code=400)
            self.transactions.append(keys)
            return JSONResponse({
                "resourceType": "Bundle", "type": "transaction-response",
                "entry": [{"response": {"status": "200 OK", "location": key}} for key in keys],
            }, media_type="application/fhir+json")

        return app


@contextmanager
def fhir_receiver() -> Iterator[FhirReceiver]:
    receiver = FhirReceiver()
    with app_in_thread(receiver.app()) as base:
        receiver.url = f"{base}/fhir"
        yield receiver
