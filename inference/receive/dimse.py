"""DICOM receiver (pynetdicom): C-ECHO and C-STORE into the durable spool.

Throughput design (measured in ``benchmarks/ingest.py``, explained in the README): several receiver
processes share the port through SO_REUSEPORT so associations spread over cores; each process receives
the dataset straight into a file in the spool's ``incoming`` folder (no decode, no copy), fsyncs and
renames it into place, records it, and only then answers success. Sockets use TCP_NODELAY, because with
Nagle's algorithm the small C-STORE response waits for a delayed ACK (tens of ms per instance).
"""

from __future__ import annotations

import logging
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom._uid_dict import UID_dictionary
from pynetdicom import AE, _config, evt, register_uid, sop_class
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from inference.errors import IngestError
from inference.ingest import InstanceIngestor
from inference.receive.message_limits import StreamLimitedDimse, discard_unfinished, refusal_for
from inference.receive.negotiation import add_unknown_storage_contexts, storage_service_for_unknown_classes
from inference.receive.status import PROCESSING_FAILURE, SUCCESS, dicom_status_for
from inference.receive.upper_layer import BoundedUpperLayer
from inference.sop_classes import ACCEPTED_SOP_CLASSES

__all__ = ["NOT_DECODED_TRANSFER_SYNTAXES", "TRANSFER_SYNTAXES", "AssociationLimits", "build_ae", "retired_storage_classes", "handlers_for", "start_dimse_server"]

VERIFICATION = "1.2.840.10008.1.1"
# A-ASSOCIATE-RJ (PS3.8 9.3.4): rejected-transient, by the service provider (presentation), temporary congestion.
_REJECTED_TRANSIENT = 0x02
_SERVICE_PROVIDER_PRESENTATION = 0x03
_TEMPORARY_CONGESTION = 0x01

log = logging.getLogger(__name__)

TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old modalities)
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
    "1.2.840.10008.1.2.5",  # RLE Lossless
]
# Encapsulated transfer syntaxes no decoder here reads (video, JPEG 2000 multi-component), negotiated only for SOP
# classes no model scores: their instances are acknowledged and not kept (``inference/intake.py``), so the pixels are
# never decoded. A video modality proposes nothing else for its cine loops; refusing the context made the sender fail
# the instance unsent and (dcmtk, Orthanc) abort the rest of the study. A class medscreen scores is refused per
# context in these, as one it could not decode.
NOT_DECODED_TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.4.92",  # JPEG 2000 Part 2 Multi-component Lossless
    "1.2.840.10008.1.2.4.93",  # JPEG 2000 Part 2 Multi-component
    *(f"1.2.840.10008.1.2.4.{number}" for number in range(100, 109)),  # MPEG-2, MPEG-4 AVC/H.264, HEVC/H.265
    *(f"1.2.840.10008.1.2.4.{number}.1" for number in range(100, 107)),  # their fragmentable forms
]


@dataclass(frozen=True)
class AssociationLimits:
    """How many associations one receiver process serves, per peer address, and how long one may stay silent."""

    total: int = 32
    per_peer: int = 8
    idle_timeout_s: float = 30.0


class _ReusePortServer(ThreadedAssociationServer):
    """An association server that shares its port with sibling processes, disables Nagle and caps each peer."""

    per_peer = AssociationLimits.per_peer
    ingestor: InstanceIngestor

    def verify_request(self, request: Any, client_address: Any) -> bool:
        # One sender holding every slot with idle associations locks the others out: refuse its extra
        # connections before any PDU is read (the sender sees the connection closed and retries later).
        peer = client_address[0] if isinstance(client_address, tuple) else client_address
        held = sum(1 for assoc in self.active_associations if assoc.requestor.address == peer)
        if held >= self.per_peer:
            log.warning("refused a connection from %s: it holds %d associations already", peer, held)
            return False
        return True

    def server_bind(self) -> None:
        assert self.socket is not None
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = super().get_request()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address


