"""The error answers the OpenAPI document lists for a route, shared by the routers (``responses=``).

FastAPI documents 200 and 422 by itself; a client reading ``/docs`` also needs to know that a route asks for a
login (401) and a role (403), looks a row up (404), refuses an action the row's state does not allow (409) or
takes a body with a size limit (413) or of one media type (415). Each router lists 401 and 403 once for all its
routes; a route adds the statuses of its own.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["AUTHENTICATED", "Problem", "error_responses"]


class Problem(BaseModel):
    """The body of an error answer of ``/api``: what went wrong, in words."""

    detail: str


_DESCRIPTIONS = {
    401: "No valid bearer token: none, expired, or its user disabled or locked.",
    403: "The user holds none of the roles this route needs.",
    404: "Nothing under this name or id, or nothing you may see.",
    409: "Not now: the row's state does not allow it (`detail` says why).",
    413: "The request body is over its limit (MEDSCREEN_MAX_REQUEST_MB).",
    415: "The request body is not of a media type this route reads.",
    429: "Too many failed logins for this account or address: Retry-After says when to try again.",
}


def error_responses(*statuses: int, described: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route or router that can answer ``statuses``; ``described`` words a status for this
    route where the shared description does not fit."""
    words = {**_DESCRIPTIONS, **(described or {})}
    return {status: {"model": Problem, "description": words[status]} for status in statuses}


# Every route of a router whose routes all check a login and a role.
AUTHENTICATED = error_responses(401, 403)
