"""The receiver's DIMSE message limits: a C-STORE data set is checked while it streams into ``spool/incoming``.

pynetdicom writes a C-STORE data set to its file fragment by fragment and only then calls the handler, so the
instance limit and the free-disk watermark used to be checked after the whole instance was on disk (98 MB
written under a 1 MB limit; two 354 MB sends filled a 400 MB disk and left partial files). Here each fragment
is counted before it is written: once the data set passes ``MEDSCREEN_MAX_INSTANCE_MB``, or the disk goes under
``MEDSCREEN_MIN_FREE_DISK_MB`` (checked at the first fragment and every 16 MB), or a write finds the disk full,
the partial file is removed at once and the rest of the instance is read and dropped; the handler then answers
0xA700 (at once when the fragment that found the disk full was the instance's last, as for any instance that fits
in one fragment). Command sets and data sets that pynetdicom keeps in memory (anything but a C-STORE data set) are small
in DICOM; past a generous bound the association is aborted.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import cast

from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import P_DATA

from inference.errors import IngestError, InstanceTooLarge, OutOfResources
from inference.ingest import InstanceIngestor
from inference.instance_headers import is_valid_uid
from inference.receive.upper_layer import BoundedUpperLayer

__all__ = [
    "COMMAND_SET_BYTES",
    "DISK_CHECK_BYTES",
    "IN_MEMORY_DATA_SET_BYTES",
    "StreamLimitedDimse",
    "discard_unfinished",
    "refusal_for",
]

log = logging.getLogger(__name__)

MB = 1024 * 1024
# A C-STORE-RQ command set is a few hundred bytes; no DIMSE command comes near this.
COMMAND_SET_BYTES = 64 * 1024
# Only C-ECHO and storage are negotiated: no message but a C-STORE carries a data set worth keeping in memory.
IN_MEMORY_DATA_SET_BYTES = MB
# Free disk is looked up at an instance's first fragment and again after every this many bytes of it.
DISK_CHECK_BYTES = 16 * MB


class _Dropped:
    """Stands in for a refused instance's data set file: the rest of its fragments are read and dropped."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.file = self  # pynetdicom calls ``file.flush()`` after each write

    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class StreamLimitedDimse(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider, counting each message's fragments before they are kept."""

    ingestor: InstanceIngestor  # set by the receiver before the association starts

    def __init__(self, assoc: object) -> None:
        super().__init__(assoc)  # type: ignore[arg-type]
        # Refused instances by data set path, read by the C-STORE handler once the whole message has arrived.
        self.refusals: dict[str, IngestError] = {}
        self._start_message()

    def _start_message(self) -> None:
        self._command_bytes = 0
        self._in_memory_bytes = 0
        self._streamed_bytes = 0

    def receive_primitive(self, primitive: P_DATA) -> None:
        # One PDV at a time, so that each is counted before pynetdicom writes it (a P-DATA-TF may hold the end
        # of the command set and the first data set fragment together).
        for context_id, data in primitive.presentation_data_value_list:
            if not self._admit(data):
                return
            single = P_DATA()
            single.presentation_data_value_list = [[context_id, data]]  # type: ignore[list-item]
            try:
                super().receive_primitive(single)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                self._stop_writing(OutOfResources(f"no space left under {self.ingestor.settings.home}"))
                if not data[0] & 1 and isinstance(self._data_set_sink(), _Dropped):
                    # The fragment that found the disk full goes to the dropped sink: when it is the last one (a
                    # small instance in one fragment), that completes the message and the handler answers 0xA700
                    # at once instead of the sender waiting for its timeout.
                    super().receive_primitive(single)
            if self.message is None:
                self._start_message()

    def _data_set_sink(self) -> object:
        return self.message._data_set_file if self.message is not None else None

    def _admit(self, data: bytes) -> bool:
        """Count one fragment (its first byte is the message control header); False once the association is aborted."""
        size = len(data) - 1
        if data[0] & 1:
            self._command_bytes += size
            if self._command_bytes > COMMAND_SET_BYTES:
                return self._abort(f"a DIMSE command set of more than {COMMAND_SET_BYTES} bytes")
            return True
        sink = self._data_set_sink()
        if sink is None:
            self._in_memory_bytes += size
            if self._in_memory_bytes > IN_MEMORY_DATA_SET_BYTES:
                return self._abort(f"a data set of more than {IN_MEMORY_DATA_SET_BYTES} bytes outside a C-STORE")
            return True
        if isinstance(sink, _Dropped):
            return True
        before = self._streamed_bytes
        self._streamed_bytes += size
        limit = self.ingestor.max_instance_bytes
        if self._streamed_bytes > limit:
            self._stop_writing(
                InstanceTooLarge(
                    f"instance exceeds the {limit / MB:.0f} MB limit: refused while streaming, nothing of it kept"
                )
            )
        elif (before == 0 or before // DISK_CHECK_BYTES != self._streamed_bytes // DISK_CHECK_BYTES) and not (
            self.ingestor.has_free_disk()
        ):
            self._stop_writing(
                OutOfResources(
                    f"free disk under {self.ingestor.settings.home} is below the "
                    f"{self.ingestor.min_free_bytes // MB} MB watermark"
                )
            )
        return True

    def _stop_writing(self, refusal: IngestError) -> None:
        """Remove the partial file now; the rest of the instance is dropped and the handler answers the refusal."""
        message = cast(C_STORE_RQ, self.message)
        path = self._remove_data_set_file()
        if path is None:
            return
        command = message.command_set
        sop_class = str(getattr(command, "AffectedSOPClassUID", "") or "")
        sop_instance = str(getattr(command, "AffectedSOPInstanceUID", "") or "")
        refusal.sop_class_uid = sop_class if is_valid_uid(sop_class) else None
        refusal.sop_instance_uid = sop_instance if is_valid_uid(sop_instance) else None
        self.refusals[str(path)] = refusal

    def discard_unfinished(self) -> None:
        """Remove the file of a C-STORE data set that was still arriving when the connection closed (an A-ABORT, a
        reset, the idle timeout): never acknowledged, it had stayed in ``spool/incoming`` until the retention
        cleaner's hour was up or the service restarted, a whole instance's size for each aborted send."""
        if self._remove_data_set_file() is None:
            return
        log.info(
            "removed an instance that was still arriving when the association ended (%d bytes received)",
            self._streamed_bytes,
        )

    def _remove_data_set_file(self) -> Path | None:
        """Close and remove the C-STORE data set file being written, leaving a sink that drops the rest; None when
        no file is being written (not a C-STORE, or already removed)."""
        message = self.message
        sink = message._data_set_file if isinstance(message, C_STORE_RQ) else None
        if sink is None or isinstance(sink, _Dropped):
            return None
        path = Path(sink.name)
        try:
            sink.close()
        except OSError:
            pass  # the disk is full: the file is removed below whatever its buffer held
        path.unlink(missing_ok=True)
        message._data_set_file = _Dropped(str(path))  # type: ignore[union-attr, assignment]
        return path

    def _abort(self, why: str) -> bool:
        dul = self.dul
        if isinstance(dul, BoundedUpperLayer):
            dul.abort_and_close(why)
        else:
            log.warning("aborted an association: %s", why)
            dul.event_queue.put("Evt19")  # invalid PDU: the state machine sends A-ABORT
        return False


def refusal_for(event: Event) -> IngestError | None:
    """The refusal decided while this C-STORE's data set streamed in, if any (its file is already gone)."""
    dimse = event.assoc.dimse
    if not isinstance(dimse, StreamLimitedDimse):
        return None
    return dimse.refusals.pop(str(event.dataset_path), None)


def discard_unfinished(event: Event) -> None:
    """EVT_CONN_CLOSE: the connection is gone; an instance it was carrying is removed (see
    :meth:`StreamLimitedDimse.discard_unfinished`). Run on the upper layer's thread, which writes the fragments."""
    dimse = event.assoc.dimse
    if isinstance(dimse, StreamLimitedDimse):
        dimse.discard_unfinished()
