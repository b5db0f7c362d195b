"""DICOM over TLS: the receiver answers dcmtk's `storescu +tls` (client certificates required and checked)
and refuses clear text and strangers; write-back reaches dcmtk's `storescp +tls` and refuses a PACS whose
certificate our CA did not sign. Certificates are made for the test (tests/tls_certificates.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import text

from benchmarks.dcmtk import dcmtk
from inference.errors import TlsConfigurationError, WritebackFailed
from inference.ingest import InstanceIngestor
from inference.receive.dimse import start_dimse_server
from inference.tls import pacs_tls_args, receiver_ssl_context
from inference.writeback import SECONDARY_CAPTURE_IMAGE_STORAGE, send_c_store
from service.settings import Settings
from tests.conftest import free_port
from tests.inference.conftest import INFERENCE_FIXTURES, requires_dcmtk, storescu
from tests.peers import wait_for
from tests.tls_certificates import TestPki, make_pki

pytestmark = [pytest.mark.integration, requires_dcmtk]
DX = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return make_pki(tmp_path / "pki")


def _tls_settings(settings: Settings, pki: TestPki, **extra: object) -> Settings:
    return settings.model_copy(update={
        "dicom_tls_cert": pki.server.cert, "dicom_tls_key": pki.server.key, "dicom_tls_ca": pki.ca, **extra,
    })


def test_receiver_over_tls_takes_trusted_senders_only(
    sqlite_settings: Settings, ingestor: InstanceIngestor, pki: TestPki
) -> None:
    settings = _tls_settings(sqlite_settings, pki, dicom_tls_require_client_cert=True)
    server = start_dimse_server(ingestor, "127.0.0.1", settings.dicom_port, "MEDSCREEN", [], 262144,
                                ssl_context=receiver_ssl_context(settings))
    try:
        trusted = storescu(settings.dicom_port, DX,
                           extra=("+tls", str(pki.client.key), str(pki.client.cert), "+cf", str(pki.ca)))
        assert "Received Store Response (Success)" in trusted, trusted
        clear = storescu(settings.dicom_port, DX)
        anonymous = storescu(settings.dicom_port, DX, extra=("+tla", "+cf", str(pki.ca)))
        rogue = storescu(settings.dicom_port, DX,
                         extra=("+tls", str(pki.rogue_client.key), str(pki.rogue_client.cert), "+cf", str(pki.ca)))
        for refused in (clear, anonymous, rogue):
            assert "Received Store Response" not in refused, refused
    finally:
        server.shutdown()
    with ingestor.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM instances")).scalar() == 1
    # The sender must also check us: a storescu that trusts only another CA gives up.
    wrong_ca = storescu(settings.dicom_port, DX, extra=("+tls", str(pki.client.key), str(pki.client.cert)))
    assert "Received Store Response (Success)" not in wrong_ca


def test_optional_client_certificates_and_configuration_errors(
    sqlite_settings: Settings, ingestor: InstanceIngestor, pki: TestPki
) -> None:
    settings = _tls_settings(sqlite_settings, pki)
    server = start_dimse_server(ingestor, "127.0.0.1", settings.dicom_port, "MEDSCREEN", [], 262144,
                                ssl_context=receiver_ssl_context(settings))
    try:
        anonymous = storescu(settings.dicom_port, DX, extra=("+tla", "+cf", str(pki.ca)))
        assert "Received Store Response (Success)" in anonymous, anonymous
    finally:
        server.shutdown()
    with pytest.raises(TlsConfigurationError):
        receiver_ssl_context(sqlite_settings.model_copy(update={"dicom_tls_require_client_cert": True}))
    with pytest.raises(TlsConfigurationError):
        receiver_ssl_context(settings.model_copy(update={"dicom_tls_key": pki.ca}))  # not the certificate's key
    assert receiver_ssl_context(sqlite_settings) is None and pacs_tls_args(sqlite_settings) is None


@pytest.fixture
def tls_pacs(tmp_path: Path, pki: TestPki) -> Iterator[tuple[int, Path]]:
    """dcmtk's storescp as a PACS that speaks only TLS and wants a client certificate from our CA.

    A free port can be taken by another process before storescp binds it (once in CI: the PACS never answered):
    a storescp that exits is started again on another port, and its own message is kept for the failure."""
    received = tmp_path / "pacs"
    received.mkdir()
    log = tmp_path / "storescp.log"
    for _attempt in range(3):
        port = free_port()
        with log.open("wb") as out:
            process = subprocess.Popen(
                [dcmtk("storescp"), "-aet", "TLSPACS", "-od", str(received), "+tls", str(pki.server.key), str(pki.server.cert),
                 "+cf", str(pki.ca), str(port)],
                stdout=out, stderr=subprocess.STDOUT,
            )
        echo = [dcmtk("echoscu"), "-aec", "TLSPACS", "+tls", str(pki.client.key), str(pki.client.cert), "+cf", str(pki.ca),
                "127.0.0.1", str(port)]
        def answers_or_exited(process: subprocess.Popen[bytes] = process, echo: list[str] = echo) -> bool:
            return process.poll() is not None or subprocess.run(echo, capture_output=True).returncode == 0

        wait_for(answers_or_exited, 30, "storescp +tls")
        if process.poll() is None:
            break
    else:
        pytest.fail(f"storescp +tls did not start: {log.read_text(errors='replace')[-500:]}")
    yield port, received
    process.terminate()
    process.wait(timeout=10)


def test_writeback_over_tls(settings: Settings, pki: TestPki, tls_pacs: tuple[int, Path]) -> None:
    port, received = tls_pacs
    ds = dcmread(INFERENCE_FIXTURES / "images" / "ct_small_pydicom.dcm")  # even-length pixels: dcmtk is strict
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE_IMAGE_STORAGE
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ours = settings.model_copy(update={
        "pacs_tls": True, "pacs_host": "127.0.0.1", "pacs_port": port, "pacs_ae_title": "TLSPACS",
        "dicom_tls_cert": pki.client.cert, "dicom_tls_key": pki.client.key, "dicom_tls_ca": pki.ca,
    })
    send_c_store([ds], host="127.0.0.1", port=port, called_ae="TLSPACS", calling_ae="MEDSCREEN",
                 tls_args=pacs_tls_args(ours))
    stored = list(received.iterdir())
    assert len(stored) == 1 and dcmread(stored[0]).SOPInstanceUID == ds.SOPInstanceUID

    # Our CA did not sign this PACS's certificate (we trust only the rogue one): nothing is sent.
    untrusting = ours.model_copy(update={"dicom_tls_ca": pki.rogue_client.cert})
    with pytest.raises(WritebackFailed, match="over TLS"):
        send_c_store([ds], host="127.0.0.1", port=port, called_ae="TLSPACS", calling_ae="MEDSCREEN",
                     tls_args=pacs_tls_args(untrusting))
    # Without a client certificate the PACS refuses us.
    with pytest.raises(WritebackFailed):
        send_c_store([ds], host="127.0.0.1", port=port, called_ae="TLSPACS", calling_ae="MEDSCREEN",
                     tls_args=pacs_tls_args(ours.model_copy(update={"dicom_tls_cert": None, "dicom_tls_key": None})))
    assert len(list(received.iterdir())) == 1
