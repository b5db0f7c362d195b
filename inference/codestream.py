"""The image each compressed frame's own codestream declares, checked against the DICOM header before decoding.

The JPEG, JPEG-LS and JPEG 2000 decoders size their output from the codestream (the SOF segment, the SIZ
marker), not from Rows and Columns: a 2 kB frame whose SIZ says 65535 x 65535 makes openjpeg allocate
gigabytes, and the size checks on the header (``instance_limits.check_declared_pixels``) never see it. So
only the first bytes of each frame are read here and the frame is refused unless its codestream declares the
image the header does. RLE needs no check: its decoder sizes its output from the header.
"""

from __future__ import annotations

import bisect
import io
import struct
from array import array
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.dataset import Dataset
from pydicom.pixels.utils import _get_jpg_parameters
from pydicom.uid import UID

from inference.errors import CodestreamMismatch

__all__ = ["check_codestreams", "fragment_limit", "too_many_fragments"]

_J2K_SYNTAXES = {
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93",
    "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203",
}
_JPEG_SYNTAXES = {
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",
}
# Enough for a JPEG's APP and table segments before its SOF (an ICC profile included) and a JP2 header.
_HEAD_BYTES = 1 << 20
_FRAGMENTS_PER_FRAME = 64
_BYTES_PER_FRAGMENT = 1024
_MOST_FRAGMENTS = 1_000_000
_ITEM = 0xFFFEE000
_SEQUENCE_END = 0xFFFEE0DD
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  "


class _Fragments:
    """Where each fragment lies, kept in two arrays of 8-byte integers: one object per fragment (about 200 bytes)
    made 12.5 million empty fragments (a 100 MB file) cost 2.4 GB."""

    def __init__(self, first: int) -> None:
        self.first = first  # where the first fragment's item tag lies in the stream
        self.offsets = array("Q")  # of each item tag, from the first fragment's (what the offset tables count)
        self.lengths = array("Q")

    def __len__(self) -> int:
        return len(self.offsets)

    def value_at(self, index: int) -> int:
        """Where fragment ``index``'s value lies in the stream."""
        return self.first + self.offsets[index] + 8


@dataclass(frozen=True)
class _Declared:
    rows: int
    columns: int
    samples: int
    precision: int


def fragment_limit(frames: int, pixel_bytes: int) -> int:
    """The most fragments encapsulated pixel data of ``frames`` frames in ``pixel_bytes`` may hold.

    PS3.5 A.4 lets a frame span any number of fragments, but writers split a frame into one fragment or a few
    large ones (dcmtk's +fs: whole kilobytes); millions of empty or 2-byte fragments only cost the reader
    memory and time. 64 per frame plus one per kilobyte keeps every writer's layout and bounds the scan; the
    per-frame share stops at a million fragments, so that a header declaring 10^9 one-pixel frames does not lift it.
    """
    per_frame = min(max(frames, 1) * _FRAGMENTS_PER_FRAME, max(frames, _MOST_FRAGMENTS))
    return per_frame + pixel_bytes // _BYTES_PER_FRAGMENT


def too_many_fragments(limit: int, frames: int) -> CodestreamMismatch:
    return CodestreamMismatch(
        f"pixel data has more than {limit:,} fragments for {frames} frame{'s' if frames != 1 else ''}"
    )


def _read_items(stream: BinaryIO, limit: int, frames: int) -> tuple[list[int], _Fragments]:
    """The basic offset table and the fragments of encapsulated pixel data, reading item tags only; refused
    past ``limit`` fragments, counted before any more is kept."""
    group, element, length = struct.unpack("<HHL", _exactly(stream, 8))
    if group << 16 | element != _ITEM or length % 4:
        raise CodestreamMismatch("encapsulated pixel data does not start with a basic offset table item")
    basic = list(struct.unpack(f"<{length // 4}L", _exactly(stream, length)))
    fragments = _Fragments(stream.tell())
    while len(head := stream.read(8)) == 8:
        group, element, length = struct.unpack("<HHL", head)
        tag = group << 16 | element
        if tag == _SEQUENCE_END:
            break
        if tag != _ITEM or length == 0xFFFFFFFF:
            raise CodestreamMismatch(f"unexpected tag {tag:08X} among the pixel data fragments")
        if len(fragments) >= limit:
            raise too_many_fragments(limit, frames)
        fragments.offsets.append(stream.tell() - 8 - fragments.first)
        fragments.lengths.append(length)
        stream.seek(length, io.SEEK_CUR)
    return basic, fragments


