"""``medscreen serve`` on an empty installation: the first admin's password is shown once, and works."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.integration



def start_service(home: Path, database_url: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    http_port = free_port()
    env = {
        **os.environ,
        "MEDSCREEN_HOME": str(home),
        "MEDSCREEN_DATABASE_URL": database_url,
        "MEDSCREEN_HTTP_PORT": str(http_port),
        "MEDSCREEN_DICOM_PORT": str(free_port()),
        "MEDSCREEN_DICOM_RECEIVERS": "1",
        "MEDSCREEN_MIN_FREE_DISK_MB": "1",
    }
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "medscreen", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
    base = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 240  # first starts register the shipped models in MLflow: minutes on a busy machine
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"medscreen serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    pytest.fail(f"medscreen serve did not answer /healthz within 240 s:\n{log.read_text()[-3000:]}")


def stop_service(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_first_start_prints_admin_password_once(tmp_path: Path) -> None:
    # SQLite only: each start costs ~15 s (MLflow, receiver processes), and ensure_admin on PostgreSQL is
    # covered in test_users_command.py.
    home = tmp_path / "var"
    database_url = f"sqlite:///{home / 'medscreen.db'}"
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"

    process, base = start_service(home, database_url, first_log)
    try:
        assert first_log.read_text().count("created user 'admin'") == 1, first_log.read_text()[-3000:]
        secret = home / "initial-admin-password"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        password = secret.read_text().strip()
        assert password.lower() not in {"admin", "password", "changeme", "changethis", "medscreen"}
        assert len(password) >= 20
        token = httpx.post(f"{base}/api/auth/token", data={"username": "admin", "password": password}).json()
        me = httpx.get(f"{base}/api/auth/me", headers={"Authorization": f"Bearer {token['access_token']}"})
        assert me.json() == {"username": "admin", "roles": ["admin"]}
    finally:
        stop_service(process)

    # Never in the log stream (stderr is where the logs go): only in the owner-only file.
    assert password not in first_log.read_text()
    process, base = start_service(home, database_url, second_log)
    try:
        assert httpx.post(f"{base}/api/auth/token", data={"username": "admin", "password": password}).is_success
    finally:
        stop_service(process)
    assert password not in second_log.read_text()
    assert "created user 'admin'" not in second_log.read_text()


def test_receivers_answer_and_healthz_names_the_unregistered_models_while_the_registry_is_down(tmp_path: Path) -> None:
    """The shipped models had been registered before the receivers started, once: with the tracking server not up
    yet (compose or systemd start order) the DICOM port stayed closed for about 4.5 minutes while MLflow's client
    retried, then nothing was ever registered and /healthz said ok. Registration now runs in the background."""
    from benchmarks.dcmtk import dcmtk

    home, http_port, dicom_port = tmp_path / "var", free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
        "MEDSCREEN_HOME": str(home),
        "MEDSCREEN_HTTP_PORT": str(http_port),
        "MEDSCREEN_DICOM_PORT": str(dicom_port),
        "MEDSCREEN_DICOM_RECEIVERS": "1",
        "MEDSCREEN_SCORING_WORKERS": "0",
        "MEDSCREEN_MIN_FREE_DISK_MB": "1",
        "MEDSCREEN_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",  # nothing listens there
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "medscreen", "serve"], env=env, stdout=subprocess.DEVNULL,
                                   stderr=stderr)
    try:
        deadline = time.monotonic() + 90
        health = None
        while time.monotonic() < deadline and health is None:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                health = httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=1)
            except httpx.TransportError:
                time.sleep(0.5)
        assert health is not None, log.read_text()[-3000:]
        assert health.status_code == 503 and health.json()["status"] == "degraded"
        assert any("chest-xray" in p and "not registered yet" in p for p in health.json()["problems"]), health.json()
        echo = subprocess.run([dcmtk("echoscu"), "-aec", "MEDSCREEN", "127.0.0.1", str(dicom_port)], capture_output=True,
                              timeout=30)
        assert echo.returncode == 0, echo.stderr
    finally:
        stop_service(process)
