"""The radiologists' page on a 1024 px tablet in a real Chromium against the real app (found by review): the
list's call, state and claim are on screen without scrolling sideways, and so is an opened study, beside the
list's first columns."""

from __future__ import annotations

import pytest

from service.settings import Settings
from tests.worklist.test_page_reading import reading

pytestmark = pytest.mark.integration

WIDTH = 1024


def test_a_1024_px_tablet_shows_the_call_state_and_claim_and_the_opened_study(settings: Settings) -> None:
    """At 1024 px the list had needed 1,152 px: Call read "posi" at the edge and State and Claim were off screen; a
    study opened beside the list left it 562 px, cut at the score."""
    with reading(settings, {"A": "ALPHA^Anna", "B": "BRAVO^Ben"}, claimed=False) as r:
        page, expect = r.page, r.expect
        page.set_viewport_size({"width": WIDTH, "height": 768})
        expect(r.row("A").locator("td").last).to_have_text("—")
        sideways = page.eval_on_selector("#list-panel", "e => e.scrollWidth - e.clientWidth")
        assert sideways <= 1, f"the list scrolls {sideways} px sideways"
        for cell in ("td:nth-last-child(3)", "td:nth-last-child(2)", "td:last-child"):  # call, state, claim
            box = r.row("A").locator(cell).bounding_box()
            assert box is not None and box["x"] + box["width"] <= WIDTH, cell

        r.row("A").locator("button.open").click()
        expect(page.locator("#s-facts")).to_contain_text("ALPHA^Anna")
        panel = page.locator("#study").bounding_box()
        assert panel is not None and panel["x"] >= 0 and panel["x"] + panel["width"] <= WIDTH
        assert page.locator("#claim").is_visible()
        # The list's first columns stay in view, and the next study opens from them.
        button = r.row("B").locator("button.open")
        box = button.bounding_box()
        assert box is not None
        on_top = page.evaluate(
            "([x, y]) => document.elementFromPoint(x, y).closest('button.open')?.textContent",
            [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2],
        )
        assert on_top == button.text_content()
        button.click()
        expect(page.locator("#s-facts")).to_contain_text("BRAVO^Ben")
        page.click("#close-study")
        expect(page.locator("#study")).to_be_hidden()
        expect(button).to_be_focused()
