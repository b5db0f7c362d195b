"""The radiologists' page shows why a model did not move a study (issue 11): a study outside the model's intended
use says so and keeps its arrival place; each study shows its model version's steering right.

Set MEDSCREEN_SCREENSHOT_DIR to keep the screenshots (docs/screenshots/ holds the ones in the README)."""

from __future__ import annotations

import os
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
ADULT = "patient 64 y; chest-xray v1 is validated for 1-5 y"


def test_page_shows_out_of_scope_reasons_and_steering_rights(
    settings: Settings, tmp_path: Path, registered_store: Path
) -> None:
    sync_api = playwright_or_skip()
    register_serving_versions(
        settings, registered_store,
        {"chest-xray-champion": "1", "ct-chest-champion": "1", "mammography-champion": "1"},
    )
    shots = Path(os.environ.get("MEDSCREEN_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    settings = settings.model_copy(update={"worklist_recompute_s": 0.3})
    app = create_app(settings)
    factory = app.state.session_factory
    now = utcnow()
    uids: dict[str, str] = {}
    with session_scope(factory) as session:
        create_user(session, "rita", PASSWORD, ["radiologist"], actor="test")
        seeded = [
            # name, minutes ago, modality, task, outcome, score, steering, reason, description
            ("adult", 55, "DX", "chest-xray", "out_of_scope", None, "raise-only", ADULT, "XR CHEST PA (adult)"),
            ("neg-raise", 50, "DX", "chest-xray", "scored", 0.12, "raise-only", None, "XR CHEST AP"),
            ("ct-shadow", 45, "CT", "ct-chest", "scored", 0.998, "shadow", None, "CT CHEST"),
            ("neg-defer", 40, "DX", "chest-xray", "scored", 0.08, "defer", None, "XR CHEST PA"),
            ("mg-raise", 30, "MG", "mammography", "scored", 0.81, "raise-only", None, "MAMMO SCREENING"),
            ("thumb", 20, "MG", "mammography", "out_of_scope", None, "raise-only",
             "image of 51x64 pixels; at least 512x512 needed; mammography v1 is validated for full-field screening "
             "mammograms (MG), one view at a time, with laterality, at least 512x512 pixels", "MAMMO (thumbnail)"),
        ]
        for name, minutes, modality, task, outcome, score, steering, reason, description in seeded:
            study = make_study(session, arrived=now - timedelta(minutes=minutes), modality=modality, task=task,
                               description=description)
            add_result(session, study, score=score, outcome=outcome, steering=steering, reason=reason,
                       model_version="1", threshold=0.6)
            uids[name] = study.study_instance_uid

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
                sync_api.expect(page.locator(rows)).to_have_count(6)
                listed = page.eval_on_selector_all(rows, "trs => trs.map(tr => [tr.dataset.uid, tr.dataset.tier])")
                tiers = {uid: tier for uid, tier in listed}
                # Arrival order, except that the raise-only version's positive is raised and only the version
                # that earned `defer` deferred its negative; the raise-only negative, the shadow CT (a positive
                # call) and the out-of-scope studies keep their place.
                order = ("mg-raise", "adult", "neg-raise", "ct-shadow", "thumb", "neg-defer")
                assert [uid for uid, _ in listed] == [uids[name] for name in order]
                assert tiers[uids["mg-raise"]] == "positive" and tiers[uids["neg-defer"]] == "negative"
                for name in ("adult", "neg-raise", "ct-shadow", "thumb"):
                    assert tiers[uids[name]] == "unscored", name
                adult = page.locator(f"{rows}[data-uid='{uids['adult']}']")
                assert "not scored: outside intended use" in adult.inner_text()
                assert "(shadow)" in page.locator(f"{rows}[data-uid='{uids['ct-shadow']}']").inner_text()
                # A study the model scored negative is not called "unscored": the badge reads as the RIS is told.
                negative_kept = page.locator(f"{rows}[data-uid='{uids['neg-raise']}']")
                assert negative_kept.locator(".tier").inner_text() == "routine"
                assert "negative" in negative_kept.inner_text() and "unscored" not in negative_kept.inner_text()

                adult.click()
                sync_api.expect(page.locator("#s-facts")).to_contain_text(ADULT)
                assert "raise-only" in page.inner_text("#s-facts")
                assert "intended use" in page.inner_text("#s-priority")
                assert page.inner_text("#s-priority").startswith("Priority routine:")
                # Times in UTC, as the service records them; the timeline names the tier as the page does.
                assert re.search(r"Arrived\s+\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", page.inner_text("#s-facts"))
                timeline = page.inner_text("#s-timeline")
                assert re.search(r"\d{2}:\d{2}:\d{2} UTC · ", timeline) and "listed as routine" in timeline
                # With the study open the list still shows call, state and claim without scrolling sideways: the
                # site and order columns (both in the panel) give way and the long cells wrap.
                panel = page.locator("#list-panel")
                assert panel.evaluate("p => p.scrollWidth <= p.clientWidth"), "the list scrolls sideways with a study open"
                assert page.locator("#worklist th", has_text="Claim").is_visible()
                assert not page.locator("#worklist th", has_text="Site").is_visible()
                page.click("#close-study")
                assert page.locator("#worklist th", has_text="Site").is_visible()
                adult.click()
                sync_api.expect(page.locator("#s-facts")).to_contain_text(ADULT)
                page.screenshot(path=str(shots / "worklist-out-of-scope.png"), full_page=True)

                page.locator(f"{rows}[data-uid='{uids['ct-shadow']}']").click()
                sync_api.expect(page.locator("#s-facts")).to_contain_text("shadow: recorded for monitoring; never moves a study")
                assert "shadow model, moves nothing" in page.inner_text("#s-priority")
                # Its positive call (score 0.998) is not shown as a finding: grey, and no "positive" anywhere on it.
                shadow_row = page.locator(f"{rows}[data-uid='{uids['ct-shadow']}']")
                assert "positive" not in shadow_row.inner_text() and shadow_row.locator(".fill.shadow").count() == 1
                assert "not a finding" in page.inner_text("#s-score") and "positive" not in page.inner_text("#s-score")
                assert "positive" not in page.inner_text("#s-priority") and "positive" not in page.inner_text("#s-timeline")
                page.screenshot(path=str(shots / "study-steering-right.png"), full_page=True)
            finally:
                browser.close()
    finally:
        stop.set()
        recompute.join(timeout=15)
        app.state.engine.dispose()
