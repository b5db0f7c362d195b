"""A real DICOM sender (dcmtk's echoscu/storescu) against the real receiver."""

from __future__ import annotations

import subprocess

import pytest
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
