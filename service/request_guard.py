"""Authentication and size limits before a request body is read.

FastAPI reads and parses a body (JSON, form, multipart) before it resolves the dependencies that check the
token, so without this an anonymous client could make the server hold and parse any amount of data before
its 401. This ASGI middleware runs first: a request with a body needs a validly signed, unexpired bearer
token (the login form excepted), and its body may not pass ``MEDSCREEN_MAX_REQUEST_MB`` (64 kB for the
login form; STOW-RS is streamed to disk and limited per part by ``MEDSCREEN_MAX_INSTANCE_MB``). Who the
user is and what their roles allow is still decided by each endpoint's dependencies.
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
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
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
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if started:
                raise
            await _answer(send, 413, f"request body over the {limit} byte limit")
