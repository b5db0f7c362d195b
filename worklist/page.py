"""The radiologists' worklist page: one HTML file with a small script and style sheet, all served from here
(no build step, nothing fetched from a CDN). The page logs in through ``/api/auth/token`` and then talks
only to ``/api/worklist``; it holds no data of its own beyond the login token for the browser tab.
"""

from __future__ import annotations

from service.deps import SettingsDep
from service.pages import static_page_router

__all__ = ["page_router"]

page_router = static_page_router(
    path="/worklist",
    package="worklist",
    folder="static",
    html="worklist.html",
    assets={"worklist.js": "text/javascript", "worklist.css": "text/css"},
    img_src="'self' blob:",  # the heat-map arrives as a blob from the authenticated API
    tag="worklist",
)


@page_router.get("/worklist/settings", include_in_schema=False)
def page_settings(settings: SettingsDep) -> dict[str, float]:
    """What the page needs of the site's settings: how long a claim lasts, so it can say when one lapses."""
    return {"claim_minutes": settings.worklist_claim_minutes}
