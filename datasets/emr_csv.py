"""Read children's records from the flat CSV extract for hospitals without FHIR.

A folder with three files (UTF-8, a byte-order mark allowed, as Excel's "CSV UTF-8" writes; comma-separated;
header row). Text that is not UTF-8 stops the batch with the file's name and what to do, as a missing file does:

* ``patients.csv``: ``patient_id,birth_date,sex`` (ISO date, a time of day after it read past; sex M/F/U, male/female/other/unknown, the ISO/IEC
  5218 numbers 1/2/0/9 or German m/w/d; any other value is read as not known and listed as unread), optionally
  ``name``, ``mrn`` (the hospital's record number), ``practitioner`` and ``organization`` (whose patient
  the child is: scopes the paediatrician's page), ``death_date`` (ISO date, or yes: the child has died and
  is not screened; a value that is neither is listed as unread) and ``gestational_age`` (completed weeks at birth:
  ``28``, ``28.5``, ``28+3`` or ``28 3/7``; a preterm child's growth is read at corrected age, ``screening/gestation.py``);
* ``diagnoses.csv``: ``patient_id,date,system,code[,kind][,status][,display]``; ``system`` is icd10, snomed, hpo
  or atc (also as their FHIR URIs and common spellings: ICD-10-CM, SNOMED CT, HP), orpha or omim (a recorded
  rare-disease diagnosis), or icd11 (read for such diagnoses only: any other ICD-11 row is listed as unread); ``kind`` condition (default), procedure, encounter or medication; ``status`` refuted marks
  an excluded finding, entered-in-error a row the writer withdrew (not read), unconfirmed, provisional,
  differential or suspected a suspicion (its findings count; a suspected rare disease is no diagnosis); the
  ICD-10-GM certainty letters A (excluded) and V (suspected) read the same; ``display`` (or ``description``) the condition's name
  as written (a SNOMED CT diagnosis, which no map holds, is recognised by it, and so is one in a code system not
  read, whose row is still listed as unread);
* ``observations.csv``: ``patient_id,date,loinc,value,unit`` (a decimal comma, ``"70,5"``, reads as 70.5; three
  digits after it, ``"3,450"``, may be a thousands separator and the row is listed as unread).

Column names are read in any case and spacing (``Patient_ID``, ``death date``: :func:`_column_name`).
All three files and their columns are required: a missing one is an :class:`ExtractError` that stops
the batch with its name (a child without its diagnoses file would otherwise look healthy). A row that
cannot be read is listed on its child's record as a dropped entry (the child is screened as incomplete).
One row per child in ``patients.csv``: a repeated ``patient_id`` is an error naming both lines (the child is
read from the first row, which takes all of its diagnoses and observations). A diagnosis or observation row that
repeats an earlier row of the child cell for cell is read once.

When every file is sorted by ``patient_id`` (``sort -t, -k1,1``) the files are merged as they stream
and memory stays flat; otherwise diagnoses and observations are grouped in memory (logged).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import TextIO

from datasets.emr_records import (
    DECEASED_UNDATED,
    GESTATION_AT_BIRTH,
    ChildRecord,
    CodedFact,
    DroppedEntry,
    Measurement,
    RecordError,
    code_system,
    decimal_text,
    gestation_text_days,
    sex_of,
)
from datasets.errors import ExtractError
from datasets.fhir_entry_rules import MONTH_ONLY_BIRTH, UNCONFIRMED, VOID_VERIFICATION, Unreadable, month_only_birth

__all__ = ["read_csv_extract", "check_extract", "CSV_FILES", "REQUIRED_COLUMNS"]

logger = logging.getLogger(__name__)

CSV_FILES = ("patients.csv", "diagnoses.csv", "observations.csv")
REQUIRED_COLUMNS = {
    "patients.csv": ("patient_id", "birth_date", "sex"),
    "diagnoses.csv": ("patient_id", "date", "system", "code"),
    "observations.csv": ("patient_id", "date", "loinc", "value", "unit"),
}
_KINDS = {"condition", "procedure", "encounter", "medication"}
_YES = {"yes", "y", "true", "1", "deceased"}

Row = tuple[int, dict[str, str]]

_SEPARATORS = re.compile(r"[\s\-]+")


def _column_name(header: str) -> str:
    """A header cell as the column it names: ``Death_Date``, `` death date `` and ``Death-Date`` are ``death_date``.
    Exports and Excel write headers in their own case and spacing; read only as written, an optional column so
    written was ignored without a word: a ``Death_Date`` screened a child who had died, a ``Status`` of refuted
    made an excluded diagnosis a diagnosis."""
    return _SEPARATORS.sub("_", header.strip()).lower()


@contextlib.contextmanager
def _open(path: Path) -> Iterator[TextIO]:
    """The file as UTF-8 text, a byte-order mark read past (Excel's "CSV UTF-8" writes one, and the first column's
    name then began with it: "no column patient_id"); text that is not UTF-8 (a Windows-1252 or Latin-1 export)
    is an :class:`ExtractError` naming the file, where it had been a traceback."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        try:
            yield handle
        except UnicodeDecodeError as exc:
            bad = exc.object[exc.start : exc.start + 1].hex() if isinstance(exc.object, bytes) else "?"
            with path.open("rb") as raw:
                start = raw.read(4)
            if start.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in start:
                # Excel's "Unicode Text" (UTF-16, tab-separated): the advice to convert from Windows-1252 was wrong
                raise ExtractError(
                    f"{path.name} is UTF-16 text (as Excel's \"Unicode Text\" writes it), not UTF-8: export it as CSV "
                    "UTF-8 (comma-separated), or convert it: iconv -f UTF-16 -t UTF-8"
                ) from exc
            raise ExtractError(
                f"{path.name} is not UTF-8 text (byte 0x{bad} cannot be read): export it as UTF-8 "
                "(in Excel: CSV UTF-8), or convert it, e.g. iconv -f WINDOWS-1252 -t UTF-8"
            ) from exc


