"""The radiologists' page against WCAG 2.1 AA, as a hospital's accessibility audit tests it (found by review): a
reader with low vision (400% zoom, no colour vision), a keyboard-only reader and a screen-reader user.

One logged-in Chromium for the whole module (a page costs seconds on CI); each test leaves the page with no study
open, at the desktop width."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.settings import Settings
from tests.ports import free_port
from tests.worklist.test_page_reading import Reading, reading

pytestmark = pytest.mark.integration

DESKTOP = {"width": 1400, "height": 900}


@pytest.fixture(scope="module")
def page_of(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reading]:
    home = Path(tmp_path_factory.mktemp("accessibility")) / "var"
    # A claim of 6 s, warned 3 s before it lapses (half a claim shorter than four minutes; two minutes otherwise).
    settings = Settings(
        home=home, http_port=free_port(), dicom_port=free_port(), min_free_disk_mb=1, worklist_claim_minutes=0.1
    )
    with reading(settings, {"A": "ALPHA^Anna", "B": "BRAVO^Ben", "C": "CHARLIE^Cy"}, claimed=False) as r:
        yield r


@pytest.fixture
def r(page_of: Reading) -> Iterator[Reading]:
    page_of.page.set_viewport_size(DESKTOP)
    yield page_of
    page_of.page.set_viewport_size(DESKTOP)
    if page_of.page.locator("#study").is_visible():
        page_of.page.click("#close-study")
    page_of.expect(page_of.page.locator("#study")).to_be_hidden()


def test_the_open_studys_row_is_marked_by_more_than_its_tint(r: Reading) -> None:
    """WCAG 1.4.1 (use of colour) and 4.1.2: the row of the study open in the panel differed from the others by a
    background tint only (1.2:1), and a screen reader was not told which one it was."""
    page = r.page
    r.row("B").locator("button.open").click()
    r.expect(page.locator("#s-facts")).to_contain_text("BRAVO^Ben")
    differs = page.evaluate(
        """([open, other]) => {
          const look = (td) => { const s = getComputedStyle(td); return [s.boxShadow, s.borderLeftStyle, s.outlineStyle, s.fontWeight]; };
          const a = document.querySelector(`#rows tr[data-uid='${open}'] td`), b = document.querySelector(`#rows tr[data-uid='${other}'] td`);
          return JSON.stringify(look(a)) !== JSON.stringify(look(b));
        }""",
        [r.uids["B"], r.uids["A"]],
    )
    assert differs, "the open study's row differs from the others by its background colour only"
    r.expect(r.row("B").locator("button.open")).to_have_attribute("aria-current", "true")
    r.expect(r.row("A").locator("button.open")).not_to_have_attribute("aria-current", "true")
    page.click("#close-study")
    r.expect(r.row("B").locator("button.open")).not_to_have_attribute("aria-current", "true")


def test_the_final_reads_answers_are_named_by_the_finding_they_record(r: Reading) -> None:
    """WCAG 1.3.1 (info and relationships): the read form's "present" and "absent" were grouped under "Finding"
    only; the task written before them ("chest-xray:") was not part of any name a screen reader announces."""
    page = r.page
    r.row("C").locator("button.open").click()
    r.expect(page.locator("#s-facts")).to_contain_text("CHARLIE^Cy")
    page.click("#claim")
    r.expect(page.locator("#read-form")).to_be_visible()
    r.expect(page.get_by_role("radiogroup", name="chest-xray").get_by_role("radio", name="present")).to_have_count(1)
    r.expect(page.get_by_role("radiogroup", name="chest-xray").get_by_role("radio", name="absent")).to_have_count(1)
    page.click("#release")
    r.expect(page.locator("#read-form")).to_be_hidden()


def test_a_claim_about_to_lapse_is_announced_and_can_be_kept(r: Reading) -> None:
    """WCAG 2.2.1 (timing adjustable): one's own claim lapsed unannounced in the middle of a read (a colleague could
    then take the study, and the read was refused); there was no way to extend it before it lapsed."""
    page = r.page
    r.row("A").locator("button.open").click()
    r.expect(page.locator("#s-facts")).to_contain_text("ALPHA^Anna")
    page.click("#claim")
    r.expect(page.locator("#s-claim")).to_contain_text("Your claim lasts until")
    claimed_at = r.study("A")["claimed_at"]
    # Warned while the claim still holds, in the panel's status line (role=status: a screen reader says it).
    r.expect(page.locator("#s-claim")).to_contain_text("Your claim lapses at", timeout=5_000)
    r.expect(page.locator("#claim")).to_have_text("Keep my claim")
    assert page.locator("#s-claim").get_attribute("role") == "status"
    page.click("#claim")
    r.expect(page.locator("#s-claim")).to_contain_text("Your claim lasts until")
    assert r.study("A")["claimed_at"] > claimed_at, "the claim was not renewed"
    page.click("#release")
    r.expect(page.locator("#read-form")).to_be_hidden()


# Whether the focused element is drawn where it is, not under another (the study panel): its centre hits it.
_FOCUS_IN_SIGHT = """() => {
  const e = document.activeElement; e.scrollIntoView({block: 'nearest', inline: 'nearest'});
  const b = e.getBoundingClientRect(), top = document.elementFromPoint(b.x + b.width / 2, b.y + b.height / 2);
  return top !== null && e.contains(top);
}"""


@pytest.mark.parametrize("width", [320, 640])
def test_at_400_and_200_percent_zoom_the_keyboard_focus_is_never_under_the_study(r: Reading, width: int) -> None:
    """WCAG 2.4.7 (focus visible) and 1.4.10 (reflow): at 320 and 640 CSS px (a 1280 px screen at 400% and 200%) the
    study panel covered the list, and Shift+Tab from its Close button put the focus on Open buttons under it."""
    page = r.page
    page.set_viewport_size({"width": width, "height": 640})
    r.row("B").locator("td").first.click()  # the row, not its button: the study must open in sight all the same
    r.expect(page.locator("#s-facts")).to_contain_text("BRAVO^Ben")
    r.expect(page.locator("#s-title")).to_be_in_viewport()
    page.focus("#close-study")
    for _ in range(3):
        page.keyboard.press("Shift+Tab")
        assert page.evaluate(_FOCUS_IN_SIGHT), f"{page.evaluate('document.activeElement.outerHTML')} is under the panel"
    assert page.evaluate("() => document.documentElement.scrollWidth <= document.documentElement.clientWidth")


def test_the_lists_count_after_a_filter_change_is_said_to_a_screen_reader(r: Reading) -> None:
    """WCAG 4.1.3 (status messages): a filter changed the list and its count ("no studies"), in no status region:
    a screen reader said nothing, and its user could not tell an empty result from a filter that did nothing."""
    page = r.page
    status = page.locator("#list-status")
    page.select_option("#f-claimed", "mine")
    r.expect(status).to_have_text("No studies match these filters.")
    page.select_option("#f-claimed", "any")
    r.expect(status).to_have_text("Studies 1–3 of 3.")
    assert status.get_attribute("role") == "status"
    r.expect(page.locator("#rows tr")).to_have_count(3)
