"""Stopping supervised processes: SIGTERM first, then SIGKILL for one that does not stop within the grace
period (the worker command once hung at shutdown with a scoring process that did not end), and no process
is restarted once shutdown has begun."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from medscreen.process_supervisor import ProcessSupervisor
from service.settings import Settings
from tests.peers import wait_for


def deaf_to_sigterm(settings_json: str, log_level: str) -> None:
    """A process stuck where SIGTERM cannot end it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(0.1)


def _ignores_sigterm(pid: int | None) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    ignored = int(next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16)
    return bool(ignored & (1 << (signal.SIGTERM - 1)))


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period(settings: Settings) -> None:
    supervisor = ProcessSupervisor(settings, "deaf", deaf_to_sigterm, 2)
    supervisor.start()
    # Past start-up: the handler that ignores SIGTERM is installed (a fixed 3 s wait was too short on a busy machine).
    wait_for(lambda: all(_ignores_sigterm(p.pid) for p in supervisor.processes), 60, "SIGTERM to be ignored")
    started = time.monotonic()
    supervisor.shutdown(grace_s=1.0)
    assert time.monotonic() - started < 15
    assert [p.exitcode for p in supervisor.processes] == [-signal.SIGKILL, -signal.SIGKILL]
    before = list(supervisor.processes)
    time.sleep(2.5)  # the watcher wakes every second: it must not start replacements
    assert supervisor.processes == before and not any(p.is_alive() for p in supervisor.processes)