def _rows(path: Path) -> Iterator[Row]:
    """The rows of a CSV file as ``{column name: stripped value}`` (:func:`_column_name`), as ``csv.DictReader`` gives them
    (blank rows skipped, a short row padded with "", the cells beyond the header dropped), each with the number of
    the file line it begins on, with the header's names stripped once instead of once per row."""
    if not path.is_file():
        return
    with _open(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)  # a blank first line is an empty header, as DictReader has it
        if header is None:
            return
        columns = [(i, _column_name(name)) for i, name in enumerate(header) if name]
        width = len(header)
        read = reader.line_num
        for cells in reader:
            # the file's line the row begins on, as an editor shows it: a blank line and a quoted line break
            # count (rows had been counted, and a message named the wrong line)
            line, read = read + 1, reader.line_num
            if not cells:
                continue
            if len(cells) < width:
                cells = cells + [""] * (width - len(cells))
            yield line, {name: cells[i].strip() for i, name in columns}


def check_extract(folder: Path) -> None:
    """Raise :class:`ExtractError` naming the first missing file or column of the extract."""
    if not folder.is_dir():
        raise ExtractError(f"{folder} is not a folder with {', '.join(CSV_FILES)}")
    for name, columns in REQUIRED_COLUMNS.items():
        path = folder / name
        if not path.is_file():
            raise ExtractError(f"{name} is missing from {folder}")
        with _open(path) as handle:
            header = next(csv.reader(handle), [])
        missing = [c for c in columns if c not in {_column_name(h) for h in header}]
        if missing:
            separator = next((f" (its header has {sep!r}: comma-separated columns are read)" for sep in (";", "\t", "|")
                              if len(header) == 1 and sep in header[0]), "")
            raise ExtractError(f"{name} has no column {', '.join(missing)} (header: {','.join(header)}){separator}")


def _is_sorted(path: Path) -> bool:
    """Whether the file is sorted by ``patient_id`` (only that column is looked at)."""
    if not path.is_file():
        return True
    with _open(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)  # a blank first line is an empty header, as DictReader has it
        if header is None:
            return True
        # The last column so named wins, as in the rows of _rows.
        column = max((i for i, name in enumerate(header) if name and _column_name(name) == "patient_id"), default=None)
        previous = ""
        for cells in reader:
            if not cells:
                continue
            pid = cells[column].strip() if column is not None and column < len(cells) else ""
            if pid < previous:
                return False
            previous = pid
    return True


