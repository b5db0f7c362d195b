"""A supervised process that cannot start is restarted with a doubling delay (capped), one log line per death, and
``/healthz`` answers 503 "degraded" naming it. It had been restarted every second for ever, each time a fresh
interpreter and a traceback in the log, while ``/healthz`` said ok and no DICOM was received."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from medscreen.process_supervisor import ProcessSupervisor
from service.settings import Settings
from tests.conftest import REPO, free_port
from tests.medscreen.supervised_targets import (
    crash_at_start,
    crash_twice_then_run,
    run_until_sigterm_dying_with_parent,
    start_times,
)
from tests.peers import wait_for


def _gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in zip(times, times[1:], strict=False)]


def test_a_process_that_cannot_start_is_restarted_with_a_doubling_delay(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings.home.mkdir(parents=True)
    supervisor = ProcessSupervisor(
        settings, "crashing", crash_at_start, 1, restart_delay_s=1.0, max_restart_delay_s=4.0, stable_s=60, poll_s=0.05
    )
    with caplog.at_level(logging.INFO, logger="medscreen.process_supervisor"):
        supervisor.start()
        try:
            wait_for(lambda: len(start_times(settings.home)) >= 6, 90, "six starts")
            (state,) = supervisor.status()
        finally:
            supervisor.shutdown(grace_s=1.0)
    # Not `running`: the snapshot may fall just after a restart, before that start dies too.
    assert state.failing and state.last_exit_code == 1 and state.restarts >= 5
    deaths = [r.getMessage() for r in caplog.records if "exited with code 1" in r.getMessage()]
    assert len(deaths) <= state.restarts + 1  # one line per death, not one per check
    delays = [float(found.group(1)) for death in deaths if (found := re.search(r"restarting it in ([0-9.]+) s", death))]
    assert delays[:5] == [1, 2, 4, 4, 4], deaths  # doubling, capped (uncapped: 1, 2, 4, 8, 16)
    # Each restart waited its delay at least: a gap between two start lines is the delay plus an interpreter's
    # start-up and a death, so only the lower bound holds on a loaded machine (an upper bound on the gaps had failed
    # in CI with 2.02 s of start-up jitter).
    gaps = _gaps(start_times(settings.home)[:6])
    assert all(gap >= delay for gap, delay in zip(gaps, delays, strict=False)), (gaps, delays)
    assert "restarting it in 4 s (4 deaths in a row at start)" in "\n".join(deaths)


def test_a_process_that_starts_well_again_is_healthy_and_its_delay_starts_over(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings.home.mkdir(parents=True)
    supervisor = ProcessSupervisor(
        settings, "flaky", crash_twice_then_run, 1, restart_delay_s=0.5, max_restart_delay_s=8.0, stable_s=12.0, poll_s=0.05
    )
    with caplog.at_level(logging.INFO, logger="medscreen.process_supervisor"):
        supervisor.start()
        try:
            wait_for(lambda: len(start_times(settings.home)) == 3, 60, "the third start, which runs")
            (state,) = supervisor.status()
            # Up, but not yet for stable_s after dying at start. stable_s counts from the spawn, the start line is
            # written after the interpreter's start-up: a crash at start came 7 s after the spawn on a machine running
            # other suites beside this one, and at 6 s it had counted as a process that ran well. 12 s leaves room.
            assert state.failing and state.running
            wait_for(lambda: not supervisor.status()[0].failing, 30, "the process to count as started well")
            assert "flaky-0 has run" in caplog.text
            os.kill(supervisor.processes[0].pid, signal.SIGKILL)  # a process that had run well dies
            wait_for(lambda: supervisor.status()[0].failing, 60, "the death to be seen")
            wait_for(lambda: len(start_times(settings.home)) == 4, 30, "the restart")
        finally:
            supervisor.shutdown(grace_s=5.0)
    deaths = [r.getMessage() for r in caplog.records if "exited with code" in r.getMessage()]
    assert len(deaths) == 3 and "in 1 s (2 deaths in a row at start)" in deaths[1]
    assert "flaky-0 exited with code -9" in deaths[2] and deaths[2].endswith("restarting it in 0.5 s")  # the first delay


def _hold_port(port: int) -> socket.socket:
    """Another program listening on ``port`` (no SO_REUSEPORT): a receiver cannot bind it."""
    held = socket.socket()
    held.bind(("127.0.0.1", port))
    held.listen()
    return held


@pytest.mark.integration
def test_serve_reports_a_receiver_that_cannot_start_and_backs_off(tmp_path: Path, registered_store: Path) -> None:
    home = tmp_path / "var"
    home.mkdir()
    shutil.copyfile(registered_store, home / "mlflow.db")
    http_port, dicom_port = free_port(), free_port()
    held = _hold_port(dicom_port)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDSCREEN_", "MLFLOW_"))}
    env.update(
        MEDSCREEN_HOME=str(home), MEDSCREEN_HTTP_PORT=str(http_port), MEDSCREEN_DICOM_PORT=str(dicom_port),
        MEDSCREEN_DICOM_RECEIVERS="1", MEDSCREEN_SCORING_WORKERS="0", MEDSCREEN_MIN_FREE_DISK_MB="1",
    )
    log_path = tmp_path / "medscreen.log"
    with log_path.open("wb") as log:
        serve = subprocess.Popen(
            [sys.executable, "-m", "medscreen", "serve"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        def health() -> httpx.Response | None:
            assert serve.poll() is None, log_path.read_text()[-3000:]
            try:
                return httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=2)
            except httpx.HTTPError:
                return None

        def restarted(times: int) -> httpx.Response | None:
            answer = health()
            if answer is None or answer.status_code != 503:
                return None
            (receiver,) = answer.json()["processes"]
            return answer if receiver["restarts"] >= times else None

        answer = wait_for(lambda: restarted(2), 240, "/healthz to report the receiver restarted twice")
        assert answer.json()["status"] == "degraded"
        (receiver,) = answer.json()["processes"]
        assert receiver["name"] == "dicom-receiver-0" and receiver["failing"] and receiver["last_exit_code"] == 1
        # Read at once: both lines are logged before the restart that /healthz counted, and the count below bounds
        # the deaths since then (a wait here only let a stalled test see a fourth death, 4 s later).
        text = log_path.read_text()
        assert "Address already in use" in text
        assert "dicom-receiver-0 exited with code 1 after" in text
        assert "restarting it in 1 s\n" in text
        assert "restarting it in 2 s (2 deaths in a row at start)" in text
        assert text.count("dicom-receiver-0 exited with code 1") <= 3
    finally:
        serve.send_signal(signal.SIGTERM)
        code = serve.wait(timeout=60)
        held.close()
    assert code == 0, log_path.read_text()[-3000:]


def _catches_sigterm(pid: int | None) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def test_a_restarted_process_gets_its_grace_at_shutdown(settings: Settings) -> None:
    """PR_SET_PDEATHSIG fires when the thread that started a process ends: a process the watcher thread had restarted
    was SIGKILLed as that thread returned at the start of shutdown, before its SIGTERM and grace."""
    settings.home.mkdir(parents=True)
    supervisor = ProcessSupervisor(settings, "restarted", run_until_sigterm_dying_with_parent, 1, poll_s=0.1)
    supervisor.start()
    try:
        wait_for(lambda: _catches_sigterm(supervisor.processes[0].pid), 60, "the first process's handler")
        os.kill(supervisor.processes[0].pid, signal.SIGKILL)
        wait_for(lambda: len(start_times(settings.home)) == 2, 60, "the restart")
        wait_for(lambda: _catches_sigterm(supervisor.processes[0].pid), 60, "the restarted process's handler")
    finally:
        supervisor.shutdown(grace_s=10.0)
    assert supervisor.processes[0].exitcode == 0  # it ended its loop itself, not -9
