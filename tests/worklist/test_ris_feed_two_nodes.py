"""Two serve nodes on one PostgreSQL: every priority change reaches the RIS once, and a study's older state never
follows its newer one (review 3, crash D4: a change committed out of id order had never been sent; two recompute
passes at once recorded the same change twice)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from medscreen.schema import migrate_all
from service.db import make_engine, make_session_factory, session_scope, utcnow
from service.lifecycle import SteeringRight
from service.model_registry import ServingRights
from service.outbox import OutboxMessage
from tests.worklist.conftest import add_result, make_study
from worklist.hl7_messages import Hl7Endpoint
from worklist.policy import PriorityPolicy
from worklist.recompute import recompute_worklist
from worklist.ris_feed import take_in_ris_messages
from worklist.tables import PriorityChange

ENDPOINT = Hl7Endpoint("MEDSCREEN", "HOSP", "RIS", "HOSP")
POLICY = PriorityPolicy(aging_cap=timedelta(hours=4))
VERSION = ("chest-xray-champion", "1")
GRANTED = ServingRights({VERSION: SteeringRight.raise_only}, champions={VERSION[0]: VERSION[1]})
REVOKED = ServingRights({VERSION: SteeringRight.shadow}, champions={VERSION[0]: VERSION[1]})


def _nodes(url: str) -> tuple[sessionmaker[Session], sessionmaker[Session]]:
    migrate_all(url)
    return make_session_factory(make_engine(url)), make_session_factory(make_engine(url))


def _raised_study(factory: sessionmaker[Session]) -> int:
    """Study X, raised by the champion (STAT), its OMI taken in."""
    take_in_ris_messages(factory, ENDPOINT)  # the RIS configured from the start
    with session_scope(factory) as session:
        study = make_study(session, arrived=utcnow() - timedelta(minutes=5))
        add_result(session, study, score=0.97, model_version=VERSION[1], steering="raise-only")
        study_id = study.id
    with session_scope(factory) as session:
        recompute_worklist(session, POLICY, serving=GRANTED)
    take_in_ris_messages(factory, ENDPOINT)
    return study_id


def _omis(factory: sessionmaker[Session]) -> list[str]:
    with session_scope(factory) as session:
        return list(session.scalars(select(OutboxMessage.key).where(OutboxMessage.key.like("MSPC%"))
                                    .order_by(OutboxMessage.id)))


def test_priority_change_committed_out_of_order_is_never_sent(postgres_database_url: str) -> None:
    node_a, node_b = _nodes(postgres_database_url)
    x = _raised_study(node_a)
    b = node_b()  # node B's pass, its rights read after the revocation: X lowered, not committed yet
    b.begin()
    (lowered,) = recompute_worklist(b, POLICY, serving=REVOKED)
    with session_scope(node_a) as session:  # another writer's change of study Y commits first, with a higher id
        y = make_study(session)
        session.flush()
        session.add(PriorityChange(study_id=y.id, study_instance_uid=y.study_instance_uid, at=utcnow(),
                                   from_tier=None, to_tier="unscored", to_due_at=utcnow(), reason="arrived"))
    take_in_ris_messages(node_a, ENDPOINT)  # the RIS feed takes Y's change and moves past it
    b.commit()
    b.close()
    take_in_ris_messages(node_a, ENDPOINT)
    assert lowered.study_id == x and f"MSPC{lowered.id}" in _omis(node_a)


def test_an_older_change_read_late_never_follows_a_newer_one_of_its_study(postgres_database_url: str) -> None:
    node_a, node_b = _nodes(postgres_database_url)
    x = _raised_study(node_a)
    with session_scope(node_a) as session:
        study_uid = session.scalar(text("SELECT study_instance_uid FROM studies WHERE id = :id"), {"id": x})
    late = node_b()  # a change of X in flight ...
    late.begin()
    older = PriorityChange(study_id=x, study_instance_uid=study_uid, at=utcnow(), from_tier="positive",
                           to_tier="unscored", to_due_at=utcnow(), reason="older")
    late.add(older)
    late.flush()
    with session_scope(node_a) as session:  # ... and a newer one of X, committed and queued before it
        newer = PriorityChange(study_id=x, study_instance_uid=study_uid, at=utcnow(), from_tier="unscored",
                               to_tier="positive", to_due_at=utcnow(), reason="newer")
        session.add(newer)
        session.flush()
        newer_id = newer.id
    take_in_ris_messages(node_a, ENDPOINT)
    older_id = older.id
    late.commit()
    late.close()
    take_in_ris_messages(node_a, ENDPOINT)
    omis = _omis(node_a)
    assert older_id < newer_id and f"MSPC{newer_id}" in omis and f"MSPC{older_id}" not in omis


def test_two_nodes_recompute_one_at_a_time(postgres_database_url: str) -> None:
    node_a, node_b = _nodes(postgres_database_url)
    x = _raised_study(node_a)
    b = node_b()  # both nodes read the revocation; B's pass runs first and has not committed
    b.begin()
    (lowered,) = recompute_worklist(b, POLICY, serving=REVOKED)
    recorded: list[list[PriorityChange]] = []

    def node_a_pass() -> None:
        with session_scope(node_a) as session:
            recorded.append(recompute_worklist(session, POLICY, serving=REVOKED))

    a_pass = threading.Thread(target=node_a_pass)
    a_pass.start()
    deadline = time.monotonic() + 60  # bounds a hang only
    with node_b() as watcher:  # A's pass waits on B's: poll until it does, then let B commit
        while not watcher.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")):
            assert time.monotonic() < deadline, "node A's pass never waited for node B's"
            time.sleep(0.05)
    b.commit()
    b.close()
    a_pass.join(timeout=30)
    with session_scope(node_a) as session:
        lowerings = session.scalars(select(PriorityChange.id).where(PriorityChange.study_id == x,
                                                                    PriorityChange.to_tier == "unscored")).all()
    assert recorded == [[]] and lowerings == [lowered.id]
