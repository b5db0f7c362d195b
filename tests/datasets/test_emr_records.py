"""The readers' fast constructor of measurements makes the same immutable named tuple as the class."""

from __future__ import annotations

import pickle
from datetime import date

import pytest

from datasets.emr_records import Measurement, measurement


def test_measurement_is_the_named_tuple_made_faster() -> None:
    args = ("8302-2", 96.5, "cm", date(2023, 5, 1))
    fast, plain = measurement(*args), Measurement(*args)
    assert type(fast) is Measurement and fast == plain and hash(fast) == hash(plain) and repr(fast) == repr(plain)
    assert (fast.loinc, fast.value, fast.unit, fast.date) == args and fast._asdict() == plain._asdict()
    assert pickle.loads(pickle.dumps(fast)) == plain  # as sent to Dask workers
    assert fast._replace(value=97.0) == Measurement("8302-2", 97.0, "cm", date(2023, 5, 1))
    with pytest.raises(AttributeError):
        fast.value = 1.0  # type: ignore[misc]
