"""One `medscreen serve` per home: a second one started on a home in use stops with exit code 2 before it touches
anything (it had run beside the first: deleted its partly received files, requeued its running scoring jobs and
shared its DICOM port); a lock file left by a killed service, or restored from another machine, stops nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from medscreen.home_lock import LOCK_NAME, HomeInUse, hold_home
from tests.conftest import REPO
from tests.ports import free_port

pytestmark = pytest.mark.timeout(300)


def test_a_second_serve_on_a_home_in_use_stops_before_touching_it(tmp_path: Path) -> None:
    home = tmp_path / "var"
    (home / "spool" / "incoming").mkdir(parents=True)
    receiving = home / "spool" / "incoming" / "0123abcd.part"  # the running service's open association
    receiving.write_bytes(b"\0" * 128)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDSCREEN_", "MLFLOW_"))}
    env.update(MEDSCREEN_HOME=str(home), MEDSCREEN_HTTP_PORT=str(free_port()), MEDSCREEN_DICOM_PORT=str(free_port()))
    with hold_home(home):  # the running service
        result = subprocess.run([sys.executable, "-m", "medscreen", "serve"], cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"medscreen serve: another medscreen serve (pid {os.getpid()}) is using {home}" in result.stderr
    assert receiving.exists(), "the running service's partly received file is still there"
    assert not (home / "medscreen.db").exists(), "nothing was migrated or created"


def test_a_lock_file_left_by_a_dead_service_stops_nothing(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text("4242\n")  # restored from the old server's backup
    with hold_home(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        with pytest.raises(HomeInUse, match=f"pid {os.getpid()}"):
            hold_home(tmp_path)
    hold_home(tmp_path).close()  # released with its holder


def test_a_home_on_a_file_system_without_locks_still_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Some network shares answer flock with ENOLCK: the service runs as it did before the lock, and says so."""
    import errno

    import medscreen.home_lock

    def no_locks(fd: object, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(medscreen.home_lock.fcntl, "flock", no_locks)
    with hold_home(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    assert "would not be refused" in caplog.text
