"""A PACS's refusal of a write-back (or of the completeness count query) is recorded with its reason: real peers
(dcmtk's storescp, Orthanc) refusing.

The reason ends on the outgoing row and the study's write-back-retry/-dead line. It had read "association with
PACS@host:port failed" for a PACS that rejected medscreen's calling AE title (or was called by the wrong AE title),
and "it does not store that SOP class" for a class the PACS stores in other transfer syntaxes only.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from benchmarks.dcmtk import dcmtk
from inference.errors import WritebackFailed
from inference.pacs_count import CFindInstanceCounter
from inference.writeback import COMPREHENSIVE_3D_SR_STORAGE, SECONDARY_CAPTURE_IMAGE_STORAGE, send_c_store
from tests.inference.conftest import INFERENCE_FIXTURES, requires_dcmtk
from tests.peers import Orthanc, start_orthanc, stop_orthanc, wait_for
from tests.ports import free_port

pytestmark = [pytest.mark.integration]

# A PACS that stores Secondary Capture in JPEG lossless only, and Comprehensive 3D SR uncompressed.
_STORESCP_CONFIG = """\
[[TransferSyntaxes]]
[Uncompressed]
TransferSyntax1 = LittleEndianImplicit
[JpegOnly]
TransferSyntax1 = JPEGLossless:Non-hierarchical-1stOrderPrediction

[[PresentationContexts]]
[JpegImages]
PresentationContext1 = SecondaryCaptureImageStorage\\JpegOnly
PresentationContext2 = Comprehensive3DSRStorage\\Uncompressed

[[Profiles]]
[JpegImages]
PresentationContexts = JpegImages
"""


def _document(sop_class: str) -> Dataset:
    # Refused before any data set is sent: only the SOP class matters here.
    ds = dcmread(INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm")
    ds.SOPClassUID = sop_class
    return ds


def _refusal(port: int, called_ae: str, sop_class: str) -> str:
    with pytest.raises(WritebackFailed) as refused:
        send_c_store([_document(sop_class)], host="127.0.0.1", port=port, called_ae=called_ae, calling_ae="MEDSCREEN")
    return refused.value.reason


@pytest.fixture(scope="module")
def checking_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """Orthanc as sites run it: the called AE title checked, stores only from the AEs it knows (none here)."""
    orthanc = start_orthanc(
        tmp_path_factory.mktemp("orthanc"),
        extra_config={"DicomCheckCalledAet": True, "DicomAlwaysAllowStore": False, "DicomAlwaysAllowEcho": False},
    )
    yield orthanc
    stop_orthanc(orthanc)


def test_a_pacs_that_does_not_know_medscreen_says_so(checking_orthanc: Orthanc) -> None:
    reason = _refusal(checking_orthanc.dicom_port, "ORTHANC", COMPREHENSIVE_3D_SR_STORAGE)
    assert "rejected the association from MEDSCREEN" in reason and "Calling AE title not recognised" in reason, reason
    assert "add AE MEDSCREEN" in reason


def test_a_wrong_called_ae_title_says_so(checking_orthanc: Orthanc) -> None:
    reason = _refusal(checking_orthanc.dicom_port, "NOTORTHANC", COMPREHENSIVE_3D_SR_STORAGE)
    assert "Called AE title not recognised" in reason and "MEDSCREEN_PACS_AE_TITLE" in reason, reason


def test_no_pacs_listening_is_not_called_a_rejection() -> None:
    reason = _refusal(free_port(), "PACS", COMPREHENSIVE_3D_SR_STORAGE)
    assert reason.startswith("no association with PACS at 127.0.0.1:"), reason


@requires_dcmtk
def test_a_class_stored_in_other_transfer_syntaxes_only_names_them(tmp_path: Path) -> None:
    config = tmp_path / "storescp.cfg"
    config.write_text(_STORESCP_CONFIG)
    port = free_port()
    received = tmp_path / "received"
    received.mkdir()
    scp = subprocess.Popen(
        [dcmtk("storescp"), "-xf", str(config), "JpegImages", "-od", str(received), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _listening(port), 30, "storescp to listen")
        reason = _refusal(port, "PACS", SECONDARY_CAPTURE_IMAGE_STORAGE)
    finally:
        scp.terminate()
        scp.wait(timeout=30)
    assert "in none of the transfer syntaxes offered (Explicit VR Little Endian, Implicit VR Little Endian)" in reason
    assert "does not support that SOP class" not in reason, reason


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_the_completeness_count_query_says_why_the_pacs_refused_it(
    checking_orthanc: Orthanc, caplog: pytest.LogCaptureFixture
) -> None:
    # The same refusal met by the C-FIND count (MEDSCREEN_PACS_AE_TITLE): it had logged "association ... failed".
    counter = CFindInstanceCounter("127.0.0.1", checking_orthanc.dicom_port, "ORTHANC", "MEDSCREEN")
    with caplog.at_level(logging.WARNING, logger="inference.pacs_count"):
        assert counter.count("1.2.3") is None
    assert any(
        "Calling AE title not recognised" in record.getMessage() and "add AE MEDSCREEN" in record.getMessage()
        for record in caplog.records
    ), [record.getMessage() for record in caplog.records]


@pytest.mark.parametrize(("status", "stored"), [(0x0107, True), (0x0116, True), (0xB000, True), (0xA700, False)])
def test_a_c_store_warning_is_a_stored_document_and_a_failure_is_not(status: int, stored: bool) -> None:
    """PS3.7 Annex C's warnings 0x0107 (attribute list error) and 0x0116 (attribute value out of range) mean the
    PACS stored the document while noting something about it: they had been read as refusals, so a PACS that
    answered so was sent the same SR again until the result was dead-lettered as `failed`."""
    from pynetdicom import AE, evt

    received: list[str] = []

    def store(event: evt.Event) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return status

    scp = AE(ae_title="PACS")
    scp.add_supported_context(COMPREHENSIVE_3D_SR_STORAGE, ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"])
    scp.add_supported_context(SECONDARY_CAPTURE_IMAGE_STORAGE, ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"])
    port = free_port()
    server = scp.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, store)])
    try:
        document = _document(SECONDARY_CAPTURE_IMAGE_STORAGE)
        if stored:
            send_c_store([document], host="127.0.0.1", port=port, called_ae="PACS", calling_ae="MEDSCREEN")
        else:
            with pytest.raises(WritebackFailed, match="status 0xA700"):
                send_c_store([document], host="127.0.0.1", port=port, called_ae="PACS", calling_ae="MEDSCREEN")
        assert received == [str(document.SOPInstanceUID)]
    finally:
        server.shutdown()
