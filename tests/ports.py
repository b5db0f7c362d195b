"""Free loopback ports for the services tests start."""

from __future__ import annotations

import os
import socket

_HANDED_OUT: set[int] = set()


def _worker_share() -> tuple[int, int]:
    """(index, count) of this pytest-xdist worker; (0, 1) without xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not name.startswith("gw") or count < 2:
        return 0, 1
    return int(name[2:]) % count, count


def free_port() -> int:
    """A free loopback port not handed out before in this test process, nor in any other xdist worker.

    The kernel may offer a port again as soon as its probe socket closes: a service's HTTP and DICOM ports once came
    out equal, and it could not bind both (CI failure, test_scoring_orthanc). Other test processes probe at the same
    time, and a service binds its port seconds after the probe (an interpreter start-up on a loaded machine): each
    xdist worker therefore takes only its own share of the ports ((port // 2) % workers == its index; bind(0) prefers
    odd ports, so halving keeps the shares even), and no two workers can be handed the same port."""
    index, count = _worker_share()
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT and (port // 2) % count == index:
            _HANDED_OUT.add(port)
            return port
