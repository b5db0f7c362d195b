"""Two nodes on one database each run the outbox dispatcher: the peer gets each message once, in order.

Both had read the channel's oldest pending message without a lock and sent it: 46 HL7 messages arrived 56 times
at a site's RIS (review pg D2). A channel's lease now lets one dispatcher send it at a time.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from medscreen.schema import migrate_all
from service.db import make_engine, make_session_factory, session_scope, utcnow
from service.outbox import OutboxLease, Outgoing, RetryPolicy, add_message, dispatch

CHANNEL = "hl7"
POLICY = RetryPolicy(retry_s=0, max_attempts=3)


class SlowPeer:
    """A RIS that takes a moment to ACK (as a real one does over the network) and records what arrives."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, message: Outgoing) -> str:
        time.sleep(0.01)
        with self.lock:
            self.received.append(message.key)
        return "AA"


def test_two_nodes_dispatching_one_channel_send_each_message_once_in_order(database_url: str) -> None:
    migrate_all(database_url)
    nodes = [make_engine(database_url, serialise_writes=True) for _ in range(2)]
    factories = [make_session_factory(engine) for engine in nodes]
    keys = [f"MSG{n:03d}" for n in range(30)]
    with session_scope(factories[0]) as session:
        for key in keys:
            add_message(session, CHANNEL, key, key, f"payload {key}", "x-application/hl7-v2+er7", utcnow())
    peer = SlowPeer()
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def node(index: int) -> None:
        try:
            start.wait()
            deadline = time.monotonic() + 60
            while len(peer.received) < len(keys) and time.monotonic() < deadline:
                dispatch(factories[index], CHANNEL, peer, POLICY, holder=f"node-{index}")
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=node, args=(index,)) for index in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)
        assert not errors, errors
        assert peer.received == keys
    finally:
        for engine in nodes:
            engine.dispose()


def test_a_dead_nodes_lease_holds_the_channel_until_it_expires(database_url: str) -> None:
    migrate_all(database_url)
    engine = make_engine(database_url, serialise_writes=True)
    factory = make_session_factory(engine)
    try:
        with session_scope(factory) as session:
            add_message(session, CHANNEL, "MSG1", "MSG1", "payload", "x-application/hl7-v2+er7", utcnow())
            # A node that died while sending: its lease is left behind.
            session.add(OutboxLease(channel=CHANNEL, holder="dead-node", expires_at=utcnow() + timedelta(seconds=30)))
        peer = SlowPeer()
        assert dispatch(factory, CHANNEL, peer, POLICY, holder="live-node") == 0
        assert peer.received == []
        later = utcnow() + timedelta(seconds=31)
        assert dispatch(factory, CHANNEL, peer, POLICY, holder="live-node", now=lambda: later) == 1
        assert peer.received == ["MSG1"]
    finally:
        engine.dispose()


def test_a_backward_clock_step_holds_neither_the_channel_nor_its_messages(database_url: str) -> None:
    """Review 4 (infra D10): after a clock that ran an hour fast was stepped back, the lease released at the fast time
    refused every later pass (each has a holder of its own), and a message queued before the step was not due for
    an hour."""
    migrate_all(database_url)
    engine = make_engine(database_url, serialise_writes=True)
    factory = make_session_factory(engine)
    policy = RetryPolicy(retry_s=60, max_attempts=3)
    fast = utcnow() + timedelta(hours=1)
    try:
        with session_scope(factory) as session:
            add_message(session, CHANNEL, "MSG1", "MSG1", "payload", "x-application/hl7-v2+er7", fast)
        peer = SlowPeer()
        assert dispatch(factory, CHANNEL, peer, policy, now=lambda: fast) == 1  # its lease released at the fast time
        # The clock is stepped back: a message queued now, then one queued just before the step.
        with session_scope(factory) as session:
            add_message(session, CHANNEL, "MSG2", "MSG2", "payload", "x-application/hl7-v2+er7", utcnow())
        assert dispatch(factory, CHANNEL, peer, policy) == 1
        with session_scope(factory) as session:
            add_message(session, CHANNEL, "MSG3", "MSG3", "payload", "x-application/hl7-v2+er7", fast)
        assert dispatch(factory, CHANNEL, peer, policy) == 1
        assert peer.received == ["MSG1", "MSG2", "MSG3"]
    finally:
        engine.dispose()
