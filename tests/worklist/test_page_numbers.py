"""The page prints a score and its threshold with the decimals that tell them apart (worklist.js mirrors
inference/score_text.py): 0.67205 (negative) and 0.67240 (positive) at 0.672316 had both read "0.67 ... at threshold
0.67" in the list and the study view (review 3, honesty D9)."""

from __future__ import annotations

import re
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from medscreen.app import create_app
from service.db import session_scope, utcnow
from service.settings import Settings
from service.users import create_user
from tests.peers import app_in_thread, launch_chromium, playwright_or_skip
from tests.worklist.conftest import add_result, make_study, register_serving_versions
from worklist.recompute import run_worklist_recompute

pytestmark = pytest.mark.integration

PASSWORD = "rita-password-long"
THRESHOLD = 0.672316


def test_scores_either_side_of_the_threshold_print_apart_on_the_page(settings: Settings, registered_store: Path) -> None:
    sync_api = playwright_or_skip()
    settings = settings.model_copy(update={"worklist_recompute_s": 0.3})
    register_serving_versions(settings, registered_store, {"chest-xray-champion": "3"})
    app = create_app(settings)
    factory = app.state.session_factory
    now = utcnow()
    uids: dict[str, str] = {}
    with session_scope(factory) as session:
        create_user(session, "rita", PASSWORD, ["radiologist"], actor="test")
        for call, score, minutes in (("negative", 0.67205, 20), ("positive", 0.67240, 10)):
            study = make_study(session, arrived=now - timedelta(minutes=minutes))
            add_result(session, study, score=score, threshold=THRESHOLD, steering="raise-only")
            uids[call] = study.study_instance_uid

    stop = threading.Event()
    recompute = threading.Thread(target=run_worklist_recompute, args=(settings, factory, stop), daemon=True)
    recompute.start()
    rows = "#rows tr"
    try:
        with app_in_thread(app) as url, sync_api.sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 900})
                page.goto(f"{url}/worklist")
                page.fill("#username", "rita")
                page.fill("#password", PASSWORD)
                page.click("#login-form button[type=submit]")
                sync_api.expect(page.locator(rows)).to_have_count(2)
                for call, uid in uids.items():
                    row = page.locator(f"{rows}[data-uid='{uid}']")
                    title = row.locator(".bar").get_attribute("title") or ""
                    shown, at = re.search(r"score (\d\.\d+), threshold (\d\.\d+)", title).groups()  # type: ignore[union-attr]
                    assert shown != at and (float(shown) > float(at)) == (call == "positive"), title
                    row.click()
                    sync_api.expect(page.locator("#s-score")).to_contain_text(f"{call} at threshold")
                    text = page.inner_text("#s-score")
                    number, threshold = re.search(r"(\d\.\d+)\s+\w+ at threshold (\d\.\d+)", text).groups()  # type: ignore[union-attr]
                    assert number != threshold and (float(number) > float(threshold)) == (call == "positive"), text
            finally:
                browser.close()
    finally:
        stop.set()
        recompute.join(timeout=15)
        app.state.engine.dispose()
