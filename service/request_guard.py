"""Authentication and size limits before a request body is read.

FastAPI reads and parses a body (JSON, form, multipart) before it resolves the dependencies that check the
token, so without this an anonymous client could make the server hold and parse any amount of data before
its 401. This ASGI middleware runs first: a request with a body needs a validly signed, unexpired bearer
token (the login form excepted), and its body may not pass ``MEDSCREEN_MAX_REQUEST_MB`` (64 kB for the
login form; STOW-RS is streamed to disk and limited per part by ``MEDSCREEN_MAX_INSTANCE_MB``). Who the
user is and what their roles allow is still decided by each endpoint's dependencies.

It also refuses, with a 400, a NUL character (``%00``) in the path, the query or a form body, for every method
and before any login: PostgreSQL text cannot hold NUL, so a lookup or a login with one had failed as a 500
(SQLite answered 404 or 401), and no identifier, name or search medscreen takes may contain one. JSON bodies are
left to their readers (a NUL in a FHIR record makes that record unreadable, not the whole request).
"""

from __future__ import annotations

import json

import jwt
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import decode_access_token

__all__ = ["RequestGuard", "LOGIN_PATH", "LOGIN_MAX_BYTES"]

LOGIN_PATH = "/api/auth/token"
LOGIN_MAX_BYTES = 64 * 1024
_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
_STREAMED_PREFIXES = ("/dicomweb/",)
_FORM = b"application/x-www-form-urlencoded"


class _BodyTooLarge(HTTPException):
    """Raised from ``receive``: an HTTPException, so FastAPI's body parsing lets it through as a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the {limit} byte limit")


async def _answer(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _nul_in_url(scope: Scope) -> str | None:
    """``path`` or ``query`` when it holds a NUL (the server has decoded the path; the query is still encoded)."""
    if "\x00" in scope["path"]:
        return "path"
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        return "query"
    return None


async def _read_body(receive: Receive) -> bytes:
    """The whole body (a form: the login form's is bounded at 64 kB, others by ``MEDSCREEN_MAX_REQUEST_MB``)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body already read, then waits on the client as before (for a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class RequestGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def _limit(self, scope: Scope, path: str) -> int | None:
        if path == LOGIN_PATH:
            return LOGIN_MAX_BYTES
        if path.startswith(_STREAMED_PREFIXES):
            return None
        return int(scope["app"].state.settings.max_request_mb) * 1024 * 1024

    def _token_problem(self, scope: Scope, headers: dict[bytes, bytes]) -> str | None:
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "not authenticated"
        key = getattr(scope["app"].state, "secret_key", None)
        if key is None:
            return None  # an app without a resolved key: leave the check to the endpoint's dependency
        try:
            decode_access_token(token.strip(), str(key))
        except jwt.ExpiredSignatureError:
            return "token expired"
        except jwt.InvalidTokenError:
            return "invalid token"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        where = _nul_in_url(scope)
        if where is not None:
            await _answer(send, 400, f"a NUL character (%00) is not allowed in the request {where}")
            return
        if scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        headers = dict(scope["headers"])
        if path != LOGIN_PATH:
            problem = self._token_problem(scope, headers)
            if problem is not None:
                await _answer(send, 401, problem, [(b"www-authenticate", b"Bearer")])
                return
        limit = self._limit(scope, path)
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _answer(send, 413, f"request body over the {limit} byte limit")
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            if headers.get(b"content-type", b"").lower().startswith(_FORM):
                body = await _read_body(counting_receive)
                if b"\x00" in body or b"%00" in body:
                    await _answer(send, 400, "a NUL character (%00) is not allowed in a form value")
                    return
                await self.app(scope, _replay(body, receive), tracking_send)
            else:
                await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if started:
                raise
            await _answer(send, 413, f"request body over the {limit} byte limit")