def _fact(row: dict[str, str]) -> CodedFact:
    kind = (row.get("kind") or "condition").lower()
    if kind not in _KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    system = code_system(row.get("system", ""))
    status = (row.get("status") or "").strip().lower()
    # ICD-10-GM's certainty letters too, as German exports give them: A excluded, V suspected (Z, G: as written)
    refuted, unconfirmed = status in {"refuted", "excluded", "absent", "a"}, status in UNCONFIRMED | {"suspected", "v"}
    display = (row.get("display") or row.get("description") or "").strip() if kind == "condition" else ""
    if system in ("other", "icd11") or not row.get("code"):
        facts = []
        code = row.get("code") or ""
        if kind == "condition" and (display or (system == "icd11" and code)):  # no finding, but it may record a diagnosis
            with contextlib.suppress(ValueError):
                when = _iso_date(row["date"], "date") if row.get("date") else None
                short = "icd11" if system == "icd11" and code else "name"
                facts = [CodedFact("condition", short, code, when, refuted, unconfirmed, display[:200])]
        if system == "icd11" and code:
            raise Unreadable("ICD-11 is read for recorded rare-disease diagnoses only", facts)
        raise Unreadable(f"unknown code system {row.get('system')!r} or empty code", facts)
    when = _iso_date(row["date"], "date") if row.get("date") else None
    return CodedFact(kind, system, row["code"], when, refuted, unconfirmed, display)  # type: ignore[arg-type]


# A decimal comma ("70,5" in a quoted cell), as exports in a German or French locale write values: read as 70.5,
# where every measurement of such a site had been an unread row (every child incomplete, no growth finding). Three
# digits after the comma may be a thousands separator ("3,450" g): that stays an unread row, listed.
_DECIMAL_COMMA = re.compile(r"-?[0-9]+,(?:[0-9]{1,2}|[0-9]{4,})")


# A date with its time of day, as database exports write a date column ("2022-01-05 00:00:00", ISO's T, a zone):
# read as the date written, as the FHIR readers read a dateTime. It had been an unread row, and in birth_date a
# child not screened: every row of such an export.
_DATE_TIME = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?")


def _iso_date(value: str, column: str) -> date:
    """``value`` as a date written YYYY-MM-DD; a ValueError that names the column and the form otherwise (Python's
    own "Invalid isoformat string" said neither, and "05/01/2022" may be May or January: never guessed)."""
    if not value:
        raise ValueError(f"{column} is empty")
    timed = _DATE_TIME.fullmatch(value)
    try:
        return date.fromisoformat(timed.group(1) if timed else value)
    except ValueError as exc:
        if timed or re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
            raise ValueError(f"{column} {value!r}: {exc}") from None  # the form is right, the day is not
        raise ValueError(f"{column} {value[:30]!r} is not a date written YYYY-MM-DD") from None


def _measurement(row: dict[str, str]) -> Measurement:
    value = row["value"]
    if _DECIMAL_COMMA.fullmatch(value):
        value = value.replace(",", ".")
    return Measurement(row["loinc"], decimal_text(value), row.get("unit", ""), _iso_date(row["date"], "date"))


