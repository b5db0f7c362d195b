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
