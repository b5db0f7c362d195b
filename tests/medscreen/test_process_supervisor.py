"""Stopping supervised processes: SIGTERM first, then SIGKILL for one that does not stop within the grace
period (the worker command once hung at shutdown with a scoring process that did not end), and no process
is restarted once shutdown has begun."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import pytest

from medscreen.process_supervisor import ProcessSupervisor
from service.settings import Settings
from tests.medscreen.supervised_targets import stop_on_sigterm_then_finalise_slowly
from tests.peers import wait_for


def deaf_to_sigterm(settings_json: str, log_level: str) -> None:
    """A process stuck where SIGTERM cannot end it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(0.1)


def _sigterm_mask(pid: int | None, field: str) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = int(next(line for line in status.splitlines() if line.startswith(f"{field}:")).split()[1], 16)
    return bool(mask & (1 << (signal.SIGTERM - 1)))


def _ignores_sigterm(pid: int | None) -> bool:
    return _sigterm_mask(pid, "SigIgn")


def _handles_sigterm(pid: int | None) -> bool:
    return _sigterm_mask(pid, "SigCgt")


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


def test_a_process_already_stopping_on_the_groups_sigterm_is_not_killed_by_the_supervisors(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A stop sent to the whole process group (systemd's default, Ctrl-C) reaches each process and the supervisor;
    the supervisor's own SIGTERM then arrived while the process was exiting, after Python had put SIGTERM back to
    its default, and killed it: 'stopped (exit code -15)'. Now it ends with exit code 0, logged as stopped."""
    settings.home.mkdir(parents=True)
    supervisor = ProcessSupervisor(settings, "scoring-worker", stop_on_sigterm_then_finalise_slowly, 1)
    supervisor.start()
    (process,) = supervisor.processes
    wait_for(lambda: _handles_sigterm(process.pid), 60, "the stop handler to be installed")
    os.kill(process.pid, signal.SIGTERM)  # the group's signal
    wait_for(lambda: (settings.home / "finalising").exists(), 60, "the process to reach its interpreter exit")
    with caplog.at_level(logging.INFO, logger="medscreen.process_supervisor"):
        supervisor.shutdown(grace_s=20.0)
    assert process.exitcode == 0
    assert "scoring-worker-0 stopped (exit code 0)" in caplog.text
