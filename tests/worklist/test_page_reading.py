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
def reading(
    settings: Settings, patients: dict[str, str], claimed: bool, no_accession: tuple[str, ...] = ()
) -> Iterator[Reading]:
    """rita logged in to the page, with one scored study per patient (claimed by her when ``claimed``; without an
    accession number for the names in ``no_accession``). rob (radiologist) and paula (paediatrician) exist too."""
    app = create_app(settings)
    now = utcnow()
    uids: dict[str, str] = {}
    with session_scope(app.state.session_factory) as session:
        create_user(session, "rita", PASSWORD, ["radiologist"], actor="test")
        create_user(session, "rob", "rob-password-long", ["radiologist"], actor="test")
        create_user(session, "paula", "paula-password-long", ["paediatrician"], actor="test")
        for minutes, (name, patient) in enumerate(patients.items(), start=10):
            study = make_study(session, arrived=now - timedelta(minutes=minutes))
            study.patient_name = patient
            if name in no_accession:
                study.accession_number = ""
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
                sync_api.expect(page.locator("#rows tr")).to_have_count(min(len(uids), 50))  # pages of 50
                yield Reading(url, uids, headers, page, sync_api.expect)
            finally:
                browser.close()
    finally:
        app.state.engine.dispose()


def wait_until(condition: Any, page: Any, timeout_s: float = 30) -> None:  # bounds a hang only
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

        expect(page.locator("#s-claim")).to_contain_text("Your claim lapsed at")
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


def test_keyboard_reading_double_clicks_a_colleagues_claim_and_a_long_uid(settings: Settings) -> None:
    """Found by review: rows could not be reached from the keyboard and focus fell to <body> after each action;
    a double-click on Claim released the claim just taken (Release slid into Claim's place), one on Record final
    read said "has already been read"; Release was offered on a colleague's claim (and always refused); a study
    without an accession number widened the panel over the list's Call, State and Claim columns."""
    with reading(
        settings, {"A": "ALPHA^Anna", "B": "BRAVO^Ben", "C": "CHARLIE^Cy"}, claimed=False, no_accession=("A",)
    ) as r:
        page, expect = r.page, r.expect
        page.set_viewport_size({"width": 1280, "height": 900})
        active = "document.activeElement.id || document.activeElement.className"
        page.focus("#f-claimed")
        page.keyboard.press("Tab")
        assert page.evaluate(active) == "open"
        uid = page.evaluate("document.activeElement.closest('tr').dataset.uid")
        page.keyboard.press("Enter")
        expect(page.locator("#study")).to_be_visible()
        # Focus moves once the view is drawn, which may come after the panel shows (a loaded machine): wait for it.
        expect(page.locator("#s-title")).to_be_focused()
        assert page.eval_on_selector("#study", "e => e.dataset.uid") == uid
        page.keyboard.press("Tab")
        assert page.evaluate(active) == "claim"
        page.keyboard.press("Enter")
        expect(page.locator("#read-form")).to_be_visible()
        # As above: the form shows before focus moves into it (CI: activeElement had no task yet).
        wait_until(lambda: page.evaluate("document.activeElement.dataset.task") == "chest-xray", page)
        page.keyboard.press("Space")
        page.keyboard.press("Tab")
        page.keyboard.type("read from the keyboard")
        page.keyboard.press("Tab")
        assert page.evaluate(active) == "read-submit"
        page.keyboard.press("Enter")
        expect(page.locator("#s-read")).to_contain_text("Read by rita")
        expect(page.locator("#s-read")).to_be_focused()  # waits: focus moves once the answer is drawn
        name = next(n for n, u in r.uids.items() if u == uid)
        assert r.study(name)["final_read"]["note"] == "read from the keyboard"

        # Double-clicks: Claim stays claimed, and a double-clicked read is recorded once, without an error.
        other = next(n for n in ("B", "C") if n != name)
        r.row(other).click()
        expect(page.locator("#s-facts")).to_contain_text(r.study(other)["patient_name"])
        page.dblclick("#claim")
        expect(page.locator("#read-form")).to_be_visible()
        page.wait_for_timeout(300)
        page.click("#claim", force=True)  # a slower second click at the same place
        page.wait_for_timeout(300)
        assert r.study(other)["claimed_by"] == "rita"
        page.check("#read-findings input[value=absent]")
        page.dblclick("#read-submit")
        expect(page.locator("#s-read")).to_contain_text("Read by rita")
        page.wait_for_timeout(300)
        expect(page.locator("#s-error")).to_have_text("")

        # A colleague's claim: no Release offered.
        last = next(n for n in ("A", "B", "C") if r.study(n)["is_open"])
        rob = httpx.post(f"{r.url}/api/auth/token", data={"username": "rob", "password": "rob-password-long"}).json()
        claimed = httpx.post(
            f"{r.url}/api/worklist/{r.uids[last]}/claim", headers={"Authorization": f"Bearer {rob['access_token']}"}
        )
        assert claimed.status_code == 200
        expect(r.row(last).locator("td").last).to_have_text("rob")
        r.row(last).click()
        expect(page.locator("#s-facts")).to_contain_text("rob")
        expect(page.locator("#release")).to_be_hidden()

        # A study without an accession number: its UID wraps; the panel keeps its width and the Claim column shows.
        r.row("A").click()
        expect(page.locator("#s-title")).to_contain_text(r.uids["A"])
        width = page.eval_on_selector("#study", "e => e.getBoundingClientRect().width")
        em = page.eval_on_selector("#study", "e => parseFloat(getComputedStyle(e).fontSize)")
        assert width <= 30 * em + 1
        claim_right = page.eval_on_selector("#worklist thead th:last-child", "e => e.getBoundingClientRect().right")
        assert claim_right <= page.eval_on_selector("#list-panel", "e => e.getBoundingClientRect().right") + 1


