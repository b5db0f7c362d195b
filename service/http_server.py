"""The uvicorn configuration ``medscreen serve`` runs the HTTP API with.

uvicorn believes ``X-Forwarded-For`` from 127.0.0.1 unless told otherwise (``proxy_headers=True``, trusted
``127.0.0.1``). The login throttle's per-address lock and the ``auth.login`` audit rows read the client address, so
any client on the server itself (another local user, a script) chose its own address by sending the header: a
different address per guess never tripped the address lock, and the audit log recorded the forged one. Forwarded
headers are now believed only from ``MEDSCREEN_TRUSTED_PROXIES``; none by default.
"""

from __future__ import annotations

import uvicorn
from starlette.types import ASGIApp

from service.http_deadlines import with_header_deadline
from service.settings import Settings

__all__ = ["http_config"]


def http_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        # None: uvicorn's loggers go through configure_logging's handler, format and UTC clock.
        log_config=None,
        http=with_header_deadline(settings.http_header_timeout_s),
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies) or None,
    )
