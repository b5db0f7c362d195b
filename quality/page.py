"""The quality team's page: one HTML file, a small script and a style sheet, served from here (no build step,
nothing from a CDN). It logs in through ``/api/auth/token`` and shows the report ``/api/quality/report`` renders.
"""

from __future__ import annotations

from service.pages import static_page_router

__all__ = ["page_router"]

page_router = static_page_router(
    path="/quality",
    package="quality",
    folder="static",
    html="quality.html",
    assets={"quality.js": "text/javascript", "quality.css": "text/css"},
    img_src="'self' data: blob:",  # the report's plots are inline SVG markup, not scripts
    tag="quality",
)
