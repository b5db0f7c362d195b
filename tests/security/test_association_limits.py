"""One peer cannot lock the others out: per-peer association limits and idle timeouts (issue 14, Medium)."""

from __future__ import annotations

import resource
import socket
import struct
import time

from pydicom.uid import CTImageStorage
from pynetdicom import AE

from inference.ingest import InstanceIngestor
from inference.receive.dimse import AssociationLimits, start_dimse_server
from service.settings import Settings
from tests.peers import wait_for

VERIFICATION = "1.2.840.10008.1.1"
MB = 1024 * 1024
# Bounds that only end a test whose association or connection is never answered or never ended (the faults these
# tests catch); a passing test waits a fraction of a second, or the idle timeout. A loaded CI machine (three test
# processes on two cores) can take seconds to answer, so they are generous.
HANG_S = 30
# The test peer's own timeouts are longer than any wait: an association must be ended by the receiver, never by the
# peer giving up (with a 5 s peer timeout, an idle association "was dropped" after 5 s whatever the receiver did).
PEER_TIMEOUT_S = 2 * HANG_S


def _associate(port: int, source: str):
    ae = AE(ae_title="GREEDY")
    ae.acse_timeout = ae.network_timeout = PEER_TIMEOUT_S
    ae.add_requested_context(VERIFICATION)
    ae.add_requested_context(CTImageStorage)
    return ae.associate("127.0.0.1", port, ae_title="MEDSCREEN", bind_address=(source, 0))


def test_a_peer_holding_its_limit_of_idle_associations_does_not_lock_out_another(
    ingestor: InstanceIngestor, sqlite_settings: Settings
) -> None:
    limits = AssociationLimits(total=32, per_peer=3, idle_timeout_s=30)
    server = start_dimse_server(ingestor, "127.0.0.1", sqlite_settings.dicom_port, "MEDSCREEN", [], 262144, limits)
    held = []
    try:
        for _ in range(3):
            assoc = _associate(sqlite_settings.dicom_port, "127.0.0.1")
            assert assoc.is_established
            held.append(assoc)
        greedy = _associate(sqlite_settings.dicom_port, "127.0.0.1")
        assert not greedy.is_established, "a fourth association from the same peer must be refused"
        other = _associate(sqlite_settings.dicom_port, "127.0.0.2")
        assert other.is_established, "another sender must still get in"
        assert other.send_c_echo().Status == 0x0000
        other.release()
    finally:
        for assoc in held:
            assoc.release()
        server.shutdown()


def test_an_idle_association_is_dropped_after_the_idle_timeout(
    ingestor: InstanceIngestor, sqlite_settings: Settings
) -> None:
    limits = AssociationLimits(total=32, per_peer=8, idle_timeout_s=1.5)
    server = start_dimse_server(ingestor, "127.0.0.1", sqlite_settings.dicom_port, "MEDSCREEN", [], 262144, limits)
    try:
        assoc = _associate(sqlite_settings.dicom_port, "127.0.0.1")
        assert assoc.is_established
        started = time.monotonic()
        wait_for(lambda: not assoc.is_alive(), HANG_S, "the idle association to be dropped")
        assert time.monotonic() - started < HANG_S  # the receiver's 1.5 s, not the peer's PEER_TIMEOUT_S
        assert assoc.is_aborted or assoc.is_released
    finally:
        server.shutdown()


def _read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """What the receiver sends until it closes the connection (or ``timeout`` passes)."""
    sock.settimeout(timeout)
    received = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                return received
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return received


def test_a_pdu_declaring_gigabytes_is_aborted_from_its_header(
    ingestor: InstanceIngestor, sqlite_settings: Settings
) -> None:
    # D1 (security review): pynetdicom buffered a PDU of any declared length before any check; 1.7 GB of one
    # never-ending A-ASSOCIATE-RQ took a receiver to 2.45 GB.
    server = start_dimse_server(ingestor, "127.0.0.1", sqlite_settings.dicom_port, "MEDSCREEN", [], 262144)
    try:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        with socket.create_connection(("127.0.0.1", sqlite_settings.dicom_port), timeout=HANG_S) as bomb:
            bomb.sendall(b"\x01\x00" + struct.pack(">I", 0xFFFFFFF0) + b"\x00" * 65536)
            started = time.monotonic()
            answer = _read_until_closed(bomb, HANG_S)
            # Waiting for the rest of 4 GiB would run to HANG_S; closing from the header takes a fraction of that.
            assert time.monotonic() - started < HANG_S - 5, "the receiver must close the connection, not wait for 4 GiB"
        assert answer[:1] == b"\x07", f"an A-ABORT PDU is expected, got {answer[:10]!r}"
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        assert grown < 50 * MB, f"the receiver grew by {grown / MB:.0f} MB"
        other = _associate(sqlite_settings.dicom_port, "127.0.0.1")
        assert other.is_established and other.send_c_echo().Status == 0x0000
        other.release()
    finally:
        server.shutdown()


def test_a_p_data_pdu_over_the_offered_maximum_aborts_the_association(
    ingestor: InstanceIngestor, sqlite_settings: Settings
) -> None:
    server = start_dimse_server(ingestor, "127.0.0.1", sqlite_settings.dicom_port, "MEDSCREEN", [], 262144)
    try:
        assoc = _associate(sqlite_settings.dicom_port, "127.0.0.1")
        assert assoc.is_established
        raw = assoc.dul.socket.socket
        # One P-DATA-TF declaring 1 GiB, of which only 64 kB come: the header alone must end the association.
        raw.sendall(b"\x04\x00" + struct.pack(">I", 1 << 30) + b"\x00" * 65536)
        wait_for(lambda: not assoc.is_alive(), HANG_S, "the association to be aborted")
        assert assoc.is_aborted
    finally:
        server.shutdown()


def test_a_message_held_in_memory_past_its_bound_aborts_the_association(
    ingestor: InstanceIngestor, sqlite_settings: Settings
) -> None:
    # PDUs within the maximum, but one never-ending data set that is no C-STORE's (pynetdicom keeps those in
    # memory): past IN_MEMORY_DATA_SET_BYTES the association ends.
    server = start_dimse_server(ingestor, "127.0.0.1", sqlite_settings.dicom_port, "MEDSCREEN", [], 262144)
    try:
        assoc = _associate(sqlite_settings.dicom_port, "127.0.0.1")
        assert assoc.is_established
        context_id = assoc.accepted_contexts[0].context_id
        raw = assoc.dul.socket.socket
        fragment = b"\x00" * (128 * 1024)
        pdv = struct.pack(">IBB", len(fragment) + 2, context_id, 0x00) + fragment  # data set, not the last fragment
        pdu = b"\x04\x00" + struct.pack(">I", len(pdv)) + pdv
        for _ in range(4 * MB // len(fragment)):
            try:
                raw.sendall(pdu)
            except OSError:
                break
        wait_for(lambda: not assoc.is_alive(), HANG_S, "the association to be aborted")
        assert assoc.is_aborted
    finally:
        server.shutdown()
