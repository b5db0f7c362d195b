"""The radiologists' page in a real Chromium (Debian's, driven by Playwright) against the real app served by
uvicorn with the recompute loop running: log in, positives on top, claim, read, and live list updates."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from inference.tables import Study
from medscreen.app import create_app
from service.db import session_scope, utcnow
from service.settings import Settings
from service.users import create_user
from tests.peers import app_in_thread, launch_chromium, playwright_or_skip
from tests.worklist.conftest import add_result, make_study, register_serving_versions
from worklist.recompute import run_worklist_recompute

pytestmark = pytest.mark.integration

PASSWORD = "rita-password-long"


@dataclass
class RunningService:
    url: str
    session_factory: object
    uids: dict[str, str]


@pytest.fixture
def running_service(settings: Settings, registered_store: Path) -> Iterator[RunningService]:
    """The app on a free port (uvicorn in a thread) with its recompute loop, seeded with six studies."""
    settings = settings.model_copy(update={"worklist_recompute_s": 0.3})
    register_serving_versions(settings, registered_store, {"chest-xray-champion": "3"})
    app = create_app(settings)
    factory = app.state.session_factory
    now = utcnow()
    uids = {}
    with session_scope(factory) as session:
        create_user(session, "rita", PASSWORD, ["radiologist"], actor="test")
        create_user(session, "rob", "rob-password-long", ["radiologist"], actor="test")
        for name, minutes_ago, score in [
            ("neg1", 50, 0.1),
            ("neg2", 45, 0.3),
            ("neg3", 40, 0.2),
            ("pos1", 20, 0.91),
            ("pos2", 10, 0.75),
        ]:
            study = make_study(session, arrived=now - timedelta(minutes=minutes_ago))
            add_result(session, study, score=score)
            uids[name] = study.study_instance_uid
        uids["waiting"] = make_study(session, arrived=now - timedelta(minutes=2), status="scoring").study_instance_uid

    stop = threading.Event()
    recompute = threading.Thread(target=run_worklist_recompute, args=(settings, factory, stop), daemon=True)
    recompute.start()
    try:
        with app_in_thread(app) as url:
            yield RunningService(url, factory, uids)
    finally:
        stop.set()
        recompute.join(timeout=15)
        app.state.engine.dispose()


def test_radiologist_claims_and_reads_the_top_positive_study(running_service: RunningService) -> None:
    sync_api = playwright_or_skip()
    service, uids = running_service, running_service.uids
    rows = "#rows tr"

    with sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page()
            page.goto(f"{service.url}/worklist")
            assert "Decision support, not a diagnosis" in page.inner_text("header")
            page.fill("#username", "rita")
            page.fill("#password", PASSWORD)
            page.click("#login-form button[type=submit]")
            sync_api.expect(page.locator(rows)).to_have_count(6)
            sync_api.expect(page.locator("#live")).to_have_text("● live")

            listed = page.eval_on_selector_all(rows, "trs => trs.map(tr => [tr.dataset.uid, tr.dataset.tier])")
            assert listed[:2] == [[uids["pos1"], "positive"], [uids["pos2"], "positive"]]
            assert [tier for _, tier in listed[2:]] == ["unscored", "negative", "negative", "negative"]
            top = page.locator(f"{rows}[data-uid='{uids['pos1']}']")
            assert "chest-xray-champion v3" in top.inner_text() and "0.91" in top.inner_text()
            assert page.inner_text("#range") == "1–6 of 6"

            # Claim the top study and record its read; the list drops it.
            top.click()
            page.click("#claim")
            sync_api.expect(top.locator("td").last).to_have_text("you")
            page.check("#read-findings input[value=present]")
            page.fill("#read-note", "right lower lobe consolidation")
            page.click("#read-submit")
            sync_api.expect(page.locator("#s-read")).to_contain_text("Read by rita")
            sync_api.expect(page.locator(rows)).to_have_count(5)
            assert page.locator(f"{rows}[data-uid='{uids['pos1']}']").count() == 0

            # Changes made elsewhere reach the page through the live feed, without a reload:
            # another radiologist claims a study, and the waiting study's champion result arrives.
            token = httpx.post(
                f"{service.url}/api/auth/token", data={"username": "rob", "password": "rob-password-long"}
            ).json()["access_token"]
            claimed = httpx.post(
                f"{service.url}/api/worklist/{uids['neg1']}/claim", headers={"Authorization": f"Bearer {token}"}
            )
            assert claimed.status_code == 200
            sync_api.expect(page.locator(f"{rows}[data-uid='{uids['neg1']}'] td").last).to_have_text("rob")
            with session_scope(service.session_factory) as session:  # type: ignore[arg-type]
                study = session.scalar(select(Study).where(Study.study_instance_uid == uids["waiting"]))
                add_result(session, study, score=0.88)
            sync_api.expect(page.locator(f"{rows}[data-uid='{uids['waiting']}']")).to_have_attribute("data-tier", "positive")
            order = page.eval_on_selector_all(rows, "trs => trs.map(tr => tr.dataset.uid)")
            assert order[:2] == [uids["pos2"], uids["waiting"]]
        finally:
            browser.close()


def test_live_feed_resumes_from_last_event_id(running_service: RunningService) -> None:
    """The Server-Sent Events stream, read as a page reads it: events in order, and a reconnect with
    Last-Event-ID gets what happened while it was away."""
    service, uids = running_service, running_service.uids
    token = httpx.post(f"{service.url}/api/auth/token", data={"username": "rita", "password": PASSWORD}).json()[
        "access_token"
    ]
    headers = {"Authorization": f"Bearer {token}"}

    def read_events(extra: dict[str, str], until: str) -> list[tuple[str, str, str]]:
        events, current = [], {}
        with httpx.stream(
            "GET", f"{service.url}/api/worklist/events", headers={**headers, **extra}, timeout=20
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith(("id: ", "event: ", "data: ")):
                    key, value = line.split(": ", 1)
                    current[key] = value
                elif not line and current:
                    events.append((current.get("id", ""), current.get("event", ""), current.get("data", "")))
                    current = {}
                    if events[-1][1] == until:
                        return events
        raise AssertionError(f"stream ended before a {until!r} event")

    hello = read_events({}, "hello")
    start_id = hello[-1][0]
    assert httpx.post(f"{service.url}/api/worklist/{uids['pos1']}/claim", headers=headers).status_code == 200
    assert httpx.post(f"{service.url}/api/worklist/{uids['pos1']}/release", headers=headers).status_code == 200
    missed = read_events({"Last-Event-ID": start_id}, "released")
    kinds = [kind for _, kind, _ in missed]
    assert kinds[0] == "hello" and kinds[-2:] == ["claimed", "released"]
    assert uids["pos1"] in missed[-1][2] and int(missed[-1][0]) > int(missed[-2][0]) > int(start_id)
