"""A real DICOM sender (dcmtk's echoscu/storescu) against the real receiver."""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile
import time
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy import select

from benchmarks.dcmtk import dcmtk
from inference.ingest import InstanceIngestor
from inference.receive.dimse import start_dimse_server
from inference.receive.process import build_ingestor
from inference.tables import Instance, NotScoredInstance, QuarantinedItem, Study
from service.db import make_session_factory
from service.settings import Settings
from tests.conftest import free_port
from tests.inference.conftest import INFERENCE_FIXTURES, requires_dcmtk, storescu

pytestmark = [pytest.mark.integration, requires_dcmtk]


def test_echo(dimse_server: ThreadedAssociationServer, sqlite_settings: Settings) -> None:
    result = subprocess.run(
        [dcmtk("echoscu"), "-aec", "MEDSCREEN", "127.0.0.1", str(sqlite_settings.dicom_port)], capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


def test_store_good_and_bad_files_in_one_association(
    dimse_server: ThreadedAssociationServer, ingestor: InstanceIngestor, sqlite_settings: Settings
) -> None:
    good = sorted((INFERENCE_FIXTURES / "ct").glob("*.dcm")) + [
        INFERENCE_FIXTURES / "images" / name for name in ("mg_ge_senographe.dcm", "dx_chest_highdicom.dcm")
    ]
    # Valid DICOM medscreen does not score (an image without pixels, an MR): acknowledged, recorded as ignored,
    # never a refusal that would abort the sender's batch (issue 11).
    others = [INFERENCE_FIXTURES / "bad" / "no_pixel_data_dx.dcm", INFERENCE_FIXTURES / "bad" / "unsupported_mr.dcm"]
    output = storescu(sqlite_settings.dicom_port, *good, *others, calling_ae="ORTHANC", extra=("--no-halt",))
    assert output.count("Received Store Response (Success)") == len(good) + len(others), output

    with make_session_factory(ingestor.engine)() as session:
        modalities = sorted(session.scalars(select(Study.modality)))
        quarantined = sorted(session.scalars(select(QuarantinedItem.kind)))
        ignored = sorted(session.scalars(select(NotScoredInstance.modality).where(NotScoredInstance.kind == "ignored")))
    assert modalities == ["CT", "DX", "MG"]
    assert quarantined == [] and ignored == ["CR", "MR"]


@pytest.mark.parametrize(
    ("name", "propose", "transfer_syntax"),
    [
        ("sc_rle.dcm", "-xr", "1.2.840.10008.1.2.5"),
        ("sc_jpeg_baseline.dcm", "-xy", "1.2.840.10008.1.2.4.50"),
        ("sc_jpeg_lossless.dcm", "-xs", "1.2.840.10008.1.2.4.70"),
        ("sc_jpeg2000.dcm", "-xw", "1.2.840.10008.1.2.4.91"),
    ],
)
def test_compressed_instances_are_stored_as_sent(
    dimse_server: ThreadedAssociationServer,
    ingestor: InstanceIngestor,
    sqlite_settings: Settings,
    name: str,
    propose: str,
    transfer_syntax: str,
) -> None:
    output = storescu(sqlite_settings.dicom_port, INFERENCE_FIXTURES / "images" / name, extra=(propose, "-R"))
    assert "Received Store Response (Success)" in output, output
    with make_session_factory(ingestor.engine)() as session:
        assert list(session.scalars(select(Instance.transfer_syntax_uid))) == [transfer_syntax]


def test_calling_ae_allow_list(sqlite_settings: Settings) -> None:
    settings = sqlite_settings.model_copy(update={"dicom_port": free_port(), "dicom_allowed_aes": ["ORTHANC"]})
    ingestor = build_ingestor(settings)
    server = start_dimse_server(ingestor, "127.0.0.1", settings.dicom_port, "MEDSCREEN", ["ORTHANC"], 262144)
    try:
        refused = storescu(settings.dicom_port, INFERENCE_FIXTURES / "ct" / "lidc-0002-0.dcm", calling_ae="STRANGER")
        assert "Association Rejected" in refused, refused
        allowed = storescu(settings.dicom_port, INFERENCE_FIXTURES / "ct" / "lidc-0002-0.dcm", calling_ae="ORTHANC")
        assert "Received Store Response (Success)" in allowed, allowed
    finally:
        server.shutdown()


def test_disk_watermark_refuses_the_association_transiently(sqlite_settings: Settings) -> None:
    # Under the watermark the association itself is refused (it had been accepted and each instance written
    # before its 0xA700); a store arriving once the disk goes under is 0xA700, tests/security/test_streaming_limits.py.
    settings = sqlite_settings.model_copy(update={"dicom_port": free_port(), "min_free_disk_mb": 1 << 40})
    server = start_dimse_server(build_ingestor(settings), "127.0.0.1", settings.dicom_port, "MEDSCREEN", [], 262144)
    try:
        output = storescu(settings.dicom_port, INFERENCE_FIXTURES / "ct" / "lidc-0002-0.dcm")
        assert "Association Rejected" in output and "Rejected Transient" in output, output
    finally:
        server.shutdown()


class _FullDisk:
    """pynetdicom's data set file on a full disk: the file is created and written into its buffer, and each flush
    (pynetdicom flushes after every fragment) and the close find no space left."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._real = tempfile.NamedTemporaryFile(*args, **kwargs)
        self.name = self._real.name
        self.file = self

    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def close(self) -> None:
        self._real.close()
        self.flush()


def test_a_small_instance_onto_a_full_disk_is_answered_0xa700_at_once(
    ingestor: InstanceIngestor, sqlite_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An instance that fits in one fragment: the fragment that found the disk full was its last, so the message
    # never completed and the sender waited for its timeout, then aborted (README: a truly full disk answers 0xA700).
    ds = dcmread(INFERENCE_FIXTURES / "images" / "dx_abdomen_ge.dcm")  # 3.5 kB
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    server = start_dimse_server(ingestor, "127.0.0.1", sqlite_settings.dicom_port, "MEDSCREEN", [], 262144)
    try:
        ae = AE(ae_title="PACS")
        # Above the 10 s bound below (a 5 s peer timeout ended a slow answer first, as an empty status), below the
        # 30 s hang the test is about.
        ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 20
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", sqlite_settings.dicom_port, ae_title="MEDSCREEN")
        assert assoc.is_established
        with monkeypatch.context() as full:
            full.setattr("pynetdicom.dimse_messages.NamedTemporaryFile", _FullDisk)
            start = time.monotonic()
            status = assoc.send_c_store(ds)
        assert "Status" in status and status.Status == 0xA700, "Refused: out of resources, not a timeout"
        assert time.monotonic() - start < 10  # the hang it replaced was 30 s; 10 allows a loaded machine
        assert not any(ingestor.spool.incoming.iterdir()), "no partial file stays in incoming"
        # Space returns: the same association goes on and the instance is stored.
        assert assoc.send_c_store(ds).Status == 0x0000
        assoc.release()
    finally:
        server.shutdown()
