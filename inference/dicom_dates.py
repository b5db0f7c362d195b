"""A DICOM date (DA) as a calendar day: one reader for every place that needs the day of a study or a birth."""

from __future__ import annotations

from datetime import date

__all__ = ["dicom_date"]


def dicom_date(value: str) -> date | None:
    """The day of a DA value, or None when it is empty or not a date. ``YYYYMMDD``, and the ACR-NEMA form
    ``YYYY.MM.DD`` that PS3.5 6.2 asks readers to accept and older archives still send: read only as the former,
    such a study had no patient age (a 3-year-old's chest film refused as "patient age unknown") and fell in the
    quality report's age band "unknown". Only the day: a DICOM date carries no zone."""
    digits = str(value).strip()
    if len(digits) == 10 and digits[4] == digits[7] == ".":
        digits = digits[:4] + digits[5:7] + digits[8:]
    if len(digits) != 8 or not digits.isdigit():  # strptime would read "2025011" as 1 January
        return None
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None
