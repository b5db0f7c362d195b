"""The radiologists' worklist page: one HTML file with a small script and style sheet, all served from here
(no build step, nothing fetched from a CDN). The page logs in through ``/api/auth/token`` and then talks
only to ``/api/worklist``; it holds no data of its own beyond the login token for the browser tab.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, HTTPException, Response

__all__ = ["page_router"]

page_router = APIRouter(tags=["worklist"])
_STATIC = {"worklist.js": "text/javascript", "worklist.css": "text/css"}
# The page runs only its own script and style, talks only to this server, and may not be framed.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return resources.files("worklist.static").joinpath(name).read_bytes()


@page_router.get("/worklist", include_in_schema=False)
def worklist_page() -> Response:
    return Response(_read("worklist.html"), media_type="text/html; charset=utf-8", headers=_SECURITY_HEADERS)


@page_router.get("/worklist/static/{name}", include_in_schema=False)
def worklist_static(name: str) -> Response:
    media_type = _STATIC.get(name)
    if media_type is None:
        raise HTTPException(404, detail="no such file")
    return Response(_read(name), media_type=f"{media_type}; charset=utf-8", headers=_SECURITY_HEADERS)
