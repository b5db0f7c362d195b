"""Parameters shared by the routers, bounded so that a value the database cannot take is a 422, not a 500.

SQLite and PostgreSQL bind an integer as a signed 64-bit value: a larger offset or id (a typo, a script, an
old bookmark) had failed when bound (OverflowError, NumericValueOutOfRange) and answered 500. PostgreSQL text and
JSON cannot hold a NUL character, which SQLite stores: a note or name with one had answered 500 there.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator

__all__ = ["MAX_OFFSET", "MAX_ROW_ID", "Offset", "RowId", "StoredText"]

MAX_ROW_ID = 2**63 - 1
# Under 2**63 with room to spare: the database adds the limit to the offset.
MAX_OFFSET = 2**62

Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip (0 to 2^62).")]
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="A row id (1 to 2^63 - 1).")]


def _refuse_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("a NUL character (0x00) is not allowed here")
    return text


# Text of a request body that is stored (a note, a task name, an audit detail): no NUL, on either database.
StoredText = Annotated[str, AfterValidator(_refuse_nul)]
