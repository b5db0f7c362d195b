"""FHIR over HTTP at medscreen's edge: which formats it speaks (JSON only) and how its FHIR endpoints answer errors.

FHIR R4 (http.html) wants every failed interaction answered with an ``OperationOutcome`` in a FHIR format. The
``/fhir`` endpoints had answered their own 404s so, but every other error (401, 403, a search parameter missing,
an unknown resource type, a 405, a 500) in FastAPI's ``{"detail": ...}`` as ``application/json``. :class:`FhirEdge`
turns every error answer under ``/fhir``, whoever made it (an endpoint, a dependency, the router, the request guard,
an unhandled exception), into an ``OperationOutcome`` as ``application/fhir+json``, keeping its status and headers
(``WWW-Authenticate``, ``Allow``, ``Retry-After``). The rest of the API keeps its JSON errors.

medscreen reads and writes FHIR JSON only. A client that accepts only XML (``Accept: application/fhir+xml``, or
``_format=xml``) had been sent JSON with a 200: it is answered 406. A request body that is not JSON (FHIR XML posted
to ``/api/screening``) had been a 422 about a "dictionary": :func:`require_json_body` answers 415 and says why.
"""

from __future__ import annotations

import json
from email.message import Message as MimeHeader
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from fastapi import HTTPException, Request, status
from fhir.resources.R4B.operationoutcome import OperationOutcome
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.fhir_push import FHIR_JSON

__all__ = ["FhirEdge", "operation_outcome", "accepts_fhir_json", "require_json_body"]

# ``application/json+fhir`` is DSTU2's name, still sent by older clients.
_JSON_TYPES = frozenset({FHIR_JSON, "application/json", "application/json+fhir"})
_ANY_JSON = _JSON_TYPES | {"*/*", "application/*"}
_FORMAT_JSON = _JSON_TYPES | {"json"}
# FHIR IssueType (valueset-issue-type) of an error status; any other 4xx is `processing`, 5xx `exception`.
_ISSUE_CODE = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    410: "deleted",
    412: "conflict",
    413: "too-costly",
    415: "not-supported",
    422: "invalid",
    429: "throttled",
    500: "exception",
    501: "not-supported",
    503: "transient",
    504: "timeout",
}


def operation_outcome(status_code: int, diagnostics: list[str], *, codes: list[str] | None = None) -> bytes:
    """An ``OperationOutcome`` with one error issue per diagnostic, coded for ``status_code`` unless ``codes``."""
    default = _ISSUE_CODE.get(status_code, "processing" if status_code < 500 else "exception")
    issues = [
        {"severity": "error", "code": (codes[i] if codes else default), "diagnostics": text}
        for i, text in enumerate(diagnostics)
    ]
    outcome = OperationOutcome.model_validate({"issue": issues})
    return outcome.model_dump_json(exclude_none=True).encode()


def _media_ranges(header: str) -> list[tuple[str, float]]:
    """(media range, q) of an Accept header, lower-cased; an unreadable q counts as 1, as most servers read it."""
    ranges = []
    for item in header.split(","):
        kind, _, params = item.partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    pass
        if kind.strip():
            ranges.append((kind.strip().lower(), quality))
    return ranges


def accepts_fhir_json(accept: str | None, format_parameter: str | None) -> bool:
    """Whether a client can take FHIR JSON: FHIR's ``_format`` overrides Accept; no Accept takes anything."""
    if format_parameter is not None:
        return format_parameter.split(";")[0].strip().lower() in _FORMAT_JSON
    if not accept or not accept.strip():
        return True
    return any(kind in _ANY_JSON and quality > 0 for kind, quality in _media_ranges(accept))


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str:
    return next((value.decode("latin-1") for key, value in headers if key.lower() == name), "")


