"""The CSV extract's row reader (``csv.reader`` with the header stripped once) reads every odd file as
``csv.DictReader`` does: blank lines skipped, short rows padded, extra cells dropped, each row numbered by its file
line; the sortedness check looks at the same patient ids."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from datasets.emr_csv import _is_sorted, _rows

ODD_FILES = {
    "plain": "patient_id,date,loinc,value,unit\nb,2021-01-01,8302-2,50,cm\na,2021-02-01,8302-2,51,cm\n",
    "odd": (
        " patient_id , date ,loinc,value,unit,\n"  # spaced names and an empty column name
        "a, 2021-01-01 ,8302-2,50,cm,x\n"
        "\n"
        "b,2021-01-02\n"  # short: padded
        'c,2021-01-03,8302-2,"5,1",cm,y,extra,cells\n'  # quoted comma, cells beyond the header
        "   \n"
        "a,2021-01-04,,,\n"
    ),
    "blank first line": "\npatient_id,date\na,2021\n",  # DictReader takes the blank line as the header
    "header only": "patient_id,date\n",
    "empty": "",
    "no patient column": "id,date\nz,2021\na,2021\n",
}


def _dict_reader_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """The reader as it was: csv.DictReader, every key and value stripped per row; numbered by the file line the row
    is on (its ``line_num`` once read: these rows hold no quoted line break), as messages name them."""
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        return [(reader.line_num, {k.strip(): (v or "").strip() for k, v in row.items() if k}) for row in reader]


@pytest.mark.parametrize("name", sorted(ODD_FILES))
def test_rows_are_read_as_dict_reader_reads_them(tmp_path: Path, name: str) -> None:
    path = tmp_path / "observations.csv"
    path.write_text(ODD_FILES[name], encoding="utf-8")
    expected = _dict_reader_rows(path)
    assert list(_rows(path)) == expected
    pids = [row.get("patient_id", "") for _, row in expected]
    assert _is_sorted(path) == (pids == sorted(pids))
