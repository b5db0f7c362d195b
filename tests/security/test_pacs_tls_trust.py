"""Towards the PACS, TLS trusts MEDSCREEN_DICOM_TLS_CA alone: a PACS (or a man in the middle) whose certificate a
CA of the operating system's store signed is refused. A real pynetdicom SCP over TLS on a loopback port; the
system store is pointed at the other CA with SSL_CERT_FILE, which OpenSSL's default store follows."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from inference.tls import pacs_tls_args
from service.settings import Settings
from tests.conftest import free_port
from tests.tls_certificates import TestPki, make_pki


def _echo_over_tls(server: TestPki, settings: Settings) -> bool:
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(server.server.cert, server.server.key)
    pacs = AE(ae_title="PACS")
    pacs.add_supported_context(Verification)
    port = free_port()
    scp = pacs.start_server(("127.0.0.1", port), block=False, ssl_context=server_context)
    try:
        medscreen = AE(ae_title="MEDSCREEN")
        medscreen.acse_timeout = medscreen.network_timeout = 10
        medscreen.add_requested_context(Verification)
        tls_args = pacs_tls_args(settings)
        assert tls_args is not None
        assoc = medscreen.associate("127.0.0.1", port, ae_title="PACS", tls_args=tls_args)
        established = assoc.is_established
        if established:
            assoc.release()
        return established
    finally:
        scp.shutdown()


def test_pacs_certificate_from_a_system_store_ca_is_refused(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hospital = make_pki(tmp_path / "hospital")  # MEDSCREEN_DICOM_TLS_CA
    public = make_pki(tmp_path / "public")  # a CA of the system trust store, not the hospital's
    monkeypatch.setenv("SSL_CERT_FILE", str(public.ca))
    ours = settings.model_copy(update={
        "pacs_tls": True, "pacs_host": "127.0.0.1", "pacs_port": 11112, "pacs_ae_title": "PACS", "dicom_tls_ca": hospital.ca,
    })

    assert not _echo_over_tls(public, ours), "a PACS certificate not signed by MEDSCREEN_DICOM_TLS_CA must be refused"
    assert _echo_over_tls(hospital, ours)
