"""DICOM over TLS (PS3.15 Annex B): ``ssl`` contexts for the receiver and for associations to the PACS.

The receiver takes TLS only when a certificate and key are set (a port is either TLS or not: a PACS told to
use TLS must never fall back to clear text). Client certificates are optional and, when required, must be
signed by the configured CA. Towards the PACS the certificate is verified against that CA alone (the system's
trust store only when no CA is configured) and its host name checked; medscreen's own certificate is presented when the PACS asks for one. TLS 1.2 is the floor
(BCP 195, what dcmtk's default profile requires).
"""

from __future__ import annotations

import ssl

from inference.errors import TlsConfigurationError
from service.settings import Settings

__all__ = ["receiver_ssl_context", "pacs_tls_args"]


def _load_identity(context: ssl.SSLContext, settings: Settings) -> None:
    if settings.dicom_tls_cert and settings.dicom_tls_key:
        try:
            context.load_cert_chain(str(settings.dicom_tls_cert), str(settings.dicom_tls_key))
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigurationError(
                f"cannot load the DICOM TLS certificate {settings.dicom_tls_cert} and key: {exc}"
            ) from exc


def receiver_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The receiver's server context, or None when no certificate is configured (plain DICOM)."""
    if not (settings.dicom_tls_cert and settings.dicom_tls_key):
        if settings.dicom_tls_require_client_cert:
            raise TlsConfigurationError("MEDSCREEN_DICOM_TLS_REQUIRE_CLIENT_CERT needs MEDSCREEN_DICOM_TLS_CERT and _KEY")
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_identity(context, settings)
    if settings.dicom_tls_ca:
        try:
            context.load_verify_locations(cafile=str(settings.dicom_tls_ca))
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigurationError(f"cannot load the DICOM TLS CA {settings.dicom_tls_ca}: {exc}") from exc
        context.verify_mode = ssl.CERT_REQUIRED if settings.dicom_tls_require_client_cert else ssl.CERT_OPTIONAL
    elif settings.dicom_tls_require_client_cert:
        raise TlsConfigurationError("MEDSCREEN_DICOM_TLS_REQUIRE_CLIENT_CERT needs MEDSCREEN_DICOM_TLS_CA to check them")
    return context


def pacs_tls_args(settings: Settings) -> tuple[ssl.SSLContext, str] | None:
    """pynetdicom's ``tls_args`` for an association to the PACS, or None when the PACS is spoken to in clear."""
    if not settings.pacs_tls:
        return None
    if settings.dicom_tls_ca:
        # The configured CA alone (as the HTTPS side does): not the operating system's store, where any public
        # or proxy CA could vouch for the PACS's name. Host name check and CERT_REQUIRED are this class's defaults.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            context.load_verify_locations(cafile=str(settings.dicom_tls_ca))
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigurationError(f"cannot load the DICOM TLS CA {settings.dicom_tls_ca}: {exc}") from exc
    else:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_identity(context, settings)
    return context, str(settings.pacs_host or "")
