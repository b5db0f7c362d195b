"""Serving a single-page tool: one HTML file, its script and style sheet, from a package's folder.

No build step and nothing from a CDN: the hospital network needs none. Each page states its own Content
Security Policy (the page runs only its own script, talks only to this server, and may not be framed).
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, HTTPException, Response

__all__ = ["static_page_router"]


def static_page_router(
    *, path: str, package: str, folder: str, html: str, assets: dict[str, str], img_src: str, tag: str
) -> APIRouter:
    """``GET {path}`` serves ``html`` and ``GET {path}/static/{name}`` the listed ``assets`` (name -> media type)."""
    router = APIRouter(tags=[tag])
    headers = {
        "Content-Security-Policy": f"default-src 'self'; img-src {img_src}; frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache",
    }

    def read(name: str) -> bytes:
        return resources.files(package).joinpath(folder, name).read_bytes()

    @router.get(path, include_in_schema=False)
    def page() -> Response:
        return Response(read(html), media_type="text/html; charset=utf-8", headers=headers)

    @router.get(f"{path}/static/{{name}}", include_in_schema=False)
    def static(name: str) -> Response:
        media_type = assets.get(name)
        if media_type is None:
            raise HTTPException(404, detail="no such file")
        return Response(read(name), media_type=f"{media_type}; charset=utf-8", headers=headers)

    return router
