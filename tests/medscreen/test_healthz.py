"""``/healthz`` answers GET and HEAD alike (monitors and load-balancer checks often ask with HEAD)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from medscreen.app import create_app
from medscreen.process_supervisor import ProcessState
from service.settings import Settings


def test_head_healthz_answers_as_get_does(settings: Settings) -> None:
    """HEAD had been 405 (allow: GET), so a HEAD monitor reported a healthy service down."""
    states = [ProcessState("dicom-receiver-0", running=True, restarts=0, last_exit_code=None, failing=False)]
    app = create_app(settings, process_states=lambda: states)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        head = client.head("/healthz")
        assert head.status_code == 200 and head.headers["content-type"] == "application/json"
        states[0] = ProcessState("dicom-receiver-0", running=False, restarts=3, last_exit_code=1, failing=True)
        assert client.head("/healthz").status_code == 503  # degraded, as GET says
        assert "head" not in app.openapi()["paths"]["/healthz"]
    app.state.engine.dispose()
