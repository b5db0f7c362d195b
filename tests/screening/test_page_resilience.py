"""The paediatricians' page when the server or the network fails in a real Chromium against the real app (found
by review): the flags on screen and the notes typed in them stay, and the page says the list was not updated."""

from __future__ import annotations

from typing import Any

import pytest

from service.db import session_scope
from service.users import set_active
from tests.peers import launch_chromium, playwright_or_skip
from tests.screening.test_page_browser import served  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


def _sign_in_as_dr_a(page: Any, *, submit: bool = True) -> None:
    """Fill dr-a's sign-in on the screening page (and send it, unless the test sends it itself)."""
    page.fill("input[name=username]", "dr-a")
    page.fill("input[name=password]", "dr-a-password-long")
    if submit:
        page.click("#login button[type=submit]")


def test_a_list_that_cannot_be_loaded_keeps_the_flags_and_the_typed_note(served: tuple[str, object]) -> None:  # noqa: F811
    """dr-a types a note, then asks for decided flags while the list answers 503, then while the network is down.
    The page had replaced the flags with "Not allowed: database unavailable" (a 503 is no refusal) and dropped the
    note; with the network down it had done nothing at all (an uncaught 'Failed to fetch')."""
    sync_api = playwright_or_skip()
    expect = sync_api.expect
    url, _ = served
    with sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page()
            page.goto(f"{url}/screening")
            _sign_in_as_dr_a(page, submit=False)
            # Signing in with the network down says so (the button had done nothing at all).
            page.route("**/api/auth/token", lambda route: route.abort())
            page.click("#login button[type=submit]")
            expect(page.locator("#login-error")).to_have_text("The server could not be reached: try again.")
            page.unroute("**/api/auth/token")
            page.click("#login button[type=submit]")
            expect(page.locator("article.flag")).to_have_count(2)
            note = page.locator("article.flag textarea[name=note]").first
            note.fill("ask about hearing")
            flags = "**/api/screening/flags?*"
            page.route(flags, lambda route: route.fulfill(status=503, json={"detail": "database unavailable"}))
            page.click("#include-decided")  # not check(): a failed load unticks it at once
            error = page.locator("#load-error")
            expect(error).to_have_text("The list could not be loaded: database unavailable. Try again.")
            assert error.get_attribute("role") == "alert"
            expect(page.locator("#flags")).not_to_contain_text("Not allowed")
            expect(page.locator("article.flag")).to_have_count(2)
            expect(note).to_have_value("ask about hearing")
            expect(page.locator("#include-decided")).not_to_be_checked()  # the box says what the list shows

            page.unroute(flags)
            page.route(flags, lambda route: route.abort())
            page.click("#include-decided")
            expect(error).to_have_text("The list could not be loaded: the server could not be reached. Try again.")
            expect(note).to_have_value("ask about hearing")

            page.unroute(flags)
            page.click("#include-decided")
            expect(error).to_be_hidden()
            expect(page.locator("p.meta")).not_to_contain_text("waiting for a decision")
            expect(note).to_have_value("ask about hearing")
        finally:
            browser.close()


def test_a_session_found_ended_on_a_reload_keeps_the_typed_note(served: tuple[str, Any]) -> None:  # noqa: F811
    """dr-a's account is disabled while she types a note; the next reload of the list is refused: the sign-in form
    says her session ended and her note is kept, and it is back in its flag after she signs in again (a bare
    sign-in form had said nothing, and the note was gone)."""
    sync_api = playwright_or_skip()
    expect = sync_api.expect
    url, factory = served
    with sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page()
            page.goto(f"{url}/screening")
            _sign_in_as_dr_a(page)
            expect(page.locator("article.flag")).to_have_count(2)
            page.locator("article.flag textarea[name=note]").last.fill("ask about hearing")
            with session_scope(factory) as session:
                set_active(session, "dr-a", False, actor="test")
            page.check("#include-decided")
            expect(page.locator("#login-error")).to_have_text(
                "Your session has ended: sign in again; your notes are kept."
            )
            expect(page.locator("#app")).to_be_hidden()
            with session_scope(factory) as session:
                set_active(session, "dr-a", True, actor="test")
            _sign_in_as_dr_a(page)
            expect(page.locator("article.flag textarea[name=note]").last).to_have_value("ask about hearing")
        finally:
            browser.close()


def test_a_decision_not_saved_keeps_the_keyboard_focus_on_its_button(served: tuple[str, Any]) -> None:  # noqa: F811
    """dr-a decides from the keyboard while the server answers 503: "Not saved: <reason>" and the focus stays on the
    button she pressed (disabled while the decision was posted, it had dropped the focus to <body>)."""
    sync_api = playwright_or_skip()
    expect = sync_api.expect
    url, _ = served
    with sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page()
            page.goto(f"{url}/screening")
            _sign_in_as_dr_a(page)
            expect(page.locator("article.flag")).to_have_count(2)
            page.route("**/outcome", lambda route: route.fulfill(status=503, json={"detail": "database unavailable"}))
            referred = page.locator("article.flag").first.locator("button[data-outcome=referred]")
            referred.press("Enter")
            expect(page.locator("article.flag").first.locator("p.error.decision")).to_have_text(
                "Not saved: database unavailable"
            )
            expect(referred).to_be_focused()
        finally:
            browser.close()
