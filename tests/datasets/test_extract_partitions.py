"""Byte ranges of a Bundle NDJSON file: cut at line ends after about the target size, with the number of
each range's first line, and read back as the same numbered lines as reading the file line by line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from datasets.extract_partitions import _line_ranges, _lines


def _ranges_line_by_line(path: Path, target_bytes: int) -> list[tuple[int, int, int]]:
    """The ranges as first computed, reading every line (the reference)."""
    ranges: list[tuple[int, int, int]] = []
    start = offset = 0
    first_line = 1
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            offset += len(line)
            if offset - start >= target_bytes:
                ranges.append((start, offset, first_line))
                start, first_line = offset, number + 1
    if offset > start or not ranges:
        ranges.append((start, offset, first_line))
    return ranges


def _numbered_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            yield number, line.removesuffix(b"\n")


CONTENTS = {
    "empty": b"",
    "one-line-no-newline": b'{"a": 1}',
    "lines": b"".join(b'{"resourceType": "Bundle", "n": %d}\n' % i for i in range(200)),
    "blank-lines-and-crlf": b'{"a": 1}\r\n\n\n{"b": 2}\r\n   \n{"c": "x\\ry"}\n',
    "long-and-short": b"x" * 5000 + b"\n" + b"y\n" * 300 + b"z" * 7000 + b"\n" + b"last without newline",
    "a-lone-carriage-return": b'{"a": "\r"}\n{"b": 2}\n',
}


@pytest.mark.parametrize("name", list(CONTENTS))
@pytest.mark.parametrize("target", [1, 7, 100, 4096, 1 << 20])
def test_ranges_and_their_lines_are_those_of_reading_line_by_line(tmp_path: Path, name: str, target: int) -> None:
    path = tmp_path / "children.ndjson"
    path.write_bytes(CONTENTS[name])
    reported: list[int] = []
    ranges = _line_ranges(path, target, reported.append)
    assert ranges == _ranges_line_by_line(path, target)
    assert sum(reported) == len(CONTENTS[name])
    lines = [item for start, end, first in ranges for item in _lines(path, start, end, first)]
    assert lines == list(_numbered_lines(path))
