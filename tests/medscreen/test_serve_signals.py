"""Stopping `medscreen serve` with SIGTERM sent to its own pid (``kill``, ``docker stop``, systemd's
``KillMode=mixed``): the same graceful stop as Ctrl-C. uvicorn re-raised the SIGTERM after its own shutdown, which
killed the service before it stopped anything: its receiver and scoring processes were SIGKILLed by
PR_SET_PDEATHSIG in the middle of their step, and the exit code was 143."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.dcmtk import have_dcmtk
from tests.peers import MedscreenService, medscreen_service, wait_for  # noqa: F401  (fixture)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_dcmtk(), reason="dcmtk is not installed (make test installs it)"),
]


def spawned_children(pid: int) -> list[int]:
    """The processes ``pid`` started through multiprocessing's spawn (not its resource tracker)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid and b"spawn_main" in cmdline:
            children.append(int(entry.name))
    return sorted(children)


def catches_sigterm(pid: int) -> bool:
    """Whether ``pid`` has installed its SIGTERM handler (it is past start-up)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_to_the_service_stops_its_processes_gracefully_and_exits_0(
    medscreen_service: Callable[..., MedscreenService], stop_signal: signal.Signals  # noqa: F811
) -> None:
    service = medscreen_service(dicom_receivers=1, scoring_workers=1)
    assert service.process is not None
    pid = service.process.pid

    def ready_children() -> list[int]:
        children = spawned_children(pid)
        return children if len(children) == 2 and all(map(catches_sigterm, children)) else []

    children = wait_for(ready_children, 120, "the receiver and the scoring worker to install their SIGTERM handlers")

    service.process.send_signal(stop_signal)  # the service's own pid only, not its process group
    assert service.process.wait(timeout=60) == 0

    log = service.log_path.read_text()
    # Each child got its SIGTERM from the service and ended its loop itself (exit code 0, not -9 from PDEATHSIG).
    assert "dicom-receiver-0 stopped (exit code 0)" in log
    assert "scoring-worker-0 stopped (exit code 0)" in log
    assert "medscreen stopped" in log
    wait_for(lambda: not any(Path(f"/proc/{c}").exists() for c in children), 60, "the children to be gone")
