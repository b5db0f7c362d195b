"""A client that sends part of a request and stops (slowloris) is cut off; whole requests and keep-alive work.

uvicorn had kept such a connection open for as long as the client liked: 300 of them made /healthz fail for every
new client of a server with 300 file descriptors."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi import FastAPI

from service.http_deadlines import with_header_deadline
from tests.ports import free_port

DEADLINE_S = 0.5


@pytest.fixture
def server() -> Iterator[int]:
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"status": "ok"}

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, http=with_header_deadline(DEADLINE_S))
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not running.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert running.started
    yield port
    running.should_exit = True
    thread.join(timeout=10)


# The bounds below only end a test whose connection is never closed (the fault); a passing test waits DEADLINE_S.
HANG_S = 30


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:  # closed by the server while our last bytes were on their way
        return True
    except TimeoutError:
        return False


def _answer(sock: socket.socket) -> bytes:
    """One whole answer to GET /ping: its head and body may come in separate segments."""
    answer = b""
    while b'{"status":"ok"}' not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer


def test_partial_headers_are_cut_off(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server)) as slow:
        slow.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        # A header line every DEADLINE_S / 4, for as long as the server keeps the connection: the lines must not
        # keep it open (a deadline re-armed by each line would let this run to HANG_S). A fixed three lines had
        # failed with BrokenPipeError where a loaded machine overslept past the deadline before the third.
        while time.monotonic() - started < HANG_S:
            time.sleep(DEADLINE_S / 4)
            try:
                slow.sendall(b"X-Slow: 1\r\n")
            except OSError:  # the server has closed it (EPIPE, or ECONNRESET after its RST)
                break
        assert _closed_within(slow, HANG_S)
        assert time.monotonic() - started < HANG_S


def test_a_silent_connection_is_cut_off(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server)) as silent:
        assert _closed_within(silent, HANG_S)


def test_whole_requests_on_a_kept_alive_connection_are_answered(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server)) as client:
        client.settimeout(HANG_S)
        for _ in range(2):
            client.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = _answer(client)
            assert answer.startswith(b"HTTP/1.1 200") and b'{"status":"ok"}' in answer
            time.sleep(DEADLINE_S * 1.5)  # idle between requests is the keep-alive timeout's business
        # a next request's headers sent slowly are cut off too
        client.sendall(b"GET /ping HTTP/1.1\r\n")
        assert _closed_within(client, HANG_S)
