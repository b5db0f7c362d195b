"""The quality page in a real Chromium (Debian's, driven by Playwright) against the real app under uvicorn:
log in, the report with its plots, switch version, download the report, log it to MLflow."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from medscreen.app import create_app
from service.db import session_scope
from service.settings import Settings
from service.users import create_user
from tests.peers import app_in_thread, launch_chromium, playwright_or_skip
from tests.quality.test_quality_api import register_versions
from tests.quality.test_quality_metrics import seed

pytestmark = pytest.mark.integration

PASSWORD = "quinn-password-long"


@pytest.fixture
def quality_service(settings: Settings) -> Iterator[tuple[str, Settings]]:
    app = create_app(settings)
    with session_scope(app.state.session_factory) as session:
        # Logging the report to MLflow writes to the registry store: an ml-engineer's action, not the read-only quality role.
        create_user(session, "quinn", PASSWORD, ["quality", "ml-engineer"], actor="test")
    seed(app.state.session_factory)
    register_versions(settings.resolved_mlflow_tracking_uri, "chest-xray", 4)
    try:
        with app_in_thread(app) as url:
            yield url, settings
    finally:
        app.state.engine.dispose()


def test_quality_team_reviews_downloads_and_logs_the_report(quality_service: tuple[str, Settings], tmp_path: Path) -> None:
    sync_api = playwright_or_skip()
    url, settings = quality_service
    with sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(accept_downloads=True)
            errors: list[str] = []
            # Failed requests by URL (the browser's own favicon probe aside) and script errors.
            page.on(
                "response",
                lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 and "favicon" not in r.url else None,
            )
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{url}/quality")
            page.fill("#username", "quinn")
            page.fill("#password", PASSWORD)
            page.click("#login button[type=submit]")
            report = page.locator("#quality-report")
            sync_api.expect(page.locator("#quality-report svg")).to_have_count(3)
            assert page.eval_on_selector_all("#version option", "os => os.map(o => o.value).sort()") == ["3", "4"]

            page.select_option("#version", "4")
            page.click("#filters button[type=submit]")
            sync_api.expect(report).to_have_attribute("data-version", "4")
            sync_api.expect(report).to_contain_text("AUROC 0.083")

            page.select_option("#version", "3")
            page.click("#filters button[type=submit]")
            sync_api.expect(report).to_have_attribute("data-version", "3")
            sync_api.expect(page.locator("#quality-report table.metrics").first).to_contain_text("0.917")
            assert page.locator("#quality-report svg polyline").count() >= 3

            with page.expect_download() as download_info:
                page.click("#download")
            saved = tmp_path / "report.html"
            download_info.value.save_as(saved)
            assert download_info.value.suggested_filename == "quality-chest-xray-v3.html"
            assert saved.read_text().startswith("<!doctype html>") and "chest-xray version 3" in saved.read_text()

            page.click("#log-mlflow")
            sync_api.expect(page.locator("#status")).to_contain_text("logged to MLflow: quality/report-")
            assert not errors, errors
        finally:
            browser.close()


def test_the_to_date_is_included_and_the_period_says_so(quality_service: tuple[str, Settings]) -> None:
    """The seeded studies all arrive on 2026-03-02: a report "from 2026-03-02 to 2026-03-02" holds them all, and its
    period line states the days as chosen. The page had sent midnight at the start of the "To" day as the
    (exclusive) end, so the day was left out and the report was empty (found by review). Also found by review: a
    locked account read "wrong user or password", and the status and login error lines had no role."""
    sync_api = playwright_or_skip()
    url, _ = quality_service
    for _ in range(5):
        httpx.post(f"{url}/api/auth/token", data={"username": "nobody", "password": "not-the-password"})
    with sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page()
            page.goto(f"{url}/quality")
            assert page.get_attribute("#login-error", "role") == "alert" and page.get_attribute("#status", "role") == "status"
            page.fill("#username", "nobody")
            page.fill("#password", "not-the-password")
            page.click("#login button[type=submit]")
            sync_api.expect(page.locator("#login-error")).to_contain_text("too many failed logins")
            page.fill("#username", "quinn")
            page.fill("#password", PASSWORD)
            page.click("#login button[type=submit]")
            period = page.locator("#quality-report p").first
            sync_api.expect(period).to_contain_text("Period start to now; 10 scored studies confirmed")
            page.select_option("#version", "3")
            for since, until, expected in [
                ("2026-03-02", "2026-03-02", "Period 2026-03-02 to 2026-03-02 (UTC days, both included); 10 scored studies"),
                ("2026-03-01", "2026-03-01", "Period 2026-03-01 to 2026-03-01 (UTC days, both included); 0 scored studies"),
                ("2026-02-28", "2026-03-02", "Period 2026-02-28 to 2026-03-02 (UTC days, both included); 10 scored studies"),
            ]:
                page.fill("#since", since)
                page.fill("#until", until)
                page.click("#filters button[type=submit]")
                sync_api.expect(period).to_contain_text(expected)
            # Beside the figures: the read study version 3 could not score (seeded on 2026-03-02, read positive).
            sync_api.expect(page.locator("#unscored")).to_contain_text(
                "1 study read by a radiologist was not scored by this version (could not score: 1, of them read positive: 1)"
            )
        finally:
            browser.close()



def test_the_report_charts_colours_read_on_white() -> None:
    """The chart's green ("flag rate", "site threshold") was #2a8a2a, 4.41:1 on white: below WCAG AA's 4.5:1."""
    import re
    from pathlib import Path

    import quality.report

    def luminance(colour: str) -> float:
        channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    colours = set(re.findall(r'"(#[0-9a-fA-F]{6})"', Path(quality.report.__file__).read_text()))
    assert colours
    for colour in colours:
        assert (1.05) / (luminance(colour) + 0.05) >= 4.5, colour
