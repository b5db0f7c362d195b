"""The quality team's page: one HTML file, a small script and a style sheet, served from here (no build step,
nothing from a CDN). It logs in through ``/api/auth/token`` and shows the report ``/api/quality/report`` renders.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, HTTPException, Response

__all__ = ["page_router"]

page_router = APIRouter(tags=["quality"])
_STATIC = {"quality.js": "text/javascript", "quality.css": "text/css"}
# Only the page's own script and style run; the report's SVG plots are markup, not scripts.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return resources.files("training").joinpath("quality_static", name).read_bytes()


@page_router.get("/quality", include_in_schema=False)
def quality_page() -> Response:
    return Response(_read("quality.html"), media_type="text/html; charset=utf-8", headers=_SECURITY_HEADERS)


@page_router.get("/quality/static/{name}", include_in_schema=False)
def quality_static(name: str) -> Response:
    media_type = _STATIC.get(name)
    if media_type is None:
        raise HTTPException(404, detail="no such file")
    return Response(_read(name), media_type=f"{media_type}; charset=utf-8", headers=_SECURITY_HEADERS)
