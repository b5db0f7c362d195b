"""The readers' fast constructor of measurements makes the same frozen object as the dataclass."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import date

import pytest

from datasets.emr_records import Measurement, measurement


def test_measurement_is_the_dataclass_made_faster() -> None:
    args = ("8302-2", 96.5, "cm", date(2023, 5, 1))
    fast, plain = measurement(*args), Measurement(*args)
    assert type(fast) is Measurement and fast == plain and hash(fast) == hash(plain) and repr(fast) == repr(plain)
    assert dataclasses.astuple(fast) == args and dataclasses.asdict(fast) == dataclasses.asdict(plain)
    assert pickle.loads(pickle.dumps(fast)) == plain  # as sent to Dask workers
    assert dataclasses.replace(fast, value=97.0) == Measurement("8302-2", 97.0, "cm", date(2023, 5, 1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.value = 1.0  # type: ignore[misc]
