"""Associations as real senders run them against the real receiver: the contexts they propose, the rejections they
meet, and a send cut off half-way (dcmtk's dcmsend and echoscu, pynetdicom as a sender on a slow link)."""

from __future__ import annotations

import logging
import struct
import subprocess
import threading
import time
from pathlib import Path
from socket import SO_LINGER, SOL_SOCKET

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy import select

from benchmarks.dcmtk import dcmtk
from inference.ingest import InstanceIngestor
from inference.receive.dimse import AssociationLimits, start_dimse_server
from inference.tables import Instance, NotScoredInstance, QuarantinedItem
from service.db import make_session_factory
from service.settings import Settings
from tests.inference.conftest import INFERENCE_FIXTURES, requires_dcmtk
from tests.peers import wait_for

pytestmark = [pytest.mark.integration, requires_dcmtk]

# Siemens CSA Non-Image Storage: private, sent with nearly every Siemens CT and MR study.
SIEMENS_CSA_NON_IMAGE = "1.3.12.2.1107.5.9.1"
# Label Map Segmentation Storage (2024): public, newer than pynetdicom's list of storage contexts.
LABEL_MAP_SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.7"


def dcmsend(port: int, *files: Path) -> str:
    """Send with dcmtk's dcmsend, which proposes each file's own SOP class and transfer syntax."""
    result = subprocess.run(
        [dcmtk("dcmsend"), "-v", "-aet", "MODALITY", "-aec", "MEDSCREEN", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.stdout + result.stderr


def _as_class(source: Path, sop_class_uid: str, target: Path) -> Path:
    ds = dcmread(source)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(target, enforce_file_format=True)
    return target


def test_a_private_or_newer_storage_class_is_acknowledged_and_the_study_goes_on(
    dimse_server: ThreadedAssociationServer, ingestor: InstanceIngestor, sqlite_settings: Settings, tmp_path: Path
) -> None:
    # The receiver had rejected both contexts: the sender failed those instances before sending them (dcmtk's
    # storescu then aborts the association, Orthanc's store job stops), so the rest of the study never came.
    ct = INFERENCE_FIXTURES / "ct" / "lidc-0002-0.dcm"
    private = _as_class(ct, SIEMENS_CSA_NON_IMAGE, tmp_path / "csa.dcm")
    label_map = _as_class(ct, LABEL_MAP_SEGMENTATION, tmp_path / "labelmap.dcm")
    output = dcmsend(sqlite_settings.dicom_port, private, label_map, ct)
    assert "with status SUCCESS  : 3" in output, output

    with make_session_factory(ingestor.engine)() as session:
        stored = list(session.scalars(select(Instance.sop_class_uid)))
        left_aside = sorted(session.scalars(select(NotScoredInstance.kind)))
        quarantined = list(session.scalars(select(QuarantinedItem.kind)))
    assert stored == ["1.2.840.10008.5.1.4.1.1.2"]
    assert left_aside == ["ignored", "ignored"] and quarantined == []


def test_a_rejected_association_is_logged_with_the_reason_sent(
    ingestor: InstanceIngestor, sqlite_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # Every rejection had been logged "calling AE not allowed", the association limit's too: an operator looking
    # for why a PACS cannot send went to the AE list instead of MEDSCREEN_DICOM_MAX_ASSOCIATIONS.
    limits = AssociationLimits(total=1, per_peer=8, idle_timeout_s=30)
    server = start_dimse_server(
        ingestor, "127.0.0.1", sqlite_settings.dicom_port, "MEDSCREEN", ["ORTHANC"], 262144, limits
    )
    holder = AE(ae_title="ORTHANC")
    holder.add_requested_context("1.2.840.10008.1.1")
    try:
        with caplog.at_level(logging.WARNING, logger="inference.receive.dimse"):
            held = holder.associate("127.0.0.1", sqlite_settings.dicom_port, ae_title="MEDSCREEN")
            assert held.is_established
            _echo_rejected(sqlite_settings.dicom_port, "ORTHANC")  # over the limit
            held.release()
            wait_for(lambda: not server.active_associations, 30, "the held association to end")
            _echo_rejected(sqlite_settings.dicom_port, "STRANGER")  # not in the allowed list
    finally:
        server.shutdown()
    rejections = [record.getMessage() for record in caplog.records if "association rejected" in record.getMessage()]
    assert len(rejections) == 2, rejections
    assert "ORTHANC" in rejections[0] and "Local limit exceeded" in rejections[0], rejections
    assert "STRANGER" in rejections[1] and "Calling AE title not recognised" in rejections[1], rejections


def _echo_rejected(port: int, calling: str) -> None:
    echo = subprocess.run(
        [dcmtk("echoscu"), "-aet", calling, "-aec", "MEDSCREEN", "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Association Rejected" in echo.stdout + echo.stderr, echo


def _large_ct(target: Path) -> Path:
    ds = dcmread(INFERENCE_FIXTURES / "ct" / "lidc-0002-1.dcm")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows = ds.Columns = 4096
    ds.PixelData = np.random.default_rng(0).integers(0, 1000, (4096, 4096), dtype=np.uint16).tobytes()
    ds.save_as(target, enforce_file_format=True)
    return target


@pytest.mark.parametrize("cut", ["a-abort", "tcp-reset"])
def test_an_instance_cut_off_mid_transfer_leaves_nothing_and_loses_nothing_acknowledged(
    dimse_server: ThreadedAssociationServer,
    ingestor: InstanceIngestor,
    sqlite_settings: Settings,
    tmp_path: Path,
    cut: str,
) -> None:
    # The sender aborts (or its connection is reset) while the third instance streams in. The two it had been
    # answered for stay stored; the partial file of the third had stayed in spool/incoming for an hour.
    acknowledged = [dcmread(INFERENCE_FIXTURES / "ct" / name) for name in ("lidc-0002-0.dcm", "lidc-0002-2.dcm")]
    large = dcmread(_large_ct(tmp_path / "large.dcm"))
    ae = AE(ae_title="PACS")
    ae.add_requested_context(large.SOPClassUID, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", sqlite_settings.dicom_port, ae_title="MEDSCREEN")
    assert assoc.is_established
    assert [int(assoc.send_c_store(ds).Status) for ds in acknowledged] == [0, 0]
    # A slow link: each PDU of the large instance waits, so that it is cut off half-way, between two PDUs: by an
    # A-ABORT in place of the next one, or by closing the connection with a reset.
    socket = assoc.dul.socket
    assert socket is not None and socket.socket is not None
    raw, send, cut_now, cut_done = socket.socket, socket.send, threading.Event(), threading.Event()

    def slow_send(data: bytes) -> None:
        if not cut_now.is_set():
            time.sleep(0.02)
            send(data)
            return
        if cut_done.is_set():
            return  # nothing more goes out
        cut_done.set()
        if cut == "a-abort":
            abort = A_ABORT_RQ()
            abort.source, abort.reason_diagnostic = 0x00, 0x00  # service user, no reason
            raw.sendall(abort.encode())
        else:
            raw.setsockopt(SOL_SOCKET, SO_LINGER, struct.pack("ii", 1, 0))
            raw.close()

    socket.send = slow_send  # type: ignore[method-assign]
    assoc.dimse_timeout = 5  # the cut-off send is never answered: its thread gives up soon (nothing waits on it)
    sending = threading.Thread(target=lambda: assoc.send_c_store(large), daemon=True)
    sending.start()
    incoming = ingestor.spool.incoming
    wait_for(lambda: any(path.stat().st_size > 1_000_000 for path in incoming.iterdir()), 60, "the large instance")
    cut_now.set()
    wait_for(lambda: not any(incoming.iterdir()), 30, "the partial file to be removed")
    with make_session_factory(ingestor.engine)() as session:
        assert len(list(session.scalars(select(Instance.id)))) == len(acknowledged)


VIDEO_ENDOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.1.1"
MPEG4_HP41 = "1.2.840.10008.1.2.4.102"


def _video(source: Path, sop_class: str, target: Path) -> Path:
    """A 5-minute 1080p video as an endoscope sends it: MPEG-4 only, 9,000 frames (56 GB once decoded)."""
    ds = dcmread(source)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = MPEG4_HP41
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.NumberOfFrames = 1080, 1920, 3, 9000
    ds.PhotometricInterpretation, ds.PlanarConfiguration = "YBR_PARTIAL_420", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([b"\x00\x00\x00\x01" + bytes(4092)])
    ds["PixelData"].VR = "OB"
    ds.save_as(target, enforce_file_format=True)
    return target


def test_a_video_of_a_class_not_scored_is_acknowledged_and_a_scored_class_in_video_is_refused_per_context(
    dimse_server: ThreadedAssociationServer, ingestor: InstanceIngestor, sqlite_settings: Settings, tmp_path: Path
) -> None:
    # The endoscope proposes its video in MPEG-4 alone. The context had been rejected (the sender fails the instance
    # unsent and aborts the rest), and past that its 56 GB decoded size would have been refused 0xA700.
    ct = INFERENCE_FIXTURES / "ct" / "lidc-0002-0.dcm"
    video = _video(ct, VIDEO_ENDOSCOPIC, tmp_path / "video.dcm")
    output = dcmsend(sqlite_settings.dicom_port, video, ct)
    assert "with status SUCCESS  : 2" in output, output
    with make_session_factory(ingestor.engine)() as session:
        assert list(session.scalars(select(NotScoredInstance.sop_class_uid))) == [VIDEO_ENDOSCOPIC]
        assert list(session.scalars(select(QuarantinedItem.kind))) == []
    assert not any(ingestor.spool.incoming.iterdir())

    # A CT in MPEG-4 could not be scored: its context is refused, as before.
    ct_video = _video(ct, "1.2.840.10008.5.1.4.1.1.2", tmp_path / "ct-video.dcm")
    refused = dcmsend(sqlite_settings.dicom_port, ct_video)
    assert "with status SUCCESS" not in refused, refused
