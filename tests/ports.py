"""Free loopback ports for the services tests start."""

from __future__ import annotations

import socket

_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port not handed out before in this test process. The kernel may offer a port again as
    soon as its probe socket closes: a service's HTTP and DICOM ports once came out equal, and it could not bind
    both (CI failure, test_scoring_orthanc)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
