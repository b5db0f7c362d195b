"""The radiologists' page when things go wrong in a real Chromium against the real app: a study the server cannot
open, a session that ends mid-read, a list redrawn under the keyboard focus by a live event (found by review)."""

from __future__ import annotations

import httpx
import pytest

from service.db import make_engine, make_session_factory, session_scope
from service.settings import Settings
from service.users import set_active
from tests.worklist.test_page_reading import PASSWORD, reading

pytestmark = pytest.mark.integration


def test_a_live_reload_keeps_the_keyboard_focus_on_its_row(settings: Settings) -> None:
    """rita tabs to the second study; a colleague's claim reloads the list: the focus stays on that study's button.
    Every reload had redrawn the rows and dropped the focus to <body>, so a keyboard user lost their place each
    time anything changed on the list."""
    with reading(settings, {"A": "ALPHA^Anna", "B": "BRAVO^Ben", "C": "CHARLIE^Cy"}, claimed=False) as r:
        page, expect = r.page, r.expect
        r.row("B").locator("button.open").focus()
        token = httpx.post(f"{r.url}/api/auth/token", data={"username": "rob", "password": "rob-password-long"}).json()
        claimed = httpx.post(
            f"{r.url}/api/worklist/{r.uids['A']}/claim", headers={"Authorization": f"Bearer {token['access_token']}"}
        )
        assert claimed.status_code == 200
        expect(r.row("A").locator("td").last).to_have_text("rob")
        expect(r.row("B").locator("button.open")).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.locator("#s-title")).to_be_focused()
        assert page.eval_on_selector("#study", "e => e.dataset.uid") == r.uids["B"]


def test_a_study_that_cannot_be_opened_says_so(settings: Settings) -> None:
    """The study view answers 503, then the network is down: the page says the study could not be opened and
    why, and the list's selection stays on the study drawn in the panel. A click had done nothing at all (the
    error was dropped), or had marked the new row selected beside the previous study's panel."""
    with reading(settings, {"A": "ALPHA^Anna", "B": "BRAVO^Ben"}, claimed=False) as r:
        page, expect = r.page, r.expect
        pattern = f"**/api/worklist/{r.uids['A']}"
        page.route(pattern, lambda route: route.fulfill(status=503, json={"detail": "database unavailable"}))
        r.row("A").locator("button.open").press("Enter")
        error = page.locator("#open-error")
        expect(error).to_be_visible()
        expect(error).to_have_text(f"Study …{r.uids['A'][-12:]} could not be opened: database unavailable. Try again.")
        assert page.get_attribute("#open-error", "role") == "alert"
        assert not r.row("A").evaluate("tr => tr.classList.contains('selected')")

        r.row("B").locator("button.open").press("Enter")
        expect(page.locator("#s-facts")).to_contain_text("BRAVO^Ben")
        expect(error).to_be_hidden()
        page.unroute(pattern)
        page.route(pattern, lambda route: route.abort())
        r.row("A").locator("button.open").click()
        expect(error).to_contain_text("could not be opened: the server could not be reached")
        # The panel still shows B, and the list says so: B is the selected row, not A.
        assert page.eval_on_selector("#study", "e => e.dataset.uid") == r.uids["B"]
        expect(r.row("B")).to_have_class("selected")
        assert not r.row("A").evaluate("tr => tr.classList.contains('selected')")


