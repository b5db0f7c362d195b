"""Parameters shared by the routers, bounded so that a value the database cannot take is a 422, not a 500.

SQLite and PostgreSQL bind an integer as a signed 64-bit value: a larger offset or id (a typo, a script, an
old bookmark) had failed when bound (OverflowError, NumericValueOutOfRange) and answered 500. A key declared
``Integer`` is 32-bit on PostgreSQL, which refuses a larger value as well: its id is an ``Int32RowId``.
PostgreSQL text and JSON cannot hold a NUL character, which SQLite stores: a note or name with one had answered
500 there.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator

__all__ = [
    "MAX_INT32_ROW_ID",
    "MAX_OFFSET",
    "MAX_PAGE",
    "MAX_ROW_ID",
    "Int32RowId",
    "Offset",
    "Page",
    "RowId",
    "StoredText",
]

MAX_ROW_ID = 2**63 - 1
MAX_INT32_ROW_ID = 2**31 - 1
# Under 2**63 with room to spare: the database adds the limit to the offset.
MAX_OFFSET = 2**62
# A page number is turned into an offset, (page - 1) * per_page: with up to 1,000 rows a page it stays under
# MAX_OFFSET.
MAX_PAGE = 2**52

Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip (0 to 2^62).")]
Page = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page number, from 1 (at most 2^52).")]
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="A row id (1 to 2^63 - 1).")]
# The id of a table whose key is declared Integer: 32-bit on PostgreSQL (SQLite's keys are 64-bit, but count up
# from 1, so no row there has a larger id before two billion inserts).
Int32RowId = Annotated[int, Path(ge=1, le=MAX_INT32_ROW_ID, description="A row id (1 to 2^31 - 1).")]


def _refuse_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("a NUL character (0x00) is not allowed here")
    return text


# Text of a request body that is stored (a note, a task name, an audit detail): no NUL, on either database.
StoredText = Annotated[str, AfterValidator(_refuse_nul)]
