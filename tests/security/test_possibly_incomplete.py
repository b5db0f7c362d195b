"""A study completed by silence says it may be incomplete, unless the PACS count confirms it (issue 14, Low)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from inference.complete import CompletenessMonitor
from inference.ingest import InstanceIngestor
from inference.route import load_rules
from inference.tables import Study, StudyEvent
from service.db import make_engine, make_session_factory
from tests.inference.conftest import INFERENCE_FIXTURES


class _Pacs:
    def __init__(self, count: int) -> None:
        self.instances = count

    def count(self, study_uid: str) -> int | None:
        return self.instances


def _complete(ingestor: InstanceIngestor, counter) -> dict:
    copy = ingestor.spool.new_incoming_path()
    copy.write_bytes((INFERENCE_FIXTURES / "ct" / "lidc-0002-0.dcm").read_bytes())
    ingestor.accept_file(copy, source="dimse")
    factory = make_session_factory(make_engine(ingestor.settings.resolved_database_url, serialise_writes=True))
    monitor = CompletenessMonitor(ingestor.settings, factory, load_rules(), counter)
    with factory() as session:
        last = session.scalars(select(Study)).one().last_received_at
    assert monitor.complete_quiet_studies(now=last + timedelta(seconds=ingestor.settings.quiet_period_s + 1))
    with factory() as session:
        return session.scalars(select(StudyEvent).where(StudyEvent.kind == "complete")).one().detail


def test_without_a_pacs_count_a_quiet_completion_says_possibly_incomplete(ingestor: InstanceIngestor) -> None:
    assert "no PACS count" in _complete(ingestor, None)["possibly_incomplete"]


def test_a_pacs_holding_more_instances_is_named(ingestor: InstanceIngestor) -> None:
    assert _complete(ingestor, _Pacs(100))["possibly_incomplete"] == "the PACS holds 100 instances of this study; 1 arrived"


def test_a_pacs_count_that_matches_leaves_no_doubt(ingestor: InstanceIngestor) -> None:
    assert "possibly_incomplete" not in _complete(ingestor, _Pacs(1))