def _diagnostics(status_code: int, body: bytes, content_type: str) -> tuple[list[str], list[str] | None]:
    """What an error answer said, as diagnostics (and issue codes for a request validation error's list)."""
    detail: Any = None
    if content_type.split(";")[0].strip().lower() == "application/json":
        try:
            detail = json.loads(body).get("detail")
        except (ValueError, AttributeError):
            detail = None
    if isinstance(detail, list) and detail and all(isinstance(error, dict) for error in detail):
        # FastAPI's request validation: one issue per parameter ("query study: Field required").
        texts = [
            f"{' '.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', '')}".lstrip(": ")
            for error in detail
        ]
        return texts, ["required" if error.get("type") == "missing" else "value" for error in detail]
    if isinstance(detail, str) and detail:
        return [detail], None
    text = body.decode("utf-8", "replace").strip() if content_type.startswith("text/plain") else ""
    if not text:
        try:
            text = HTTPStatus(status_code).phrase
        except ValueError:
            text = f"HTTP {status_code}"
    return [text], None


class FhirEdge:
    """Under ``prefix``: 406 for a client that cannot take JSON, and every error answer an ``OperationOutcome``.

    Placed outside the request guard, so that its 401s and 413s are turned too."""

    def __init__(self, app: ASGIApp, prefix: str = "/fhir") -> None:
        self.app = app
        self.prefix = prefix.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not (path == self.prefix or path.startswith(self.prefix + "/")):
            await self.app(scope, receive, send)
            return
        accept = _header(scope["headers"], b"accept")
        # A '+' left unescaped in the URL (`_format=application/fhir+json` as browsers, curl and interface engines
        # send it) is a space to the query decoder; no format has a space, so it is read back as '+' (it had been 406).
        formats = [
            value.replace(" ", "+")
            for name, value in parse_qsl(scope.get("query_string", b"").decode("latin-1"))
            if name == "_format"
        ]
        if not accepts_fhir_json(accept, formats[0] if formats else None):
            asked = f"_format={formats[0]}" if formats else f"Accept: {accept}"
            await _answer(
                send,
                406,
                [
                    f"this server answers FHIR in JSON only ({FHIR_JSON}), and the request ({asked}) "
                    "does not accept it: ask for application/fhir+json"
                ],
                [],
            )
            return
        held: Message | None = None
        chunks: list[bytes] = []
        started = False

        async def outcomes(message: Message) -> None:
            nonlocal held, started
            if message["type"] == "http.response.start":
                content_type = _header(message.get("headers", []), b"content-type")
                if message["status"] >= 400 and not content_type.startswith(FHIR_JSON):
                    held = message  # rewritten once its body is read
                    return
                started = True
                await send(message)
                return
            if held is not None and message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                headers = held.get("headers", [])
                texts, codes = _diagnostics(held["status"], b"".join(chunks), _header(headers, b"content-type"))
                started = True
                await _answer(send, held["status"], texts, headers, codes)
                return
            await send(message)

        try:
            await self.app(scope, receive, outcomes)
        except Exception:
            if not started:
                await _answer(send, 500, ["internal server error: the server's log has the details"], [])
            raise  # logged by the server's error middleware, which sees the answer already sent


async def _answer(
    send: Send,
    status_code: int,
    diagnostics: list[str],
    headers: list[tuple[bytes, bytes]],
    codes: list[str] | None = None,
) -> None:
    body = operation_outcome(status_code, diagnostics, codes=codes)
    kept = [(key, value) for key, value in headers if key.lower() not in (b"content-type", b"content-length")]
    await send(
        {
            "type": "http.response.start",
            "status": status_code,
            "headers": [*kept, (b"content-type", FHIR_JSON.encode()), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def require_json_body(request: Request) -> None:
    """A dependency of endpoints that read a FHIR resource from the body: JSON only (no Content-Type is read as
    JSON by FastAPI). FHIR XML had been refused as a 422 saying the body "should be a valid dictionary"."""
    declared = request.headers.get("content-type")
    if not declared:
        return
    header = MimeHeader()
    header["content-type"] = declared
    media = header.get_content_type()
    if media in _JSON_TYPES or (header.get_content_maintype() == "application" and media.endswith("+json")):
        return
    raise HTTPException(
        status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        detail=f"the body must be FHIR JSON (Content-Type {FHIR_JSON} or application/json), not {media}: medscreen "
        "does not read FHIR XML or other formats; send the Bundle as JSON",
    )
