"""``/docs`` behind login, with Swagger UI's files served from this server (no CDN).

FastAPI's own ``/docs`` is public and loads Swagger UI from a CDN, which a hospital network usually cannot
reach. Here the page asks for a login first, then fetches ``/openapi.json`` (which needs a valid token) and
sends the token with every request it makes. The Swagger UI files come from the ``swagger-ui-bundle`` package.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from swagger_ui_bundle import swagger_ui_path

from service.auth import CurrentUser

__all__ = ["docs_router"]

docs_router = APIRouter(include_in_schema=False)
_OWN = {"docs.js": "text/javascript", "docs.css": "text/css"}
_SWAGGER = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}
# Swagger UI sets style attributes and shows data: images; scripts stay same-origin only.
_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def _page_file(name: str) -> bytes:
    return resources.files("service").joinpath("docs_page", name).read_bytes()


@docs_router.get("/docs")
def docs_page() -> Response:
    return Response(
        _page_file("docs.html"),
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": _POLICY, "Cache-Control": "no-cache"},
    )


@docs_router.get("/docs/static/{name}")
def docs_static(name: str) -> Response:
    if name in _OWN:
        content, media_type = _page_file(name), _OWN[name]
    elif name in _SWAGGER:
        content, media_type = (swagger_ui_path / name).read_bytes(), _SWAGGER[name]
    else:
        raise HTTPException(404, detail="no such file")
    return Response(content, media_type=f"{media_type}; charset=utf-8", headers={"Cache-Control": "max-age=86400"})


@docs_router.get("/openapi.json")
def openapi_document(request: Request, user: CurrentUser) -> JSONResponse:
    schema: dict[str, Any] = request.app.openapi()
    return JSONResponse(schema)
