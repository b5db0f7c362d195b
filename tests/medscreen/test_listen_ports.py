"""`medscreen serve` checks its ports before it starts anything. DICOM receivers of another service already on the
DICOM port (a test instance beside production, same account, its own home) are refused, exit code 2: the receivers
bind with SO_REUSEPORT, and the kernel had spread the PACS's associations over both services (3 of 8 studies sent
to production went to the other one, without a word). An HTTP port in use had stopped the service only after 17 s
of receiving, with exit code 3."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from medscreen.listen_ports import PortInUse, check_ports_free
from service.settings import Settings
from tests.conftest import REPO
from tests.ports import free_port

pytestmark = pytest.mark.timeout(300)


def _listening(port: int, *, reuse_port: bool) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:  # as medscreen's receivers bind
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


@pytest.fixture
def other_receivers(settings: Settings) -> Iterator[socket.socket]:
    with _listening(settings.dicom_port, reuse_port=True) as sock:
        yield sock


def test_another_services_receivers_on_the_dicom_port_are_refused(
    settings: Settings, other_receivers: socket.socket
) -> None:
    with pytest.raises(PortInUse, match=f"MEDSCREEN_DICOM_PORT: 127.0.0.1:{settings.dicom_port} is in use"):
        check_ports_free(settings)


def test_a_program_holding_the_dicom_port_alone_is_left_to_the_receivers(settings: Settings) -> None:
    # It cannot be shared: the receivers fail to bind, and /healthz says so (test_restart_backoff.py).
    with _listening(settings.dicom_port, reuse_port=False):
        check_ports_free(settings)


def test_an_http_port_in_use_is_refused_and_free_ports_pass(settings: Settings) -> None:
    check_ports_free(settings)
    with _listening(settings.http_port, reuse_port=False), pytest.raises(PortInUse, match="MEDSCREEN_HTTP_PORT"):
        check_ports_free(settings)


def test_serve_stops_with_exit_code_2_before_sharing_the_dicom_port(
    tmp_path: Path, settings: Settings, other_receivers: socket.socket
) -> None:
    home = tmp_path / "test-instance"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDSCREEN_", "MLFLOW_"))}
    env.update(MEDSCREEN_HOME=str(home), MEDSCREEN_HTTP_PORT=str(free_port()),
               MEDSCREEN_DICOM_PORT=str(settings.dicom_port))
    result = subprocess.run([sys.executable, "-m", "medscreen", "serve"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines()[-1].startswith(f"medscreen serve: MEDSCREEN_DICOM_PORT: 127.0.0.1:{settings.dicom_port}")
    assert not (home / "medscreen.db").exists(), "nothing was started"
