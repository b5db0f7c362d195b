"""The values of a disease's fit to a child, not only the rank they give (mutation review 3: M1, M2, M3, M7): a disease
of the other sex is excluded for a girl as for a boy, an adult-onset-only disease weighs log 0.01, and one first seen
more than a year after the child's age log 0.2."""

from __future__ import annotations

import math

import numpy as np
import pytest

from screening.disease_fit import ADULT_DAYS, EXCLUDED, DiseaseFit
from screening.knowledge import KnowledgeBase
from tests.screening.test_candidates import MALE_INFERTILITY

JUVENILE = int(5 * 365.25)
# Diseases: male-only, female-only, juvenile onset (5 y), adult onset only, congenital, no onset annotated.
FIT = DiseaseFit(
    earliest_onset_days=np.array([-1, -1, JUVENILE, ADULT_DAYS, 0, -1]),
    sex=np.array(["M", "F", "", "", "", ""]),
)
LATE, ADULT = math.log(0.2), math.log(0.01)


@pytest.mark.parametrize(
    "sex, age_days, expected",
    [
        ("F", None, [EXCLUDED, 0, 0, 0, 0, 0]),
        ("M", None, [0, EXCLUDED, 0, 0, 0, 0]),
        ("", None, [0, 0, 0, 0, 0, 0]),
        ("F", 365, [EXCLUDED, 0, LATE, ADULT, 0, 0]),  # one year old: juvenile onset 4 years later
        ("M", 6 * 365, [0, EXCLUDED, 0, ADULT, 0, 0]),  # six: juvenile onset already past
        ("F", ADULT_DAYS, [EXCLUDED, 0, 0, 0, 0, 0]),  # an adult: adult onset fits
    ],
)
def test_the_fit_of_each_kind_of_disease(sex: str, age_days: int | None, expected: list[float]) -> None:
    assert FIT.adjustment(sex, age_days) == pytest.approx(expected)


def test_a_male_only_disease_is_excluded_for_a_girl_in_the_shipped_knowledge(kb: KnowledgeBase) -> None:
    assert kb.fit is not None
    index = kb.disease_index[MALE_INFERTILITY]
    assert kb.fit.adjustment("F", None)[index] == EXCLUDED and kb.fit.adjustment("M", None)[index] == 0
