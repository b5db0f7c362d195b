"""The receiver's DICOM upper layer (PS3.8): every PDU's declared length is checked before its body is read.

pynetdicom reads a whole PDU into memory before decoding it, trusting the 4-byte length in its header: one
peer declaring about 4 GiB and streaming zeros took a receiver past 2 GB before any check (the calling AE
title, the offered maximum PDU) could run. Here an association PDU is bounded by a size no real request
reaches, and a P-DATA-TF by the maximum PDU length medscreen offered; a longer one aborts the association
and closes the connection after reading only its 6-byte header.
"""

from __future__ import annotations

import logging
import struct
from typing import cast

from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket

__all__ = ["ASSOCIATION_PDU_BYTES", "BoundedUpperLayer", "PDATA_SLACK_BYTES", "pdu_limit"]

log = logging.getLogger(__name__)

# An A-ASSOCIATE-RQ with all 128 presentation contexts, each with a few dozen transfer syntaxes, and a user
# identity (a SAML assertion or JWT of up to 64 kB) stays well under this; release and abort PDUs are 10 bytes.
ASSOCIATION_PDU_BYTES = 1024 * 1024
# PS3.8 bounds the P-DATA-TF variable field by the maximum length offered; a few senders count the PDV item
# header outside it. The slack tolerates them and costs nothing.
PDATA_SLACK_BYTES = 1024
_P_DATA_TF = 0x04
_PDU_NAMES = {
    0x01: "A-ASSOCIATE-RQ",
    0x02: "A-ASSOCIATE-AC",
    0x03: "A-ASSOCIATE-RJ",
    0x04: "P-DATA-TF",
    0x05: "A-RELEASE-RQ",
    0x06: "A-RELEASE-RP",
    0x07: "A-ABORT",
}
_INVALID_PDU_PARAMETER = 0x06  # A-ABORT reason/diag (PS3.8 9.3.8): invalid-PDU-parameter value
_SERVICE_PROVIDER = 0x02


def pdu_limit(pdu_type: int, max_pdu: int, max_instance_bytes: int) -> int:
    """Most bytes a received PDU of ``pdu_type`` may declare after its 6-byte header.

    ``max_pdu`` is the maximum length medscreen offered (0: no limit offered, when one P-DATA-TF may carry a
    whole instance, so the instance limit bounds it).
    """
    if pdu_type != _P_DATA_TF:
        return ASSOCIATION_PDU_BYTES
    if max_pdu > 0:
        return max_pdu + PDATA_SLACK_BYTES
    return max_instance_bytes + ASSOCIATION_PDU_BYTES


class BoundedUpperLayer(DULServiceProvider):
    """pynetdicom's DUL service provider, reading a PDU's body only once its declared length is within bounds."""

    # Set by the receiver before the association starts: the maximum PDU length it offers and the instance limit.
    max_pdu: int = 0
    max_instance_bytes: int = 2048 * 1024 * 1024

    def _read_pdu_data(self) -> None:
        # The same events as DULServiceProvider._read_pdu_data (Evt17 closed, Evt19 invalid), with the length
        # check between the header and the body.
        sock = cast(AssociationSocket, self.socket)
        try:
            header = sock.recv(6)
        except (OSError, TimeoutError):
            self.event_queue.put("Evt17")
            return
        if len(header) != 6:
            self.event_queue.put("Evt17")
            return
        pdu_type, _, length = struct.unpack(">BBL", header)
        if pdu_type not in _PDU_NAMES:
            log.warning("unknown PDU type 0x%02X from %s", pdu_type, self._peer())
            self.event_queue.put("Evt19")
            return
        limit = pdu_limit(pdu_type, self.max_pdu, self.max_instance_bytes)
        if length > limit:
            bound = "MEDSCREEN_DICOM_MAX_PDU offered" if pdu_type == _P_DATA_TF else "an association PDU may hold"
            self.abort_and_close(
                f"its {_PDU_NAMES[pdu_type]} PDU declares {length} bytes, over the {limit} {bound}; nothing of it was read"
            )
            return
        try:
            body = sock.recv(length)
        except (OSError, TimeoutError):
            self.event_queue.put("Evt17")
            return
        if len(body) != length:
            log.warning("the connection from %s closed in the middle of a PDU (%d of %d bytes)", self._peer(), len(body), length)
            self.event_queue.put("Evt17")
            return
        try:
            pdu, event = self._decode_pdu(header + body)
        except Exception:  # noqa: BLE001 - untrusted bytes: any decoding failure is an invalid PDU (Evt19)
            log.warning("an undecodable %s PDU from %s", _PDU_NAMES[pdu_type], self._peer())
            self.event_queue.put("Evt19")
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def abort_and_close(self, why: str) -> None:
        """Send an A-ABORT and close the connection now, without reading what the peer still sends.

        Closing (Evt17) rather than the state machine's abort (Evt19, then Sta13 until the ARTIM timer) stops the
        reading at once: a peer that keeps streaming would otherwise be read, 6 bytes at a time, for 30 s.
        """
        log.warning("aborted the association from %s: %s", self._peer(), why)
        sock = cast(AssociationSocket, self.socket)
        abort = A_ABORT_RQ()
        abort.source = _SERVICE_PROVIDER
        abort.reason_diagnostic = _INVALID_PDU_PARAMETER
        raw = sock.socket
        if raw is not None:
            try:
                raw.sendall(abort.encode())
            except OSError:
                pass  # the peer is gone or not reading: the close below is what matters
        sock.close()

    def _peer(self) -> str:
        requestor = self.assoc.requestor
        title = str(requestor.ae_title or "").strip()
        return f"{title or 'an unnamed AE'} at {requestor.address}"
