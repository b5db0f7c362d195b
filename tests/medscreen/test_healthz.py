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


def test_healthz_is_degraded_under_the_watermark_with_an_unwritable_spool_or_a_task_without_champion(
    settings: Settings, monkeypatch
) -> None:
    """Each of these had left /healthz 200 "ok" while C-STORE was rejected or aborted and STOW-RS answered 503/500,
    or every study of a task stayed unscored. The disk is made full by the free space the ingestor reads."""
    import shutil
    from collections import namedtuple

    import inference.ingest

    champions: dict[str, str] = {}
    app = create_app(settings, process_states=lambda: [], champion_problems=lambda: dict(champions))
    with TestClient(app) as client:
        ok = client.get("/healthz")
        assert ok.status_code == 200 and ok.json()["status"] == "ok" and ok.json()["problems"] == []

        usage = namedtuple("usage", "total used free")
        monkeypatch.setattr(inference.ingest.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1024, 1024))
        full = client.get("/healthz")
        assert full.status_code == 503 and full.json()["status"] == "degraded"
        assert any("MEDSCREEN_MIN_FREE_DISK_MB" in p for p in full.json()["problems"])
        monkeypatch.undo()

        incoming = app.state.ingestor.spool.incoming
        shutil.rmtree(incoming)  # a store folder gone (an unmounted volume); read-only answers the same
        gone = client.get("/healthz")
        assert gone.status_code == 503 and any(str(incoming) in p for p in gone.json()["problems"])
        incoming.mkdir()

        champions["mammography"] = "no champion registered for mammography"
        none = client.get("/healthz")
        assert none.status_code == 503
        assert none.json()["problems"] == ["task mammography has no loadable champion: no champion registered for mammography"]
        assert client.head("/healthz").status_code == 503
        champions.clear()
        assert client.get("/healthz").status_code == 200
    app.state.engine.dispose()
