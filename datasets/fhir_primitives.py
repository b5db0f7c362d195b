"""FHIR R4 primitives as screening reads them (ids, codes, dates, code systems) and the resource types it
reads: shared by the per-resource fast reader (:mod:`datasets.fhir_fast`) and the typed Bundle decoder
(:mod:`datasets.fhir_bundle_decoder`), so that both accept exactly the same values.

A file may begin with UTF-8's byte-order mark (PowerShell's ``Out-File -Encoding utf8`` and other Windows
tools write one): it is read past (:func:`numbered_lines`, :data:`UTF8_BOM`); before, it made the file's first
child a "not JSON" record error.

Dates follow ``fhir.resources``: a full date, or a dateTime with a time zone, is the date as written
(no shift to UTC); a partial date (``2021``, ``2021-05``) is no date; anything else is an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import date
from functools import lru_cache
from typing import Any, Literal

from datasets.emr_records import CODE_SYSTEMS, FactKind

__all__ = [
    "RESOURCE_TYPES",
    "KINDS",
    "REQUIRED",
    "SYSTEMS",
    "ID",
    "invalid_id",
    "DateKind",
    "parse_date",
    "valid_code",
    "reference_key",
    "full_url_keys",
    "merge_aliases",
    "UTF8_BOM",
    "numbered_lines",
]

UTF8_BOM = b"\xef\xbb\xbf"


def numbered_lines(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """A file's lines numbered from 1, a byte-order mark before the first read past."""
    for number, line in enumerate(lines, start=1):
        yield number, line.removeprefix(UTF8_BOM) if number == 1 else line

KINDS: dict[str, FactKind] = {
    "Condition": "condition",
    "Procedure": "procedure",
    "Encounter": "encounter",
    "MedicationRequest": "medication",
}
RESOURCE_TYPES = frozenset({"Patient", "Observation", *KINDS})

# FHIR R4 primitive patterns (https://hl7.org/fhir/R4/datatypes.html).
ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_CODE = re.compile(r"[^\s]+( [^\s]+)*")


def invalid_id(value: Any) -> str | None:
    """Why a resource's ``id`` is not a FHIR id, or None (absent or valid). ``fhir.resources`` checks its characters
    but not its 64-character bound: the full reader had read a 140-character Patient id that the fast reader
    refuses, and the result then failed to store on PostgreSQL (its column holds 128)."""
    if value is None or (type(value) is str and ID.fullmatch(value) is not None):
        return None
    return f"id: invalid id {str(value)[:70]!r}"
_DATE = re.compile(r"[0-9]{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01]))?)?")
_DATETIME = re.compile(
    r"[0-9]{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?(Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?"
)
_INSTANT = re.compile(
    r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?(Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
)
DateKind = Literal["date", "dateTime", "instant"]
# Keyed by name, not by the compiled pattern: hashing a re.Pattern costs ~0.4 us, more than the cached parse.
_DATE_PATTERNS: dict[str, re.Pattern[str]] = {"date": _DATE, "dateTime": _DATETIME, "instant": _INSTANT}
# Elements FHIR R4 requires (1..1) of the resources read; fhir.resources rejects a resource without them.
REQUIRED = {
    "Condition": ("subject",),
    "Observation": ("status", "code"),
    "Procedure": ("status", "subject"),
    "Encounter": ("status", "class"),
    "MedicationRequest": ("status", "intent", "subject"),
}

# Exact system URIs to our short names, the fast path of ``code_system``.
SYSTEMS = {uri: short for uri, short in CODE_SYSTEMS.items() if "://" in uri}


@lru_cache(maxsize=1 << 16)
def parse_date(value: str, kind: DateKind) -> date | None:
    """A pure parse of a FHIR date, dateTime or instant, cached: a population's records repeat the same
    few thousand dates.

    ValueError when ``value`` is not of its ``kind`` (or is no calendar date, 2021-02-30); None for a
    year or a month, which is no calendar date (as fhir.resources keeps it a string)."""
    if _DATE_PATTERNS[kind].fullmatch(value) is None:
        raise ValueError(value)
    if len(value) < 10:
        return None
    return date.fromisoformat(value[:10])  # ValueError for 2021-02-30, which the pattern lets through


@lru_cache(maxsize=1 << 16)
def valid_code(code: str) -> bool:
    """A pure check, cached: a population's codes repeat."""
    return _CODE.fullmatch(code) is not None


def reference_key(reference: str) -> str:
    """The id a reference names, however it is written: ``Patient/7``, ``https://host/fhir/Patient/7`` and
    ``Patient/7/_history/2`` name ``7``; ``urn:uuid:X`` (a Bundle entry's ``fullUrl``, as transaction
    Bundles such as Synthea's refer to their Patient) names ``X``."""
    if reference.startswith("urn:"):
        return reference.rpartition(":")[2]
    return reference.partition("/_history/")[0].rpartition("/")[2]


def full_url_keys(entries: list[Any]) -> dict[int, str]:
    """The ``fullUrl`` of each Bundle entry holding a Patient or a Medication (what other entries refer to), by
    the entry's position."""
    return {
        i: e["fullUrl"]
        for i, e in enumerate(entries)
        if isinstance(e, dict) and isinstance(e.get("fullUrl"), str) and e["fullUrl"]
        and isinstance(e.get("resource"), dict) and e["resource"].get("resourceType") in ("Patient", "Medication")
    }


def merge_aliases(aliases: dict[str, str], *grouped: dict[str, list[Any]]) -> None:
    """Move what was grouped under a Patient entry's fullUrl id to its Patient.id (the readers group each
    resource under the id its reference names, before they know which Patient that is)."""
    for alias, pid in aliases.items():
        for group in grouped:
            if alias in group:
                group.setdefault(pid, []).extend(group.pop(alias))
