"""kill -9 in the middle of a multi-study send: everything acknowledged survives, every study completes after restart."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread

from benchmarks.dcmtk import dcmtk
from benchmarks.study_factory import write_ct_study
from inference.instance_headers import read_instance_headers
from tests.inference.conftest import INFERENCE_FIXTURES, requires_dcmtk
from tests.peers import (
    MedscreenService,
    wait_for,
)

pytestmark = [pytest.mark.integration, requires_dcmtk]


def test_sigkill_mid_send_loses_no_acknowledged_instance(
    tmp_path: Path, medscreen_service: Callable[..., MedscreenService]
) -> None:
    source = INFERENCE_FIXTURES / "ct" / "lidc-0002-0.dcm"
    files = [p for i in range(3) for p in write_ct_study(source, tmp_path / f"study{i}", 60)]
    uid_of = {str(path): dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in files}
    service = medscreen_service(quiet_period_s=2)

    sender = subprocess.Popen(
        [dcmtk("storescu"), "-v", "-aec", "MEDSCREEN", "127.0.0.1", str(service.dicom_port), *map(str, files)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
    )
    assert sender.stdout is not None
    acknowledged: list[str] = []
    current: str | None = None
    for line in sender.stdout:
        if line.startswith("I: Sending file: "):
            current = line.removeprefix("I: Sending file: ").strip()
        elif "Received Store Response (Success)" in line and current:
            acknowledged.append(uid_of[current])
            if len(acknowledged) == 70:  # in the middle of the second study
                service.process.send_signal(signal.SIGKILL)  # the main process only: receivers must die with it
                break
    sender.wait(timeout=60)
    service.process.wait(timeout=30)
    assert 70 <= len(acknowledged) < len(files)
    wait_for(lambda: not service.dicom_ready(), 60, "the receiver processes to die with the service")

    service.start()  # same data directory: the restart after the crash
    db = sqlite3.connect(service.home / "medscreen.db")
    stored = dict(db.execute("SELECT sop_instance_uid, path FROM instances").fetchall())
    missing = [uid for uid in acknowledged if uid not in stored]
    assert not missing, f"{len(missing)} acknowledged instances lost"
    for uid in acknowledged:
        assert read_instance_headers(Path(stored[uid])).sop_instance_uid == uid

    headers = service.token_headers()

    def all_routed() -> list[dict[str, object]] | None:
        # Routed studies go on to scoring: any status past `complete` means the study was routed.
        items = service.studies(headers)["items"]
        return items if items and all(i["status"] not in ("receiving", "complete") for i in items) else None

    items = wait_for(all_routed, 120, "every study that had instances to complete and route after the restart")
    assert not [i for i in items if i["status"] == "not_applicable"]
    assert {i["task"] for i in items} == {"ct-chest"}
    assert sum(int(i["instance_count"]) for i in items) == len(stored) >= len(acknowledged)
    assert not list((service.home / "spool" / "incoming").iterdir())
