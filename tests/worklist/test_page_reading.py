"""The radiologists' page reading a study in a real Chromium against the real app: the panel, its actions and
the read always concern the same study, whatever order the server's answers come back in (found by review)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest

from medscreen.app import create_app
from service.db import session_scope, utcnow
from service.settings import Settings
from service.users import create_user
from tests.peers import app_in_thread, launch_chromium, playwright_or_skip
from tests.worklist.conftest import add_result, make_study
from worklist.policy import policy_from_settings
from worklist.recompute import recompute_worklist

pytestmark = pytest.mark.integration

PASSWORD = "rita-password-long"


@dataclass
class Reading:
    url: str
    uids: dict[str, str]
    headers: dict[str, str]
    page: Any
    expect: Any

    def study(self, name: str) -> dict[str, Any]:
        return httpx.get(f"{self.url}/api/worklist/{self.uids[name]}", headers=self.headers).json()

    def row(self, name: str) -> Any:
        return self.page.locator(f"#rows tr[data-uid='{self.uids[name]}']")


@contextmanager
def reading(settings: Settings, patients: dict[str, str], claimed: bool) -> Iterator[Reading]:
    """rita logged in to the page, with one scored study per patient (claimed by her when ``claimed``)."""
    app = create_app(settings)
    now = utcnow()
    uids: dict[str, str] = {}
    with session_scope(app.state.session_factory) as session:
        create_user(session, "rita", PASSWORD, ["radiologist"], actor="test")
        for minutes, (name, patient) in enumerate(patients.items(), start=10):
            study = make_study(session, arrived=now - timedelta(minutes=minutes))
            study.patient_name = patient
            add_result(session, study, score=0.9)
            uids[name] = study.study_instance_uid
    with session_scope(app.state.session_factory) as session:
        recompute_worklist(session, policy_from_settings(settings))
    sync_api = playwright_or_skip()
    try:
        with app_in_thread(app) as url, sync_api.sync_playwright() as playwright:
            token = httpx.post(f"{url}/api/auth/token", data={"username": "rita", "password": PASSWORD}).json()
            headers = {"Authorization": f"Bearer {token['access_token']}"}
            if claimed:
                for uid in uids.values():
                    assert httpx.post(f"{url}/api/worklist/{uid}/claim", headers=headers).status_code == 200
            browser = launch_chromium(playwright)
            try:
                page = browser.new_page()
                page.goto(f"{url}/worklist")
                page.fill("#username", "rita")
                page.fill("#password", PASSWORD)
                page.click("#login-form button[type=submit]")
                sync_api.expect(page.locator("#rows tr")).to_have_count(len(uids))
                yield Reading(url, uids, headers, page, sync_api.expect)
            finally:
                browser.close()
    finally:
        app.state.engine.dispose()


def wait_until(condition: Any, page: Any, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        page.wait_for_timeout(50)


def test_a_late_study_view_is_not_drawn_and_the_read_goes_to_the_study_on_screen(settings: Settings) -> None:
    """rita opens A, whose answer is slow, then B: A's late answer must not be drawn over B, and the read
    she records in the panel is B's."""
    with reading(settings, {"A": "ALPHA^Anna", "B": "BRAVO^Ben"}, claimed=True) as r:
        page, expect = r.page, r.expect
        held: list[Any] = []
        page.route(f"**/api/worklist/{r.uids['A']}", lambda route: held.append(route))
        r.row("A").click()
        wait_until(lambda: held, page)
        r.row("B").click()
        expect(page.locator("#s-facts")).to_contain_text("BRAVO^Ben")
        with page.expect_response(f"**/api/worklist/{r.uids['A']}"):
            held[0].continue_()
        page.wait_for_timeout(300)  # the page reads and draws (or drops) the answer after it has arrived
        expect(page.locator("#s-facts")).to_contain_text("BRAVO^Ben")
        assert page.eval_on_selector("#study", "e => e.dataset.uid") == r.uids["B"]

        page.check("#read-findings input[value=present]")
        page.fill("#read-note", "read of BRAVO^Ben")
        page.click("#read-submit")
        expect(page.locator("#s-read")).to_contain_text("Read by rita")
        assert r.study("A")["is_open"] and r.study("A")["final_read"] is None
        assert r.study("B")["final_read"]["note"] == "read of BRAVO^Ben"


def test_claim_and_release_act_on_the_study_drawn_not_the_row_clicked_last(settings: Settings) -> None:
    """While B's view is still on its way, the panel shows A: Release releases A, not B."""
    with reading(settings, {"A": "ALPHA^Anna", "B": "BRAVO^Ben"}, claimed=True) as r:
        page, expect = r.page, r.expect
        r.row("A").click()
        expect(page.locator("#s-facts")).to_contain_text("ALPHA^Anna")
        held: list[Any] = []
        page.route(f"**/api/worklist/{r.uids['B']}", lambda route: held.append(route))
        r.row("B").click()
        wait_until(lambda: held, page)
        with page.expect_response("**/release") as released:
            page.click("#release")
        assert released.value.status == 200
        assert r.study("A")["claimed_by"] is None
        assert r.study("B")["claimed_by"] == "rita"
        for route in held:
            route.continue_()


def test_a_lapsed_claim_is_shown_and_claimed_again_without_losing_the_typed_read(settings: Settings) -> None:
    """A claim lapses while rita types her read (5 s here, 60 min by default): the page says so, offers Claim
    again, and a refused read keeps her findings and note for when she has claimed again."""
    settings = settings.model_copy(update={"worklist_claim_minutes": 0.08})
    with reading(settings, {"A": "ALPHA^Anna"}, claimed=False) as r:
        page, expect = r.page, r.expect
        r.row("A").click()
        page.click("#claim")
        expect(r.row("A").locator("td").last).to_have_text("you")
        expect(page.locator("#s-claim")).to_contain_text("Your claim lasts until")
        page.check("#read-findings input[value=present]")
        page.fill("#read-note", "a long report typed over the claim lifetime")

        expect(page.locator("#s-claim")).to_contain_text("Your claim lapsed at", timeout=10000)
        expect(r.row("A").locator("td").last).to_have_text("you (lapsed)")
        expect(page.locator("#claim")).to_be_visible()
        expect(page.locator("#claim")).to_have_text("Claim again")

        page.click("#read-submit")  # refused by the server: the claim has lapsed
        expect(page.locator("#s-error")).to_contain_text("before recording its read")
        expect(page.locator("#read-note")).to_have_value("a long report typed over the claim lifetime")
        assert page.locator("#read-findings input:checked").count() == 1

        page.click("#claim")
        expect(page.locator("#claim")).to_be_hidden()
        expect(page.locator("#read-note")).to_have_value("a long report typed over the claim lifetime")
        page.click("#read-submit")
        expect(page.locator("#s-read")).to_contain_text("Read by rita")
        assert r.study("A")["final_read"]["note"] == "a long report typed over the claim lifetime"
