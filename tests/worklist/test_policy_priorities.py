"""Every urgent order priority, and a negative whose version's right is missing or unknown keeps its arrival place
(mutation review 3: P4, P5, P9). Pure functions: the policy, and the facts read from a worklist entry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worklist.policy import ChampionCall, PriorityPolicy, StudyFacts, prioritise
from worklist.recompute import entry_facts
from worklist.tables import WorklistEntry

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
POLICY = PriorityPolicy(aging_cap=timedelta(minutes=60), urgent_lead=timedelta(hours=2), stat_lead=timedelta(hours=24))
LIFT = POLICY.lift  # 60 min
NOW = T0 + timedelta(minutes=5)


@pytest.mark.parametrize(
    "order, tier, lead",
    [
        ("STAT", "stat", timedelta(hours=24)), ("stat", "stat", timedelta(hours=24)),
        ("HIGH", "urgent", timedelta(hours=2)), ("URGENT", "urgent", timedelta(hours=2)),
        ("ASAP", "urgent", timedelta(hours=2)), ("asap", "urgent", timedelta(hours=2)),
        (" Urgent ", "urgent", timedelta(hours=2)),
        ("ROUTINE", "unscored", None), ("MEDIUM", "unscored", None), ("LOW", "unscored", None), ("", "unscored", None),
    ],
)
def test_each_order_priority_gets_its_tier_and_lead(order: str, tier: str, lead: timedelta | None) -> None:
    priority = prioritise(StudyFacts(arrived_at=T0, modality="CR", order_priority=order), POLICY, NOW)
    assert priority.tier == tier
    assert priority.due_at == (T0 if lead is None else T0 - lead - LIFT)


def _negative(steering: str) -> StudyFacts:
    champion = ChampionCall("negative", 0.1, 0.5, "chest-xray", "3", steering=steering)
    return StudyFacts(arrived_at=T0, modality="CR", state="scored", champion=champion)


@pytest.mark.parametrize("steering", ["raise-only", "typo", "", "DEFER"])
def test_a_negative_from_a_version_without_an_earned_defer_keeps_its_arrival_place(steering: str) -> None:
    priority = prioritise(_negative(steering), POLICY, NOW)
    assert (priority.tier, priority.due_at) == ("unscored", T0)
    assert prioritise(_negative("defer"), POLICY, NOW).due_at == T0 + POLICY.aging_cap  # the one that defers


def _entry(steering: str | None) -> WorklistEntry:
    return WorklistEntry(
        study_instance_uid="1.2.3", arrived_at=T0, modality="CR", order_priority="", state="scored", call="negative",
        score=0.1, threshold=0.5, model_name="chest-xray", model_version="3", steering=steering,
    )


def test_an_entry_scored_before_rights_were_recorded_is_read_as_raise_only() -> None:
    """The steering column is nullable (migration 0002): an entry scored before it has NULL, never `defer`."""
    facts = entry_facts(_entry(None))
    assert facts.champion is not None and facts.champion.steering == "raise-only"
    assert (prioritise(facts, POLICY, NOW).tier, prioritise(facts, POLICY, NOW).due_at) == ("unscored", T0)
    deferred = prioritise(entry_facts(_entry("defer")), POLICY, NOW)
    assert (deferred.tier, deferred.due_at) == ("negative", T0 + POLICY.aging_cap)