def read_csv_extract(folder: Path) -> Iterator[ChildRecord | RecordError]:
    """One record per row of ``patients.csv`` with its diagnoses and observations.

    Raises :class:`ExtractError` before the first record when a file or a required column is missing.
    """
    check_extract(folder)
    paths = [folder / name for name in CSV_FILES]
    streaming = all(_is_sorted(p) for p in paths)
    if not streaming:
        logger.warning("CSV extract %s is not sorted by patient_id: grouping in memory", folder.name)
    diagnoses = _Grouped(paths[1], streaming)
    observations = _Grouped(paths[2], streaming)
    # patient_id -> its first line: a sorted file holds a repeat next to its first row, so one entry is enough
    first_line: dict[str, int] = {}
    for line, row in _rows(paths[0]):
        where = f"patients.csv:{line}"
        pid = row.get("patient_id", "")
        if pid and pid in first_line:
            # The first row took every diagnosis and observation of the child; a repeat read on would be the same
            # child screened again on nothing, "screened, low risk", beside (or in place of) the real result.
            yield RecordError(
                "patients.csv", where,
                f"patient_id {pid!r} repeats patients.csv:{first_line[pid]}: one row per child; the child was read "
                "from the first row, this one was not read",
            )
            continue
        if streaming:
            first_line.clear()
        try:
            month_only = month_only_birth(row["birth_date"])
            birth = month_only or _iso_date(row["birth_date"], "birth_date")
            sex, unread_sex = sex_of(row.get("sex"), "sex")
            if not pid:
                raise ValueError("empty patient_id")
            if "\x00" in pid:  # an identifier: removing the NUL could name another child (datasets/emr_records.py)
                raise ValueError("patient_id holds a NUL character (0x00)")
        except (KeyError, ValueError) as exc:
            yield RecordError("patients.csv", where, f"invalid patient row: {exc}")
            continue
        first_line[pid] = line
        record = ChildRecord(
            pid,
            birth,
            sex,
            source=folder.name,
            name=row.get("name", ""),
            mrn=row.get("mrn", ""),
            practitioner=row.get("practitioner", ""),
            organization=row.get("organization", ""),
        )
        if month_only:
            record.dropped.append(DroppedEntry(where, MONTH_ONLY_BIRTH))
        if unread_sex:
            record.dropped.append(DroppedEntry(where, unread_sex))
        gestation = (row.get("gestational_age") or "").strip()
        if gestation:
            days = gestation_text_days(gestation)
            if days is None:
                record.dropped.append(DroppedEntry(where, (
                    f"gestational_age {gestation[:20]!r} is not completed weeks at birth (28, 28.5, 28+3 or 28 3/7)")))
            else:  # as the record of the child's birth (LOINC Gestational age--at birth), in days
                record.measurements.append(Measurement(GESTATION_AT_BIRTH, float(days), "d", birth))
        died = (row.get("death_date") or "").strip()
        if died:
            try:
                record.deceased = DECEASED_UNDATED if died.lower() in _YES else _iso_date(died, "death_date")
            except ValueError:
                record.dropped.append(DroppedEntry(where, f"death_date {died[:20]!r}: not a date"))
        for dline, drow in _once(diagnoses.take(pid)):
            if (drow.get("status") or "").strip().lower() == VOID_VERIFICATION:
                continue  # withdrawn by the writer (datasets/fhir_entry_rules.py)
            try:
                record.facts.append(_fact(drow))
            except (KeyError, ValueError) as exc:
                # A system not read (its ICD-11 code or name may still record a diagnosis), or a row not valid.
                facts, verb = (tuple(exc.facts), "unread") if isinstance(exc, Unreadable) else ((), "invalid")
                record.dropped.append(DroppedEntry(f"diagnoses.csv:{dline}", f"{verb} diagnosis row: {exc}", facts))
                record.facts.extend(facts)
        for oline, orow in _once(observations.take(pid)):
            try:
                record.measurements.append(_measurement(orow))
            except (KeyError, ValueError) as exc:
                record.dropped.append(DroppedEntry(f"observations.csv:{oline}", f"invalid observation row: {exc}"))
        yield record
    for name, grouped in (("diagnoses.csv", diagnoses), ("observations.csv", observations)):
        left = grouped.leftover()
        if left:
            yield RecordError(name, name, f"{left} rows reference no patient in patients.csv")


def _once(rows: list[Row]) -> list[Row]:
    """A child's rows, a row that repeats an earlier one cell for cell left out: the same entry exported twice (a
    query joining each diagnosis to every encounter, two extracts appended), as the FHIR readers read a repeated
    resource once. Read twice, a malformation counted twice among the congenital codes and a single low measurement
    "persisted" as a growth finding."""
    seen: set[tuple[tuple[str, str], ...]] = set()
    out = []
    for line, row in rows:
        cells = tuple(row.items())
        if cells not in seen:
            seen.add(cells)
            out.append((line, row))
    return out


class _Grouped:
    """Rows of one file handed out per patient: merged while streaming, or from an in-memory index."""

    def __init__(self, path: Path, streaming: bool) -> None:
        self.streaming = streaming
        self._unclaimed = 0
        if streaming:
            self._iter = _rows(path)
            self._head: Row | None = next(self._iter, None)
        else:
            self._index: dict[str, list[Row]] = {}
            for line, row in _rows(path):
                self._index.setdefault(row.get("patient_id", ""), []).append((line, row))

    def take(self, pid: str) -> list[Row]:
        if not self.streaming:
            return self._index.pop(pid, [])
        out = []
        while self._head is not None and self._head[1].get("patient_id", "") <= pid:
            if self._head[1].get("patient_id") == pid:
                out.append(self._head)
            else:
                self._unclaimed += 1
            self._head = next(self._iter, None)
        return out

    def leftover(self) -> int:
        if not self.streaming:
            return sum(len(v) for v in self._index.values())
        rest = self._unclaimed
        while self._head is not None:
            rest += 1
            self._head = next(self._iter, None)
        return rest
