"""Sending FHIR transaction Bundles from the outbox to the EMR's FHIR base URL (``MEDSCREEN_FHIR_PUSH_URL``).

2xx: delivered. 4xx (but 408 and 429): the EMR refused this Bundle for itself, set aside with its
OperationOutcome. 408, 429, 5xx: offered again. No connection or no answer in time: waited for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import urlencode

import httpx
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.resource import Resource

from service.errors import DeliveryFailed, PeerUnreachable
from service.outbox import Outgoing

__all__ = ["FhirSender", "FHIR_JSON", "transaction_bundle", "searchset_bundle"]

FHIR_JSON = "application/fhir+json"


class FhirSender:
    def __init__(self, base_url: str, *, token: str | None, timeout_s: float) -> None:
        headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self.client = httpx.Client(headers=headers, timeout=timeout_s)

    def __call__(self, message: Outgoing) -> str:
        try:
            response = self.client.post(self.base_url, content=message.payload.encode("utf-8"))
        except httpx.TimeoutException as exc:
            raise PeerUnreachable(f"no answer from the EMR at {self.base_url}: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise PeerUnreachable(f"EMR at {self.base_url}: {type(exc).__name__}: {exc}") from exc
        except httpx.RequestError as exc:  # an answer that could not be read (a broken gzip body): sent or not, unknown
            # The Bundle PUTs to stable ids, so a resend replaces; it had escaped the pass, retried without a count.
            raise DeliveryFailed(f"the EMR's answer could not be read: {type(exc).__name__}: {exc}") from exc
        if response.is_redirect:
            # A moved endpoint (http -> https, a new base URL) is the site's setting, not this message: every message
            # waits, in order, until the URL is set right (a 3xx had set each one aside as refused).
            raise PeerUnreachable(
                f"the EMR at {self.base_url} answered HTTP {response.status_code}, redirecting to "
                f"{response.headers.get('location', '(no location)')}: set MEDSCREEN_FHIR_PUSH_URL to the FHIR base it names"
            )
        if response.is_success:
            return f"HTTP {response.status_code} {response.text[:2000]}"
        detail = f"HTTP {response.status_code}: {response.text[:1000]}"
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise DeliveryFailed(f"the EMR answered {detail}")
        raise DeliveryFailed(f"the EMR refused it: {detail}", permanent=True)

    def close(self) -> None:
        self.client.close()


def transaction_bundle(resources: list[Resource]) -> Bundle:
    """A transaction of PUTs: one request, all or nothing at the EMR, and a resend replaces the same ids."""
    return Bundle.model_validate({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": json.loads(r.model_dump_json(exclude_none=True)),
                "request": {"method": "PUT", "url": f"{r.get_resource_type()}/{r.id}"},
            }
            for r in resources
        ],
    })


def searchset_bundle(
    base_url: str, resources: list[Resource], *, searched: Mapping[str, str], match: str = "DiagnosticReport"
) -> Bundle:
    """A search answer: resources of type ``match`` are the matches, the rest are included with them.

    Its ``self`` link is the search run, with only the parameters applied (``searched``): R4 (search.html) has the
    server say which parameters it used, so that a client whose other parameter (``status``, ``date``) was not
    applied can tell; the answer had had no link, and read as filtered by all of them.

    Each resource once, by type and id: R4 requires a fullUrl to be unique in a Bundle (bdl-7), and two results of
    one model version (a study re-opened by a late instance and scored again) name the same Device; strict
    clients and validators refuse the whole answer otherwise."""
    first_of: dict[tuple[str, str | None], Resource] = {}
    for resource in resources:
        first_of.setdefault((resource.get_resource_type(), resource.id), resource)
    unique = list(first_of.values())
    return Bundle.model_validate({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": sum(1 for r in unique if r.get_resource_type() == match),
        "link": [{"relation": "self", "url": f"{base_url.rstrip('/')}/{match}?{urlencode(searched)}"}],
        "entry": [
            {
                "fullUrl": f"{base_url.rstrip('/')}/{r.get_resource_type()}/{r.id}",
                "resource": json.loads(r.model_dump_json(exclude_none=True)),
                "search": {"mode": "match" if r.get_resource_type() == match else "include"},
            }
            for r in unique
        ],
    })