class _BoundedRequestHandler(RequestHandler):
    """pynetdicom's request handler, giving each association an upper layer that bounds what a PDU may declare."""

    server: _ReusePortServer

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        # Replaced before the association starts: its ACSE, DIMSE and socket find the DUL through ``assoc.dul``.
        replaced = assoc.dul
        upper_layer = BoundedUpperLayer(assoc)
        upper_layer.max_pdu = self.ae.maximum_pdu_size
        upper_layer.max_instance_bytes = self.server.ingestor.max_instance_bytes
        # The socket has already queued its connection event (Evt5) on the replaced DUL.
        upper_layer.event_queue = replaced.event_queue
        upper_layer.socket = replaced.socket
        assoc.dul = upper_layer
        dimse = StreamLimitedDimse(assoc)
        dimse.ingestor = self.server.ingestor
        assoc.dimse = dimse
        # The timeout setters put the timers on the DUL they find; set them again on this one.
        assoc.acse_timeout = assoc.acse_timeout
        assoc.network_timeout = assoc.network_timeout
        return assoc


def retired_storage_classes() -> list[str]:
    """Storage SOP classes pynetdicom does not know (retired US/NM, trial SRs, ...), registered as storage.

    Old modalities still send them; without a storage service class behind the context, pynetdicom aborts
    the association instead of letting the handler answer 0x0122 for that one instance.
    """
    known = {context.abstract_syntax for context in AllStoragePresentationContexts}
    found = []
    for uid, (name, kind, *_rest) in UID_dictionary.items():
        if kind != "SOP Class" or "Storage" not in name or uid in known:
            continue
        if "Commitment" in name or "Directory" in name or uid.startswith("1.2.840.10008.5.1.1."):
            continue  # storage commitment, DICOMDIR and print are not storage services
        keyword = "MedscreenStorage_" + uid.replace(".", "_")
        if not hasattr(sop_class, keyword):
            register_uid(uid, keyword, StorageServiceClass)
        found.append(uid)
    return found


def build_ae(ae_title: str, allowed_aes: list[str], max_pdu: int, limits: AssociationLimits | None = None) -> AE:
    limits = limits or AssociationLimits()
    ae = AE(ae_title=ae_title)
    ae.maximum_pdu_size = max_pdu
    ae.maximum_associations = limits.total
    # A silent peer is dropped after the idle timeout: it cannot hold a slot (or a thread) for long.
    ae.network_timeout = limits.idle_timeout_s
    ae.dimse_timeout = limits.idle_timeout_s
    ae.acse_timeout = limits.idle_timeout_s
    ae.require_calling_aet = allowed_aes
    ae.add_supported_context(VERIFICATION)
    # Every storage SOP class is negotiated (retired ones included), so that an unsupported one is answered
    # with a proper C-STORE failure status and quarantined with its reason instead of failing the association.
    storage = [str(context.abstract_syntax) for context in AllStoragePresentationContexts]
    for uid in storage + retired_storage_classes():
        scored = uid in ACCEPTED_SOP_CLASSES
        ae.add_supported_context(uid, TRANSFER_SYNTAXES if scored else TRANSFER_SYNTAXES + NOT_DECODED_TRANSFER_SYNTAXES)
    return ae


def _on_echo(event: Event) -> int:
    return SUCCESS


def _on_accepted(event: Event) -> None:
    requestor = event.assoc.requestor
    log.info("association accepted from AE %s at %s:%s", requestor.ae_title, requestor.address, requestor.port)


def _on_rejected(event: Event) -> None:
    # pynetdicom rejects for the calling AE title (MEDSCREEN_DICOM_ALLOWED_AES), the called one, a user identity or
    # the association limit (MEDSCREEN_DICOM_MAX_ASSOCIATIONS): the reason is the one it sent in the A-ASSOCIATE-RJ.
    requestor = event.assoc.requestor
    answer = event.assoc.acceptor.primitive
    reason = f"{answer.result_str.lower()}: {answer.reason_str}" if isinstance(answer, A_ASSOCIATE) else "no reason"
    log.warning("association rejected from AE %s at %s (%s)", str(requestor.ae_title).strip(), requestor.address, reason)


