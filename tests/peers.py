"""Real peers for integration tests: an Orthanc PACS and a running `medscreen serve`, each on free loopback ports."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.dcmtk import dcmtk
from tests.conftest import REPO, free_port

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Orthanc:
    http_port: int
    dicom_port: int
    aet: str
    process: subprocess.Popen[bytes]
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=120)

    @property
    def dicomweb_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def upload(self, paths: list[Path]) -> list[str]:
        """Upload files over REST; returns Orthanc's study ids."""
        studies = set()
        for path in paths:
            response = self.client.post("/instances", content=path.read_bytes())
            response.raise_for_status()
            studies.add(response.json()["ParentStudy"])
        return sorted(studies)

    def store_to(self, modality: str, resources: list[str]) -> dict[str, Any]:
        response = self.client.post(f"/modalities/{modality}/store", json={"Resources": resources, "Synchronous": True})
        response.raise_for_status()
        return response.json()

    def stow_to(self, server: str, resources: list[str]) -> Any:
        response = self.client.post(f"/dicom-web/servers/{server}/stow", json={"Resources": resources})
        response.raise_for_status()
        return response.json()


def start_orthanc(
    workdir: Path, *, modalities: dict[str, list[Any]] | None = None, dicomweb_servers: dict[str, Any] | None = None,
    extra_config: dict[str, Any] | None = None,
) -> Orthanc:
    if shutil.which("Orthanc") is None:
        pytest.skip("Orthanc is not installed (make test installs Debian's orthanc)")
    workdir.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    config: dict[str, Any] = {
        "Name": "medscreen-test-pacs",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomModalities": modalities or {},
        "DicomAlwaysAllowEcho": True,
        "DicomCheckModalityHost": False,
        "StableAge": 1,
        "Plugins": [],
    }
    if dicomweb_servers is not None and DICOMWEB_PLUGIN.exists():
        config["Plugins"] = [str(DICOMWEB_PLUGIN)]
        config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "Servers": dicomweb_servers}
    config.update(extra_config or {})
    http_port, dicom_port = int(config["HttpPort"]), int(config["DicomPort"])  # a restart may ask for the same ports
    config_path = workdir / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    log = (workdir / "orthanc.log").open("wb")
    process = subprocess.Popen(["Orthanc", str(config_path)], stdout=log, stderr=subprocess.STDOUT)
    orthanc = Orthanc(http_port, dicom_port, "ORTHANC", process)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"Orthanc exited: {(workdir / 'orthanc.log').read_text()[-2000:]}")
        try:
            return orthanc.client.get("/system").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, 60, "Orthanc to start")
    return orthanc


def stop_orthanc(orthanc: Orthanc) -> None:
    orthanc.process.terminate()
    try:
        orthanc.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        orthanc.process.kill()


@dataclass
class MedscreenService:
    """`medscreen serve` in its own process group, as an operator would run it."""

    env: dict[str, str]
    home: Path
    http_port: int
    dicom_port: int
    process: subprocess.Popen[bytes] | None = None
    admin_password: str | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.home.parent / "medscreen.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 240) -> None:
        # First starts register the shipped models in MLflow (about a minute on a busy 2-core machine).
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "medscreen", "serve"],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def http_ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"medscreen exited: {self.log_path.read_text()[-3000:]}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(http_ready, timeout, "medscreen HTTP")
        wait_for(self.dicom_ready, timeout, "medscreen DICOM receiver")
        if self.admin_password is None:
            # Written by the first start to an owner-only file, never to the log stream.
            self.admin_password = (self.home / "initial-admin-password").read_text().strip()

    def dicom_ready(self) -> bool:
        result = subprocess.run(
            [dcmtk("echoscu"), "-aec", "MEDSCREEN", "127.0.0.1", str(self.dicom_port)], capture_output=True, timeout=30
        )
        return result.returncode == 0

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, sig)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill(signal.SIGTERM)

    def token_headers(self) -> dict[str, str]:
        response = httpx.post(
            f"{self.url}/api/auth/token", data={"username": "admin", "password": self.admin_password}, timeout=10
        )
        response.raise_for_status()
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    def studies(self, headers: dict[str, str], **params: Any) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/api/studies", params={"limit": 500, **params}, headers=headers, timeout=10)
        response.raise_for_status()
        return response.json()

    def study(self, headers: dict[str, str], uid: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/api/studies/{uid}", headers=headers, timeout=10)
        response.raise_for_status()
        return response.json()


@pytest.fixture
def medscreen_service(tmp_path: Path, registered_store: Path) -> Iterator[Callable[..., MedscreenService]]:
    """Factory: `medscreen_service(**settings)` starts `medscreen serve` with MEDSCREEN_* settings. Its home holds
    a copy of the session's MLflow store with the shipped models registered (unless the settings name another
    store): the start finds them there instead of spending about 10 s registering them again."""
    services: list[MedscreenService] = []

    def make(**settings: Any) -> MedscreenService:
        home = tmp_path / f"medscreen-{len(services)}" / "var"
        http_port, dicom_port = free_port(), free_port()
        # Neither this process's medscreen settings nor its MLflow store (MLflow writes MLFLOW_TRACKING_URI and
        # MLFLOW_REGISTRY_URI into os.environ when a test uses a store): the service reads its own.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDSCREEN_", "MLFLOW_"))}
        env.update(
            MEDSCREEN_HOME=str(home),
            MEDSCREEN_HTTP_PORT=str(http_port),
            MEDSCREEN_DICOM_PORT=str(dicom_port),
            MEDSCREEN_MIN_FREE_DISK_MB="1",
            MEDSCREEN_COMPLETENESS_POLL_S="0.2",
        )
        for key, value in settings.items():
            env[f"MEDSCREEN_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        service = MedscreenService(env, home, http_port, dicom_port)
        home.parent.mkdir(parents=True, exist_ok=True)
        if "mlflow_tracking_uri" not in settings:
            home.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(registered_store, home / "mlflow.db")
        services.append(service)
        service.start()
        return service

    yield make
    for service in services:
        service.stop()


# Debian's Chromium, driven by Playwright (never `playwright install`); these flags keep it off the network.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def playwright_or_skip() -> Any:
    """Playwright's sync API, or a skip with the reason when Chromium or Playwright is missing.

    Its ``expect`` waits up to 30 s instead of Playwright's default of 5 s: on a loaded CI machine (three test
    processes, Chromium and a server on two cores) a page can take seconds to fetch and draw an answer. A longer
    bound costs nothing where the expectation holds: ``expect`` returns as soon as it does."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    sync_api.expect.set_options(timeout=30_000)
    return sync_api


def launch_chromium(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)


@contextmanager
def app_in_thread(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on a free loopback port; yields its base URL."""
    import threading

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2))
    serving = threading.Thread(target=server.run, daemon=True)
    serving.start()
    wait_for(lambda: server.started, 30, "uvicorn to start", interval=0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        serving.join(timeout=15)
