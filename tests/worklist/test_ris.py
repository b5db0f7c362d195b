"""The RIS push hook: priority changes offered in order, none lost while the RIS refuses them."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import FastAPI

from service.db import session_scope
from tests.worklist.conftest import add_result, make_study
from worklist.policy import policy_from_settings
from worklist.recompute import recompute_worklist
from worklist.ris import FHIR_TASK_PRIORITY, PriorityChanged, deliver_priority_changes


@dataclass
class FlakyRis:
    """A RIS that is down for its first ``refusals`` messages, then accepts."""

    refusals: int
    name: str = "test-ris"
    received: list[PriorityChanged] = field(default_factory=list)

    def priority_changed(self, change: PriorityChanged) -> None:
        if self.refusals > 0:
            self.refusals -= 1
            raise ConnectionRefusedError("RIS down")
        self.received.append(change)


def test_changes_are_delivered_in_order_after_an_outage(app: FastAPI) -> None:
    factory = app.state.session_factory
    with session_scope(factory) as session:
        for score in (0.9, 0.1, 0.7):
            add_result(session, make_study(session), score=score)
        recompute_worklist(session, policy_from_settings(app.state.settings))

    ris = FlakyRis(refusals=1)
    with session_scope(factory) as session:
        assert deliver_priority_changes(session, ris) == 0  # refused: the cursor stays put
    with session_scope(factory) as session:
        assert deliver_priority_changes(session, ris) == 3
    with session_scope(factory) as session:
        assert deliver_priority_changes(session, ris) == 0  # nothing new, nothing sent twice
    assert [c.to_tier for c in ris.received] == ["positive", "negative", "positive"]
    assert [c.change_id for c in ris.received] == sorted(c.change_id for c in ris.received)
    assert all(c.accession_number.startswith("ACC") and c.reason for c in ris.received)
    assert {FHIR_TASK_PRIORITY[c.to_tier] for c in ris.received} == {"asap", "routine"}


def test_a_study_settling_in_its_place_is_recorded_but_not_offered_to_the_ris(app: FastAPI) -> None:
    # A raise-only negative stays `unscored`; when its aging cap runs out its due time changes (it settles
    # ahead of later positives) and the change is recorded, but the RIS's priority for it does not change.
    from datetime import timedelta

    from service.db import utcnow
    from worklist.tables import PriorityChange

    factory = app.state.session_factory
    policy = policy_from_settings(app.state.settings)
    with session_scope(factory) as session:
        add_result(session, make_study(session), score=0.1, steering="raise-only")
        recompute_worklist(session, policy)
    ris = FlakyRis(refusals=0)
    with session_scope(factory) as session:
        assert deliver_priority_changes(session, ris) == 1 and ris.received[0].to_tier == "unscored"
    with session_scope(factory) as session:
        later = utcnow() + policy.aging_cap + timedelta(minutes=1)
        settled = recompute_worklist(session, policy, later)
        assert [(c.from_tier, c.to_tier) for c in settled] == [("unscored", "unscored")]
        assert "settled in its arrival place" in settled[0].reason
    with session_scope(factory) as session:
        assert session.query(PriorityChange).count() == 2
        assert deliver_priority_changes(session, ris) == 0
