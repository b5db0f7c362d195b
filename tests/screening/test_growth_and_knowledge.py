"""WHO LMS z-scores against published WHO values, the HPO findings they imply, and the knowledge scores."""

from __future__ import annotations

import numpy as np
import pytest

from screening.growth import MICROCEPHALY, SHORT_STATURE, growth_findings, lms_z, load_growth_standards
from screening.knowledge import KnowledgeBase, annotation_frequency


@pytest.fixture(scope="module")
def standards():  # type: ignore[no-untyped-def]
    return load_growth_standards()


def test_z_scores_match_the_who_tables(standards) -> None:  # type: ignore[no-untyped-def]
    # WHO 2006 length-for-age, boys, 12 months: median 75.7 cm, -2 SD 71.0 cm.
    assert standards.z("lhfa", "M", 365.25, 75.7) == pytest.approx(0.0, abs=0.05)
    assert standards.z("lhfa", "M", 365.25, 71.0) == pytest.approx(-2.0, abs=0.06)
    # Head circumference-for-age, girls, birth: median 33.9 cm, -3 SD 30.3 cm.
    assert standards.z("hcfa", "F", 0, 33.9) == pytest.approx(0.0, abs=0.05)
    assert standards.z("hcfa", "F", 0, 30.3) == pytest.approx(-3.0, abs=0.06)
    # Beyond 5 years the CDC 2000 extension answers; beyond 7 there is no table.
    assert standards.z("lhfa", "F", 6 * 365.25, 115.0) is not None
    assert standards.z("wfa", "M", 8 * 365.25, 25.0) is None


def test_weight_beyond_three_sd_uses_the_who_restricted_rule() -> None:
    # With skewed weight (L != 1) WHO measures beyond +3 SD in units of the 2-3 SD gap.
    l_, m, s = -0.3521, 3.3464, 0.14602  # boys' weight at birth
    sd3 = m * (1 + l_ * s * 3) ** (1 / l_)
    sd2 = m * (1 + l_ * s * 2) ** (1 / l_)
    assert lms_z(sd3 + (sd3 - sd2), l_, m, s) == pytest.approx(4.0)


def test_growth_findings(standards) -> None:  # type: ignore[no-untyped-def]
    found, lowest, _ = growth_findings(standards, "M", [("lhfa", 365, 68.0), ("hcfa", 365, 40.0), ("wfa", 365, 9.6)])
    terms = {f.hpo for f in found}
    assert SHORT_STATURE in terms and MICROCEPHALY in terms
    assert all(f.age_days == 365 for f in found)
    assert lowest["lhfa"] < -2 and lowest["hcfa"] < -2
    # A child falling from the median to -2 SD in weight over 8 months is failing to thrive.
    falling, _, _ = growth_findings(standards, "F", [("wfa", 60, 5.1), ("wfa", 300, 6.4)])
    assert "HP:0001508" in {f.hpo for f in falling}


def test_a_growth_finding_must_persist(standards) -> None:  # type: ignore[no-untyped-def]
    """One head circumference below -2 SD that the next visit does not repeat is a measurement error or a
    dip, not microcephaly (it made one ordinary child in 18 microcephalic); the latest measurement, or two,
    name it."""
    dip = [("hcfa", 365, 40.0), ("hcfa", 540, 47.5)]
    found, lowest, _ = growth_findings(standards, "M", dip)
    assert MICROCEPHALY not in {f.hpo for f in found} and lowest["hcfa"] > -2
    latest, _, _ = growth_findings(standards, "M", [("hcfa", 200, 44.0), ("hcfa", 365, 40.0)])
    assert [f.age_days for f in latest if f.hpo == MICROCEPHALY] == [365]
    twice, lowest, _ = growth_findings(standards, "M", [("hcfa", 300, 39.5), ("hcfa", 365, 40.0), ("hcfa", 540, 47.5)])
    assert [f.age_days for f in twice if f.hpo == MICROCEPHALY] == [300] and lowest["hcfa"] < -2


def test_annotation_frequencies() -> None:
    assert annotation_frequency("HP:0040281") == pytest.approx(0.895)
    assert annotation_frequency("3/4") == 0.75
    assert annotation_frequency("12%") == 0.12
    assert annotation_frequency("") == 0.5


