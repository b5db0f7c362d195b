"""The radiologists' page with names and descriptions in right-to-left scripts in a real Chromium against the real
app (found by review): the patient's number stays after the name, the accession after the description."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from inference.tables import Study
from service.db import make_engine, make_session_factory, session_scope
from service.settings import Settings
from tests.worklist.test_page_reading import reading
from worklist.tables import WorklistEntry

pytestmark = pytest.mark.integration

# Where a piece of an element's text is drawn: the left and right of the first text node run holding it.
_DRAWN_AT = """([selector, piece]) => {
  const walker = document.createTreeWalker(document.querySelector(selector), NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const at = node.textContent.indexOf(piece);
    if (at < 0) continue;
    const range = document.createRange();
    range.setStart(node, at); range.setEnd(node, at + piece.length);
    const box = range.getBoundingClientRect();
    return [box.left, box.right];
  }
  return null;
}"""


def test_an_arabic_name_keeps_its_patient_number_after_it(settings: Settings) -> None:
    """An Arabic name beside a numeric patient ID had been drawn "(12345 <name>)": the Unicode bidirectional
    algorithm took the number into the right-to-left run, so it read before the name. The same held for an
    Arabic study description and a numeric accession number in the title."""
    name, description = "محمد^عبد الرحمن", "أشعة الصدر"
    with reading(settings, {"A": name}, claimed=False) as r:
        page, expect = r.page, r.expect
        engine = make_engine(settings.resolved_database_url)
        try:
            with session_scope(make_session_factory(engine)) as session:
                session.execute(update(Study).where(Study.study_instance_uid == r.uids["A"]).values(patient_id="12345"))
                listed = WorklistEntry.study_instance_uid == r.uids["A"]
                session.execute(
                    update(WorklistEntry).where(listed).values(study_description=description, accession_number="678901")
                )
        finally:
            engine.dispose()
        r.row("A").locator("button.open").click()
        expect(page.locator("#s-facts")).to_contain_text("12345")
        patient = "#s-facts dd:nth-of-type(1)"
        name_at, number_at = (page.evaluate(_DRAWN_AT, [patient, piece]) for piece in ("محمد", "12345"))
        assert number_at[0] >= name_at[1], (name_at, number_at)  # the number starts right of the name
        desc_at, accession_at = (page.evaluate(_DRAWN_AT, ["#s-title", piece]) for piece in ("الصدر", "678901"))
        assert accession_at[0] >= desc_at[1], (desc_at, accession_at)
