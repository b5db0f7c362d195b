"""HTTP methods app-wide: HEAD answered as GET without the body, and a 405's ``Allow`` naming every method of the path.

FastAPI adds no HEAD to its routes (Starlette's own routes do), so monitors, link checkers and proxies that ask with
HEAD had a 405 everywhere but ``/healthz``. A HEAD request goes through the app as the GET it stands for (the same
dependencies: login and roles apply) and the answer keeps its status and headers, Content-Length included, with
the body left out. The body is still produced and dropped: a HEAD of a WADO-RS study reads its files.

Starlette answers a 405 with the methods of the first route whose path matches, so a path served by two routers
(STOW-RS POST and WADO-RS GET on ``/dicomweb/studies/{study}``) said ``Allow: POST``. :func:`http_error`
lists the methods of every route of the path (RFC 9110 15.5.6).
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HeadAsGet", "allowed_methods", "http_error"]

_PROBED = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class HeadAsGet:
    """Answer HEAD as GET, without the body. Outermost, so that the headers it passes on are the final ones."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        ended = False

        async def headers_only(message: Message) -> None:
            nonlocal ended
            if message["type"] == "http.response.start":
                await send(message)
            elif message["type"] in ("http.response.body", "http.response.pathsend"):
                if not ended and not message.get("more_body", False):
                    ended = True
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
            else:
                await send(message)

        # A copy: the server keeps its own scope, whose method HEAD tells it to expect no body.
        await self.app({**scope, "method": "GET"}, receive, headers_only)


def allowed_methods(routes: Iterable[BaseRoute], scope: Scope) -> list[str]:
    """The methods some route answers on the request's path, HEAD wherever GET is.

    Each method is tried against every route (``BaseRoute.matches``: FULL is path and method): FastAPI keeps an
    included router as one route, whose own routes' methods it does not show."""
    allowed = [
        method
        for method in _PROBED
        if any(route.matches({**scope, "method": method})[0] is Match.FULL for route in routes)
    ]
    if "GET" in allowed:
        allowed.insert(allowed.index("GET") + 1, "HEAD")
    return allowed


async def http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer to an HTTPException, with a 405's ``Allow`` taken from every route of the path."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        allowed = allowed_methods(request.app.router.routes, request.scope)
        if allowed:
            exc = HTTPException(405, exc.detail, headers={**(exc.headers or {}), "Allow": ", ".join(allowed)})
    return await http_exception_handler(request, exc)