def _on_requested(event: Event, ingestor: InstanceIngestor) -> None:
    # Under the watermark nothing could be stored: refuse the association (transient, so the PACS retries
    # later) rather than accept it and refuse each instance.
    if ingestor.has_free_disk():
        # A private or newer storage class is accepted like any other (inference/receive/negotiation.py).
        add_unknown_storage_contexts(event.assoc, TRANSFER_SYNTAXES + NOT_DECODED_TRANSFER_SYNTAXES)
        return
    requestor = event.assoc.requestor
    log.warning(
        "association rejected from AE %s at %s: free disk is under the %d MB watermark",
        str(requestor.ae_title).strip(), requestor.address, ingestor.min_free_bytes // (1024 * 1024),
    )
    event.assoc.acse.send_reject(_REJECTED_TRANSIENT, _SERVICE_PROVIDER_PRESENTATION, _TEMPORARY_CONGESTION)
    event.assoc.kill()


def _on_store(event: Event, ingestor: InstanceIngestor) -> int:
    calling_ae = str(event.assoc.requestor.ae_title).strip()
    received = Path(event.dataset_path)
    refused = refusal_for(event)
    if refused is not None:
        # Refused while streaming (too large, disk under the watermark or full): nothing of it is on disk.
        ingestor.record_refusal(refused, source="dimse", calling_ae=calling_ae)
        return dicom_status_for(refused)
    try:
        ingestor.accept_file(received, source="dimse", calling_ae=calling_ae)
    except IngestError as exc:
        return dicom_status_for(exc)
    except Exception:
        # The association must survive a bug in one instance; the sender is told it failed.
        log.exception("unexpected failure storing an instance from %s", calling_ae)
        received.unlink(missing_ok=True)
        return PROCESSING_FAILURE
    return SUCCESS


def handlers_for(ingestor: InstanceIngestor) -> list[Any]:
    return [
        (evt.EVT_C_ECHO, _on_echo),
        (evt.EVT_C_STORE, _on_store, [ingestor]),
        (evt.EVT_REQUESTED, _on_requested, [ingestor]),
        (evt.EVT_SOP_COMMON, storage_service_for_unknown_classes),
        (evt.EVT_CONN_CLOSE, discard_unfinished),
        (evt.EVT_ACCEPTED, _on_accepted),
        (evt.EVT_REJECTED, _on_rejected),
    ]


def start_dimse_server(
    ingestor: InstanceIngestor,
    host: str,
    port: int,
    ae_title: str,
    allowed_aes: list[str],
    max_pdu: int,
    limits: AssociationLimits | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> ThreadedAssociationServer:
    """Start a non-blocking receiver (over TLS with ``ssl_context``); the caller shuts it down with ``server.shutdown()``."""
    # pynetdicom writes received datasets into tempfile's directory; pointing it at the spool's
    # incoming folder (same file system) lets the spool rename instead of copy. Process-wide, so
    # only the receiver processes call this.
    _config.STORE_RECV_CHUNKED_DATASET = True
    tempfile.tempdir = str(ingestor.spool.incoming)
    limits = limits or AssociationLimits()
    ae = build_ae(ae_title, allowed_aes, max_pdu, limits)
    server = ae.make_server(
        (host, port),
        evt_handlers=handlers_for(ingestor),
        server_class=_ReusePortServer,
        ssl_context=ssl_context,
        request_handler=_BoundedRequestHandler,
    )
    assert isinstance(server, _ReusePortServer)
    server.per_peer = limits.per_peer
    server.ingestor = ingestor
    # What AE.start_server does for its own servers; shutdown() expects to find the server here.
    ae._servers.append(server)
    threading.Thread(target=server.serve_forever, name=f"dimse-{port}", daemon=True).start()
    log.info("DICOM receiver %s listening on %s:%d%s", ae_title, host, port, " (TLS)" if ssl_context else "")
    return server
