"""The quality page when a report cannot be made, when the session ends and at Log out, in a real Chromium
against the real app (found by review)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from service.db import make_engine, make_session_factory, session_scope
from service.settings import Settings
from service.users import create_user, set_active
from tests.peers import launch_chromium, playwright_or_skip
from tests.quality.test_quality_page import PASSWORD, quality_service  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


def _log_in(page: Any, url: str) -> None:
    page.goto(f"{url}/quality")
    page.fill("#username", "quinn")
    page.fill("#password", PASSWORD)
    page.click("#login button[type=submit]")


def test_a_report_that_cannot_be_made_replaces_the_one_before_and_log_out_takes_it_away(
    quality_service: tuple[str, Settings],  # noqa: F811
) -> None:
    """quinn reads version 3's report, asks for version 4 while the server answers 503: version 3's figures had
    stayed on screen under "v4", the reason in plain text beside the buttons. Then the network drops; then Log out,
    which the page did not have (the report stayed in the tab for the next person)."""
    sync_api = playwright_or_skip()
    expect = sync_api.expect
    url, _ = quality_service
    with sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page()
            # Logging in with the network down says so (the button had done nothing at all).
            page.route("**/api/auth/token", lambda route: route.abort())
            _log_in(page, url)
            expect(page.locator("#login-error")).to_have_text("The server could not be reached: try again.")
            page.unroute("**/api/auth/token")
            page.click("#login button[type=submit]")
            report = page.locator("#report")
            expect(page.locator("#quality-report svg")).to_have_count(3)
            shown = page.get_attribute("#quality-report", "data-version")
            other = "4" if shown == "3" else "3"
            reports = "**/api/quality/report?*"
            page.route(reports, lambda route: route.fulfill(status=503, json={"detail": "database unavailable"}))
            page.select_option("#version", other)
            page.click("#filters button[type=submit]")
            alert = report.locator("p.error[role=alert]")
            expect(alert).to_have_text(f"No report for chest-xray v{other}: database unavailable.")
            expect(page.locator("#quality-report")).to_have_count(0)
            page.unroute(reports)
            page.route(reports, lambda route: route.abort())
            page.click("#filters button[type=submit]")
            expect(alert).to_have_text(f"No report for chest-xray v{other}: the server could not be reached.")
            page.unroute(reports)
            page.click("#filters button[type=submit]")
            expect(page.locator("#quality-report")).to_have_attribute("data-version", other)

            token = page.evaluate("sessionStorage.getItem('medscreen.token')")
            page.click("#logout")
            expect(page.locator("#login")).to_be_visible()
            expect(page.locator("#quality-report")).to_have_count(0)
            expect(page.locator("#who")).to_have_text("")
            assert page.evaluate("sessionStorage.getItem('medscreen.token')") is None
            # Signed out on the server, not only dropped from the tab: a copy of the token had worked for a shift more.
            bearer = {"Authorization": f"Bearer {token}"}
            deadline = time.monotonic() + 10
            while httpx.get(f"{url}/api/auth/me", headers=bearer).status_code == 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert httpx.get(f"{url}/api/auth/me", headers=bearer).status_code == 401
            page.reload()
            expect(page.locator("#login")).to_be_visible()
        finally:
            browser.close()


def test_a_session_that_ends_says_so(quality_service: tuple[str, Settings]) -> None:  # noqa: F811
    """quinn's account is disabled; her next Show is refused: the login form says her session ended (it had come
    back bare) and the report is gone with it."""
    sync_api = playwright_or_skip()
    expect = sync_api.expect
    url, settings = quality_service
    with sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page()
            _log_in(page, url)
            expect(page.locator("#quality-report svg")).to_have_count(3)
            engine = make_engine(settings.resolved_database_url)
            try:
                with session_scope(make_session_factory(engine)) as session:
                    set_active(session, "quinn", False, actor="test")
            finally:
                engine.dispose()
            page.click("#filters button[type=submit]")
            expect(page.locator("#login-error")).to_have_text("Your session has ended: log in again.")
            expect(page.locator("#main")).to_be_hidden()
            expect(page.locator("#quality-report")).to_have_count(0)
        finally:
            browser.close()


def test_an_account_without_the_quality_role_is_told_why(quality_service: tuple[str, Settings]) -> None:  # noqa: F811
    """A radiologist logs in to the quality page: the login form gives the server's refusal. (Log out clearing the
    login form's line must not clear this one, which is set as the form comes back.)"""
    sync_api = playwright_or_skip()
    url, settings = quality_service
    engine = make_engine(settings.resolved_database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            create_user(session, "rita", "rita-password-long", ["radiologist"], actor="test")
    finally:
        engine.dispose()
    with sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page()
            page.goto(f"{url}/quality")
            page.fill("#username", "rita")
            page.fill("#password", "rita-password-long")
            page.click("#login button[type=submit]")
            sync_api.expect(page.locator("#login-error")).to_contain_text("quality")
            sync_api.expect(page.locator("#main")).to_be_hidden()
        finally:
            browser.close()
