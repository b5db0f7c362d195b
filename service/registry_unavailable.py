"""An MLflow registry that cannot be read, answered at the HTTP edge as 503 with the reason, in one place.

The registry's readers (``service.model_registry``) raise when MLflow cannot read the store (locked past its busy
timeout, corrupt, half-migrated, a tracking server down) rather than reading "no such version"; a route that asks it
(quality review's figures, reports, promotion, rollback, steering) had then been a bare 500.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from service.url_credentials import hide_url_credentials

__all__ = ["registry_unavailable"]

# The registry is the site's to bring back; a client retries no sooner.
RETRY_AFTER_S = 60


async def registry_unavailable(request: Request, exc: Exception) -> Response:
    """503 ``{"detail": "the model registry cannot be read: <MLflow's first line>"}`` with Retry-After."""
    # MLflow's message quotes the tracking URI whole, with a password written into it.
    first_line = hide_url_credentials((str(exc).strip().splitlines() or [""])[0])
    return JSONResponse(
        {"detail": f"the model registry cannot be read: {first_line}"}, status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )
