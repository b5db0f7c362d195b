"""Near the operating point a score and its threshold print differently on the FHIR report, the worklist's priority
reason (which the RIS gets in ORC-16 and NTE) and the study timeline: at two or three decimals 0.67205 (negative) and
0.67240 (positive) against 0.672316 had both read "score 0.67, threshold 0.67" (review 3, honesty D9)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fastapi import FastAPI

from inference.fhir_results import facts_of, result_resources
from inference.tables import ScoreResult, Study
from service.db import session_scope, utcnow
from tests.worklist.conftest import add_result, make_study
from worklist.policy import ChampionCall, PriorityPolicy, StudyFacts, policy_from_settings, prioritise
from worklist.recompute import recompute_worklist
from worklist.study_view import study_timeline
from worklist.tables import WorklistEntry

THRESHOLD = 0.672316
NEAR = [(0.67205, "negative"), (0.67240, "positive")]


def _pairs(text: str) -> list[tuple[str, str]]:
    """Each (score, threshold) pair a text prints."""
    return re.findall(r"(?:probability|score) (\d\.\d+).*?(?:operating point|threshold) (\d\.\d+)", text)


@pytest.mark.parametrize(("score", "call"), NEAR)
def test_the_priority_reason_tells_score_and_threshold_apart(score: float, call: str) -> None:
    now = utcnow()
    champion = ChampionCall(call, score, THRESHOLD, "chest-xray", "1", steering="defer")  # type: ignore[arg-type]
    priority = prioritise(StudyFacts(now, "DX", state="scored", champion=champion), PriorityPolicy(), now)
    ((shown, at),) = _pairs(priority.reason)
    assert shown != at and (float(shown) > float(at)) == (call == "positive")


def test_fhir_and_the_timeline_tell_score_and_threshold_apart(app: FastAPI) -> None:
    factory = app.state.session_factory
    with session_scope(factory) as session:
        for score, _ in NEAR:
            study = make_study(session, arrived=utcnow() - timedelta(minutes=1))
            add_result(session, study, score=score, threshold=THRESHOLD)
        recompute_worklist(session, policy_from_settings(app.state.settings))
        for entry in session.query(WorklistEntry).all():
            result = session.get(ScoreResult, entry.score_result_id)
            study = session.get(Study, entry.study_id)
            assert result is not None and study is not None
            resources = result_resources(facts_of(result, study))
            report = resources[-1]
            (call_obs,) = [r for r in resources if str(r.id).endswith("-call")]
            timeline = " ".join(item.text for item in study_timeline(session, entry) if item.kind == "score")
            for text in (report.conclusion, timeline, entry.priority_reason):
                ((shown, at),) = _pairs(text)
                assert shown != at and (float(shown) > float(at)) == (result.call == "positive"), text
                assert at in call_obs.valueCodeableConcept.text