def _exactly(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise CodestreamMismatch("encapsulated pixel data ends inside an item")
    return data


def _frame_starts(ds: Dataset, basic: list[int], fragments: _Fragments, frames: int, stream: BinaryIO) -> list[int]:
    """Index of the first fragment of each frame, split as pydicom's ``get_frame`` splits them for the decoder."""
    extended = ds.get("ExtendedOffsetTable")
    offsets = list(struct.unpack(f"<{len(extended) // 8}Q", extended)) if extended else basic
    if offsets:
        # Item offsets only grow: a binary search finds each one without a table of every fragment.
        found = [bisect.bisect_left(fragments.offsets, offset) for offset in offsets]
        if any(i == len(fragments) or fragments.offsets[i] != offset for i, offset in zip(found, offsets, strict=True)):
            raise CodestreamMismatch("the pixel data's offset table points between fragments")
        return found
    if len(fragments) == 1 or frames == 1:
        return [0]
    if len(fragments) == frames:
        return list(range(frames))
    if len(fragments) < frames:
        raise CodestreamMismatch(f"{len(fragments)} pixel data fragments cannot hold {frames} frames")
    # No offset table and more fragments than frames: a frame ends with a fragment whose tail holds EOI/EOC.
    starts = [0]
    for i in range(len(fragments) - 1):
        length = fragments.lengths[i]
        stream.seek(fragments.value_at(i) + max(length - 10, 0))
        if b"\xff\xd9" in stream.read(min(length, 10)):
            starts.append(i + 1)
    return starts


def _head(stream: BinaryIO, fragments: _Fragments, start: int, end: int) -> bytes:
    """Up to ``_HEAD_BYTES`` of the frame held by fragments ``start`` to ``end`` (a header may cross fragments).

    Linear in the frame's bytes: appending to a bytes object fragment by fragment, over every later fragment,
    made a 5 MB file of 2-byte fragments cost a minute, and each frame listed in the offset table walked the
    next megabyte of other frames' fragments again.
    """
    head = bytearray()
    for index in range(start, end):
        stream.seek(fragments.value_at(index))
        head += stream.read(min(fragments.lengths[index], _HEAD_BYTES - len(head)))
        if len(head) >= _HEAD_BYTES:
            break
    return bytes(head)


def _j2k_declared(head: bytes) -> _Declared | None:
    offset = 0
    if head.startswith(_JP2_SIGNATURE):  # a JP2 file: the codestream is the jp2c box's content
        offset = 12
        while offset + 8 <= len(head) and head[offset + 4 : offset + 8] != b"jp2c":
            box = int.from_bytes(head[offset : offset + 4], "big")
            if box < 8:
                return None
            offset += box
        offset += 8
    if head[offset : offset + 4] != b"\xff\x4f\xff\x51" or len(head) < offset + 42:
        return None
    x, y, x0, y0 = struct.unpack(">4L", head[offset + 8 : offset + 24])
    components = struct.unpack(">H", head[offset + 40 : offset + 42])[0]
    sizes = head[offset + 42 : offset + 42 + 3 * components : 3]
    if components == 0 or len(sizes) != components:
        return None
    return _Declared(y - y0, x - x0, components, max((size & 0x7F) + 1 for size in sizes))


def _jpeg_declared(head: bytes) -> _Declared | None:
    found = _get_jpg_parameters(head)
    if "height" not in found:
        return None
    return _Declared(found["height"], found["width"], found["components"], found["precision"])


def _pixel_stream(ds: Dataset) -> tuple[BinaryIO, int]:
    # Encapsulated pixel data has an undefined length, so pydicom has it in memory even when reading with
    # defer_size; a (non-conformant) defined length is read here, within the file's own size limit. BytesIO
    # shares the bytes object it is given (no copy until written).
    data = ds.PixelData
    return io.BytesIO(data), len(data)


def check_codestreams(ds: Dataset, rows: int, columns: int, samples: int, bits_allocated: int, frames: int) -> None:
    """Refuse compressed pixel data whose frames' codestreams do not declare the header's image.

    Raises :class:`CodestreamMismatch` when a frame's codestream cannot be read or declares another size,
    number of samples or a precision past BitsAllocated.
    """
    meta = getattr(ds, "file_meta", None)
    syntax = UID(str(meta.get("TransferSyntaxUID", ""))) if meta is not None else UID("")
    if syntax in _J2K_SYNTAXES:
        kind, declared_by = "JPEG 2000", _j2k_declared
    elif syntax in _JPEG_SYNTAXES:
        kind, declared_by = "JPEG", _jpeg_declared
    else:
        return
    stream, size = _pixel_stream(ds)
    try:
        basic, fragments = _read_items(stream, fragment_limit(frames, size), frames)
        if not fragments:
            raise CodestreamMismatch("encapsulated pixel data holds no frame")
        starts = _frame_starts(ds, basic, fragments, frames, stream)
        # A frame ends where the next one starts (an offset table lists them in order; sorted all the same).
        bounds = [*sorted(set(starts)), len(fragments)]
        for number, first in enumerate(starts, start=1):
            found = declared_by(_head(stream, fragments, first, bounds[bisect.bisect_right(bounds, first)]))
            if found is None:
                raise CodestreamMismatch(f"frame {number} does not start with a readable {kind} codestream header")
            if (found.rows, found.columns, found.samples) != (rows, columns, samples) or found.precision > bits_allocated:
                raise CodestreamMismatch(
                    f"frame {number}'s {kind} codestream declares {found.columns}x{found.rows} pixels, "
                    f"{found.samples} samples of {found.precision} bits; the header declares {columns}x{rows} "
                    f"(Columns x Rows), {samples} samples, {bits_allocated} bits allocated"
                )
    except struct.error as exc:
        raise CodestreamMismatch(f"encapsulated pixel data cannot be parsed: {exc}") from exc