def test_a_session_ended_mid_read_says_so_and_keeps_the_read(settings: Settings) -> None:
    """rita's account is disabled while she types a read; Record final read is refused: the login panel says her
    session has ended and the read was not recorded (it had shown a bare login form), and after logging in again
    her typed read is still there, without a stale 'please log in again' under it."""
    with reading(settings, {"A": "ALPHA^Anna"}, claimed=True) as r:
        page, expect = r.page, r.expect
        r.row("A").locator("button.open").click()
        expect(page.locator("#read-form")).to_be_visible()
        page.check("#read-findings input[value=present]")
        page.fill("#read-note", "a long read typed over minutes")
        engine = make_engine(settings.resolved_database_url)
        try:
            with session_scope(make_session_factory(engine)) as session:
                set_active(session, "rita", False, actor="test")
            page.click("#read-submit")
            expect(page.locator("#login-panel")).to_be_visible()
            expect(page.locator("#login-error")).to_contain_text("Your session has ended")
            expect(page.locator("#login-error")).to_contain_text("not recorded")
            with session_scope(make_session_factory(engine)) as session:
                set_active(session, "rita", True, actor="test")
        finally:
            engine.dispose()
        assert r.study("A")["final_read"] is None
        page.fill("#username", "rita")
        page.fill("#password", PASSWORD)
        page.click("#login-form button[type=submit]")
        expect(page.locator("#read-note")).to_have_value("a long read typed over minutes")
        expect(page.locator("#s-error")).to_have_text("")
        page.click("#read-submit")
        expect(page.locator("#s-read")).to_contain_text("Read by rita")
        assert r.study("A")["final_read"]["note"] == "a long read typed over minutes"


def test_paging_from_the_keyboard_keeps_the_focus_on_the_pager(settings: Settings) -> None:
    """51 studies, pages of 50: Enter on Next shows the last page and disables Next, which held the focus; the focus
    had fallen to <body> (Tab started again from the top of the page). It moves to the other pager button."""
    patients = {f"P{i:02d}": f"PATIENT^{i:02d}" for i in range(51)}
    with reading(settings, patients, claimed=False) as r:
        page, expect = r.page, r.expect
        page.focus("#next")
        page.keyboard.press("Enter")
        expect(page.locator("#range")).to_have_text("51–51 of 51")
        expect(page.locator("#prev")).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.locator("#range")).to_have_text("1–50 of 51")
        expect(page.locator("#next")).to_be_focused()


def test_a_login_that_cannot_reach_the_server_says_so(settings: Settings) -> None:
    """Log in with the network down: the button had done nothing at all (fetch's rejection was not caught)."""
    with reading(settings, {"A": "ALPHA^Anna"}, claimed=False) as r:
        page, expect = r.page, r.expect
        page.click("#logout")
        page.route("**/api/auth/token", lambda route: route.abort())
        page.fill("#username", "rita")
        page.fill("#password", PASSWORD)
        page.click("#login-form button[type=submit]")
        expect(page.locator("#login-error")).to_have_text("The server could not be reached: try again.")


def test_a_refused_action_keeps_the_keyboard_focus_on_its_button(settings: Settings) -> None:
    """rita opens A from the keyboard; rob claims it first; her Enter on Claim is refused (409): the reason is shown
    and the focus stays on Claim. The button was disabled while the claim ran, and the focus had fallen to <body>."""
    with reading(settings, {"A": "ALPHA^Anna"}, claimed=False) as r:
        page, expect = r.page, r.expect
        r.row("A").locator("button.open").press("Enter")
        expect(page.locator("#s-title")).to_be_focused()
        token = httpx.post(f"{r.url}/api/auth/token", data={"username": "rob", "password": "rob-password-long"}).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        assert httpx.post(f"{r.url}/api/worklist/{r.uids['A']}/claim", headers=headers).status_code == 200
        page.locator("#claim").press("Enter")
        expect(page.locator("#s-error")).not_to_have_text("")
        expect(page.locator("#claim")).to_be_focused()


def test_a_live_feed_refused_for_an_ended_session_logs_out(settings: Settings) -> None:
    """The live feed reconnects (every minute, or after a network drop) and is refused with 401 because the session
    ended: the page says the session ended. It had shown "○ reconnecting" and retried every 2 s, the list staying on
    screen until the next minute's reload found out."""
    with reading(settings, {"A": "ALPHA^Anna"}, claimed=False) as r:
        page, expect = r.page, r.expect
        page.route("**/api/worklist/events", lambda route: route.fulfill(status=401, json={"detail": "token expired"}))
        page.evaluate(
            "() => { follow(); }"
        )  # not awaited (it runs until the feed stops); the page's own reconnect, now rather than when the server ends the stream
        expect(page.locator("#login-panel")).to_be_visible()
        expect(page.locator("#login-error")).to_contain_text("Your session has ended")
        expect(page.locator("#app")).to_be_hidden()
