"""Stopping supervised processes: SIGTERM first, then SIGKILL for one that does not stop within the grace
period (the worker command once hung at shutdown with a scoring process that did not end), and no process
is restarted once shutdown has begun."""

from __future__ import annotations

import signal
import time

from medscreen.serve import ProcessSupervisor
from service.settings import Settings


def deaf_to_sigterm(settings_json: str, log_level: str) -> None:
    """A process stuck where SIGTERM cannot end it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(0.1)


def _wait_alive(supervisor: ProcessSupervisor, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not all(p.is_alive() for p in supervisor.processes):
        assert time.monotonic() < deadline, "the supervised processes never started"
        time.sleep(0.05)


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period(settings: Settings) -> None:
    supervisor = ProcessSupervisor(settings, "deaf", deaf_to_sigterm, 2)
    supervisor.start()
    _wait_alive(supervisor)
    time.sleep(3.0)  # past start-up: the handler that ignores SIGTERM is installed
    started = time.monotonic()
    supervisor.shutdown(grace_s=1.0)
    assert time.monotonic() - started < 15
    assert [p.exitcode for p in supervisor.processes] == [-signal.SIGKILL, -signal.SIGKILL]
    before = list(supervisor.processes)
    time.sleep(2.5)  # the watcher wakes every second: it must not start replacements
    assert supervisor.processes == before and not any(p.is_alive() for p in supervisor.processes)