def test_scores_respect_ancestors_and_exclusions(kb: KnowledgeBase) -> None:
    kabuki = kb.disease_index["OMIM:147920"]  # Kabuki syndrome 1
    specific = kb.indices({"HP:0000175", "HP:0001631", "HP:0000316", "HP:0004322"})
    general = kb.indices({"HP:0000202", "HP:0001627", "HP:0000271"})  # oral cleft, abnormal heart, abnormal face
    specific_scores = kb.scores(specific)
    assert np.sum(specific_scores > specific_scores[kabuki]) < 30  # top 30 of 12,633 diseases
    general_scores = kb.scores(general)
    assert general_scores[kabuki] > np.median(general_scores)  # general findings are explained by specific annotations
    # Saying the child has normal hearing (excluded) changes nothing for Kabuki much, and 'no short stature'
    # lowers Kabuki's score, as short stature is frequent in it.
    with_excluded = kb.scores(specific, kb.indices({"HP:0004322"}))
    assert with_excluded[kabuki] < specific_scores[kabuki]
    matched = kb.matched_terms(specific, kabuki)
    assert "HP:0000175" in matched
    # Listed most specific first, so the page reads "Cleft palate" before "Abnormality of the face".
    both = kb.matched_terms(general + specific, kabuki)
    assert kb.information is not None
    information = [kb.information.information[kb.term_index[t]] for t in both]
    assert information == sorted(information, reverse=True) and set(kb.matched_terms(specific, kabuki)) < set(both)
    assert both.index("HP:0000175") < both.index("HP:0000202")  # cleft palate before oral cleft


def test_a_child_of_unknown_sex_keeps_the_growth_findings_both_charts_show(standards) -> None:  # type: ignore[no-untyped-def]
    """A record without the child's sex (or with a value no reader knows) had no growth finding at all: the z-scores
    need a chart. Read on both, a finding stays when the boys' and the girls' charts both show it, so it is one the
    child's own chart shows too, and never one that is not there."""
    short = [("lhfa", 365, 68.0), ("lhfa", 400, 68.5)]  # below -2 SD for boys (71.0 cm) and for girls (68.9 cm)
    boy, girl, unknown = (growth_findings(standards, sex, short) for sex in ("M", "F", "U"))
    assert SHORT_STATURE in {f.hpo for f in boy[0]} and SHORT_STATURE in {f.hpo for f in girl[0]}
    (kept,) = [f for f in unknown[0] if f.hpo == SHORT_STATURE]
    assert kept.z == max(f.z for f in boy[0] + girl[0] if f.hpo == SHORT_STATURE)  # the girls' z, nearer 0
    assert unknown[1]["lhfa"] == max(boy[1]["lhfa"], girl[1]["lhfa"])
    near_the_line = [("lhfa", 365, 70.5), ("lhfa", 400, 71.0)]  # short for a boy, not for a girl
    boy, girl, unknown = (growth_findings(standards, sex, near_the_line) for sex in ("M", "F", "U"))
    assert SHORT_STATURE in {f.hpo for f in boy[0]} and not girl[0] and not unknown[0]
    # whatever the measurements, a child of unknown sex has no finding that either chart lacks
    rng = np.random.default_rng(3)
    kept_in_all = 0
    for _ in range(300):
        series = [
            (str(ind), int(age), float(base * rng.normal(1.0, 0.1)))
            for ind, base in (("lhfa", 75.0), ("hcfa", 45.0), ("wfa", 9.5))
            for age in rng.integers(300, 430, 2)
        ]
        boy, girl, unknown = (growth_findings(standards, sex, series) for sex in ("M", "F", "U"))
        for finding in unknown[0]:
            assert finding in boy[0] or finding in girl[0]
            assert (finding.hpo, finding.indicator) in {(f.hpo, f.indicator) for f in boy[0]} & {
                (f.hpo, f.indicator) for f in girl[0]
            }
        kept_in_all += len(unknown[0])
    assert kept_in_all > 100  # the series reach beyond the lines often enough to test something


def test_a_growth_value_beyond_six_sd_is_listed_not_dropped(maps) -> None:  # type: ignore[no-untyped-def]
    """A weight in grams without its unit (3,200 "kg") lies far beyond WHO's 6 SD: it was left out of the growth
    reading without a word, and every weight of such an export with it. Now it is listed (the child incomplete)."""
    from datetime import date

    from datasets.emr_records import ChildRecord, Measurement
    from screening.findings import extract_findings

    for sex in ("F", "U"):
        record = ChildRecord("grams", date(2023, 1, 1), sex)  # type: ignore[arg-type]
        record.measurements += [Measurement("29463-7", 3200.0, "", date(2023, 1, 11)),
                                Measurement("29463-7", 4.2, "kg", date(2023, 2, 1))]
        child = extract_findings(record, maps, date(2023, 6, 1))
        (listed,) = child.unread
        assert listed.entry == "growth weight at day 10" and listed.reason.startswith("3200 kg lies +")
        assert "beyond the 6 SD of a plausible value" in listed.reason and "wfa" in child.growth_z
