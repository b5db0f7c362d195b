"""One peer cannot lock the others out: per-peer association limits and idle timeouts (issue 14, Medium)."""

from __future__ import annotations

import time

from pydicom.uid import CTImageStorage
from pynetdicom import AE

from inference.ingest import InstanceIngestor
from inference.receive.dimse import AssociationLimits, start_dimse_server
from service.settings import Settings
from tests.peers import wait_for

VERIFICATION = "1.2.840.10008.1.1"


def _associate(port: int, source: str):
    ae = AE(ae_title="GREEDY")
    ae.acse_timeout = ae.network_timeout = 5
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
        wait_for(lambda: not assoc.is_alive(), 15, "the idle association to be dropped")
        assert time.monotonic() - started < 10
        assert assoc.is_aborted or assoc.is_released
    finally:
        server.shutdown()
