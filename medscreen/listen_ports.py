"""The ports ``medscreen serve`` listens on are checked before it starts anything.

The receivers bind the DICOM port with SO_REUSEPORT, so that its receiver processes share it; the kernel then lets
any other process of the same account that does the same join them: a second medscreen (a test instance set up beside
production, with its own home and HTTP port but the default DICOM port) started, its receivers joined production's on
the port, and the kernel spread the PACS's associations over both services: 3 of 8 studies sent to production were
stored by the test instance, without a word, both answering ``/healthz`` ok. A program that holds the port without
SO_REUSEPORT is left to the receivers, which cannot bind it and say so (``/healthz`` degraded, restarts backed off).
An HTTP port in use had stopped the service only once it had started everything (receivers accepting studies for
about 17 s, a "serving HTTP" line, then uvicorn's bind error and exit code 3). Both are now refused first, exit code 2.
"""

from __future__ import annotations

import errno
import socket

from service.settings import Settings

__all__ = ["PortInUse", "check_ports_free"]


class PortInUse(Exception):
    """A port ``medscreen serve`` listens on is held by another program."""


def check_ports_free(settings: Settings) -> None:
    """``PortInUse`` naming the setting of a port that this service's listeners would share, or could not bind."""
    # The receivers are IPv4 (pynetdicom's socketserver). Another error (a port below 1024 without the right to it)
    # is the receivers' to report, as before.
    dicom = (socket.AF_INET, settings.dicom_host, settings.dicom_port)
    held = _bind_error(*dicom, reuse_port=False)
    if held is not None and held.errno == errno.EADDRINUSE and _bind_error(*dicom, reuse_port=True) is None:
        raise PortInUse(
            f"MEDSCREEN_DICOM_PORT: {settings.dicom_host}:{settings.dicom_port} is in use by DICOM receivers that "
            f"would share it with this service's, each taking part of the PACS's associations (another medscreen serve "
            f"with its own home?): stop them, or set MEDSCREEN_DICOM_PORT to a free port"
        )
    # uvicorn binds IPv6 for a host with a colon.
    family = socket.AF_INET6 if ":" in settings.http_host else socket.AF_INET
    error = _bind_error(family, settings.http_host, settings.http_port, reuse_port=False)
    if error is not None:
        raise PortInUse(
            f"MEDSCREEN_HTTP_PORT: cannot listen on {settings.http_host}:{settings.http_port}: {error.strerror}: "
            + ("another program holds it; stop it, or set MEDSCREEN_HTTP_PORT to a free port"
               if error.errno == errno.EADDRINUSE else "set MEDSCREEN_HTTP_HOST and MEDSCREEN_HTTP_PORT to an address "
               "this account can listen on")
        )


def _bind_error(family: socket.AddressFamily, host: str, port: int, *, reuse_port: bool) -> OSError | None:
    """The error a listener binding ``host:port`` now would get, or None. SO_REUSEADDR as the listeners set it (a port
    in TIME_WAIT after a restart is free); with ``reuse_port``, also SO_REUSEPORT: that bind succeeds beside a listener
    of this account that set it too, which is how the kernel would share the port."""
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.bind((host, port))
    except OSError as exc:
        return exc
    finally:
        probe.close()
    return None
