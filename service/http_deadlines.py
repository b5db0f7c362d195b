"""A deadline for an HTTP request's headers, which uvicorn does not have.

uvicorn times out an idle keep-alive connection, but not one that has sent part of a request: a client that
opens connections and sends a header line now and then (slowloris) holds each one for as long as it likes, and
a few hundred such connections from one host took the server's file descriptors, so that /healthz failed for
every new client. Each request's headers must now be complete within ``timeout_s`` of the connection opening or
of the request's first bytes; otherwise the connection is closed. Bodies are not covered: an upload that stalls
is bounded by the request size limits and, for a site that needs more, by a reverse proxy in front.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["with_header_deadline"]

log = logging.getLogger(__name__)


def with_header_deadline(timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol (``uvicorn.Config(http=...)``) with a deadline of ``timeout_s`` for each request's
    headers."""

    class HeaderDeadlineProtocol(H11Protocol):
        _header_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._header_deadline is None and not self._in_request():
                self._arm()  # the first bytes of a next request on a kept-alive connection
            super().data_received(data)
            if self._in_request():
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _in_request(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def _arm(self) -> None:
            self._disarm()
            self._header_deadline = self.loop.call_later(timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _headers_too_slow(self) -> None:
            self._header_deadline = None
            if self._in_request():
                return
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
            log.warning("closed the connection of %s: no complete request headers within %.0f s", client, timeout_s)
            self.transport.close()

    return HeaderDeadlineProtocol
