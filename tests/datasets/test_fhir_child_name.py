"""The name a child is shown by on the screening page and in its API, read from Patient.name by both FHIR readers
with one rule: by ``use`` (an adopted child's birth name, use "old", had been shown because it came first), a
current name before one whose period ended, the kanji before the kana reading, ``text`` when given, and a name in a
CJK script family first (it had been written given-first, "花子 山田") (charset review 4, defect 2)."""

from __future__ import annotations

from typing import Any

import pytest

from datasets.emr_records import ChildRecord
from datasets.fhir_emr import record_to_bundle, records_from_bundle
from datasets.fhir_fast import records_from_bundle_fast
from tests.screening.conftest import ordinary_child

REPRESENTATION = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation"


def _representation(code: str) -> list[dict[str, str]]:
    return [{"url": REPRESENTATION, "valueCode": code}]


NAMES: dict[str, tuple[list[dict[str, Any]], str]] = {
    "adopted": (
        [{"use": "old", "family": "Birthname", "given": ["Anna"]}, {"use": "official", "family": "Adopted", "given": ["Anna"]}],
        "Anna Adopted",
    ),
    "nickname": ([{"use": "nickname", "given": ["Bubbles"]}, {"use": "official", "family": "Smith", "given": ["Jane"]}], "Jane Smith"),
    "maiden-and-anonymous": (
        [{"use": "anonymous", "text": "Child A"}, {"use": "maiden", "family": "Doe"}, {"family": "Roe", "given": ["Mary", "Ann"]}],
        "Mary Ann Roe",
    ),
    "only-an-old-name": ([{"use": "old", "family": "Birthname", "given": ["Anna"]}], "Anna Birthname"),
    "official-before-usual": (
        [{"use": "usual", "given": ["Kim"]}, {"use": "official", "family": "Lee", "given": ["Kimberly"]}],
        "Kimberly Lee",
    ),
    "period-ended": (
        [
            {"use": "official", "family": "Former", "given": ["Sam"], "period": {"end": "2022-01-31"}},
            {"use": "official", "family": "Current", "given": ["Sam"], "period": {"start": "2022-02-01"}},
        ],
        "Sam Current",
    ),
    "kana-reading-first": (
        [
            {"extension": _representation("SYL"), "family": "やまだ", "given": ["はなこ"]},
            {"extension": _representation("IDE"), "family": "山田", "given": ["花子"]},
        ],
        "山田花子",
    ),
    "romaji-and-kanji": (
        [
            {"extension": _representation("ABC"), "family": "Yamada", "given": ["Hanako"]},
            {"extension": _representation("IDE"), "family": "山田", "given": ["花子"]},
        ],
        "山田花子",
    ),
    "kanji": ([{"family": "山田", "given": ["花子"]}], "山田花子"),
    "hangul": ([{"family": "홍", "given": ["길동"]}], "홍길동"),
    "chinese": ([{"use": "official", "family": "王", "given": ["小东"]}], "王小东"),
    "text-as-written": ([{"text": "山田 花子", "family": "山田", "given": ["花子"]}], "山田 花子"),
}


def _bundle(names: list[dict[str, Any]]) -> dict[str, Any]:
    bundle = record_to_bundle(ordinary_child("child-named"))
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Patient":
            entry["resource"]["name"] = names
    return bundle


@pytest.mark.parametrize("label", NAMES)
def test_both_readers_show_the_child_by_the_same_current_name(label: str) -> None:
    names, expected = NAMES[label]
    bundle = _bundle(names)
    full = [r for r in records_from_bundle(bundle, "test") if isinstance(r, ChildRecord)]
    fast = [r for r in records_from_bundle_fast(bundle, "test") if isinstance(r, ChildRecord)]
    assert [r.name for r in full] == [r.name for r in fast] == [expected]