CONTRAST = """e => {
  const rgb = (c) => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const lum = (c) => { const [r, g, b] = rgb(c).map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  let back = e;
  while (back && getComputedStyle(back).backgroundColor.replace(/\\s/g, "") === "rgba(0,0,0,0)") back = back.parentElement;
  const [a, b] = [lum(getComputedStyle(e).color), lum(back ? getComputedStyle(back).backgroundColor : "rgb(255,255,255)")];
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}"""


def test_log_out_a_failed_reload_and_refusals_are_shown(settings: Settings) -> None:
    """Found by review: after Log out the patient, the typed read and the list stayed on screen (main's flex beat
    the hidden attribute); a failed list reload left a stale list reading "● live"; a locked account read as a
    wrong password and a user without the radiologist role got an empty list; the positive tier label and the
    "reconnecting" line were below 4.5:1 contrast."""
    with reading(settings, {"A": "ALPHA^Anna"}, claimed=True) as r:
        page, expect = r.page, r.expect
        assert page.get_attribute("#live", "role") == "status"
        assert r.row("A").locator(".tier-positive").evaluate(CONTRAST) >= 4.5
        page.eval_on_selector("#live", "e => { e.classList.remove('on'); e.textContent = '○ reconnecting'; }")
        assert page.locator("#live").evaluate(CONTRAST) >= 4.5

        r.row("A").click()
        page.fill("#read-note", "ALPHA^Anna has a consolidation")
        token = page.evaluate("sessionStorage.getItem('medscreen.token')")
        page.click("#logout")
        expect(page.locator("#login-panel")).to_be_visible()
        # Signed out on the server, not only dropped from the tab: a copy of the token had worked for a shift more.
        bearer = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 10
        while httpx.get(f"{r.url}/api/auth/me", headers=bearer).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(f"{r.url}/api/auth/me", headers=bearer).status_code == 401
        for hidden in ("#app", "#rows tr", "#study"):
            expect(page.locator(hidden).first).to_be_hidden()
        assert "ALPHA^Anna" not in page.content()

        page.fill("#username", "paula")
        page.fill("#password", "paula-password-long")
        page.click("#login-form button[type=submit]")
        expect(page.locator("#login-error")).to_contain_text("This account may not use the worklist: needs role")
        expect(page.locator("#app")).to_be_hidden()
        for _ in range(5):
            httpx.post(f"{r.url}/api/auth/token", data={"username": "nobody", "password": "not-the-password"})
        page.fill("#username", "nobody")
        page.click("#login-form button[type=submit]")
        expect(page.locator("#login-error")).to_contain_text("too many failed logins")

        page.fill("#username", "rita")
        page.fill("#password", PASSWORD)
        page.click("#login-form button[type=submit]")
        expect(page.locator("#live")).to_have_text("● live")
        page.route(
            "**/api/worklist?*",
            lambda route: route.fulfill(
                status=503, content_type="application/json", body='{"detail": "database unavailable"}'
            ),
        )
        assert httpx.post(f"{r.url}/api/worklist/{r.uids['A']}/release", headers=r.headers).status_code == 200
        expect(page.locator("#list-error")).to_contain_text("List not updated since")
        expect(page.locator("#list-error")).to_contain_text("database unavailable")
        expect(page.locator("#live")).to_have_text("○ list not updated")
        page.unroute("**/api/worklist?*")
        expect(page.locator("#list-error")).to_be_hidden()
        expect(r.row("A").locator("td").last).to_have_text("—")
        expect(page.locator("#live")).to_have_text("● live")
