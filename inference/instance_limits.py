"""Size limits of an untrusted instance that hold while it is decoded, not only on the bytes received.

A 3 MB deflated file can inflate to gigabytes (pydicom inflates the whole data set in memory), and a
small JPEG can declare 65535 x 65535 x 1000 frames that a decoder will try to allocate. So every process
that decodes a received instance checks here first: the deflated stream is inflated in bounded chunks,
counted and dropped (memory stays at one chunk), and the pixel data's declared decoded size is computed
from Rows, Columns, SamplesPerPixel, NumberOfFrames and BitsAllocated before any pixel is decoded, and each
compressed frame's codestream must declare that same image (``inference/codestream.py``).
Native (uncompressed) pixel data shorter than its declared size is refused at ingest too, instead of
being acknowledged and failing at scoring time.
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import Any

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from inference.codestream import check_codestreams
from inference.errors import InstanceTooLarge, TruncatedPixelData

__all__ = [
    "HEADER_PREFIX_BYTES",
    "check_declared_pixels",
    "deflated_data_set_offset",
    "inflated_size",
    "read_deflated_header",
    "read_within_limits",
]

_CHUNK = 1 << 20
# How much of an inflated data set the header reader keeps: headers sit before the pixel data, which is
# deferred (its length is read, its value skipped).
HEADER_PREFIX_BYTES = 4 << 20
_UNDEFINED_LENGTH = 0xFFFFFFFF


def deflated_data_set_offset(path: Path) -> tuple[int, Any]:
    """The byte offset of the (deflated) data set after the file meta, and the file meta itself."""
    with path.open("rb") as handle:
        read_preamble(handle, False)
        meta = _read_file_meta_info(handle)
        return handle.tell(), meta


def _inflate_chunks(path: Path, offset: int, limit: int) -> Any:
    """Yield inflated chunks of the data set, raising as soon as more than ``limit`` bytes came out."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    with path.open("rb") as handle:
        handle.seek(offset)
        pending = b""
        while True:
            if not pending:
                pending = handle.read(_CHUNK)
                if not pending:
                    break
            # max_length keeps each step's output at one chunk, however well the input compresses.
            out = inflater.decompress(pending, _CHUNK)
            pending = inflater.unconsumed_tail
            total += len(out)
            if total > limit:
                raise InstanceTooLarge(
                    f"deflated data set inflates to more than {limit / 1e6:.0f} MB (the instance size limit)"
                )
            if out:
                yield out
            if inflater.eof:
                break
        rest = inflater.flush()
        if total + len(rest) > limit:
            raise InstanceTooLarge(f"deflated data set inflates to more than {limit / 1e6:.0f} MB (the instance size limit)")
        if rest:
            yield rest


def inflated_size(path: Path, limit: int) -> int:
    """Bytes the deflated data set of ``path`` inflates to; InstanceTooLarge past ``limit``. Memory: one chunk."""
    offset, _ = deflated_data_set_offset(path)
    return sum(len(chunk) for chunk in _inflate_chunks(path, offset, limit))


def read_deflated_header(path: Path, limit: int, defer_size: int) -> FileDataset:
    """The header of a deflated instance, read from a bounded inflated prefix after checking the full size."""
    offset, meta = deflated_data_set_offset(path)
    prefix = bytearray()
    for chunk in _inflate_chunks(path, offset, limit):
        if len(prefix) < HEADER_PREFIX_BYTES:
            prefix += chunk[: HEADER_PREFIX_BYTES - len(prefix)]
    dataset = read_dataset(io.BytesIO(bytes(prefix)), False, True, defer_size=defer_size)
    return FileDataset(str(path), dataset, b"\x00" * 128, meta, False, True)


def _int(ds: Dataset, keyword: str, default: int) -> int:
    value = ds.get(keyword, default)
    try:
        return int(value if value not in (None, "") else default)
    except (TypeError, ValueError):
        return -1


def check_declared_pixels(ds: Dataset, limit: int, *, file_size: int | None = None) -> None:
    """Refuse pixel data whose declared decoded size passes ``limit`` or that cannot hold what it declares.

    ``file_size`` (bytes on disk, for a data set that is not deflated) lets a deferred native PixelData be
    checked against the end of the file: a value that runs past it is truncated.
    """
    if "PixelData" not in ds:
        return
    rows, columns = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    samples, frames = _int(ds, "SamplesPerPixel", 1), _int(ds, "NumberOfFrames", 1)
    bits = _int(ds, "BitsAllocated", 0)
    if min(rows, columns, samples, frames, bits) <= 0:
        raise TruncatedPixelData(
            f"impossible image: Rows={rows}, Columns={columns}, SamplesPerPixel={samples}, "
            f"NumberOfFrames={frames}, BitsAllocated={bits}"
        )
    expected = (rows * columns * samples * frames * bits + 7) // 8
    if str(ds.get("PhotometricInterpretation", "")).upper() == "YBR_FULL_422":
        expected = expected * 2 // 3  # two chroma samples shared by each pair of pixels (PS3.3 C.7.6.3.1.2)
    if expected > limit:
        raise InstanceTooLarge(
            f"pixel data declares {expected / 1e6:.0f} MB once decoded ({rows}x{columns}x{samples}, {frames} frames, "
            f"{bits} bits), over the {limit / 1e6:.0f} MB instance size limit"
        )
    meta = getattr(ds, "file_meta", None)
    transfer_syntax = UID(str(meta.get("TransferSyntaxUID", ""))) if meta is not None else None
    if transfer_syntax is not None and transfer_syntax.is_compressed:
        # The decoder sizes its output from each frame's codestream, which must declare the image above.
        check_codestreams(ds, rows, columns, samples, bits, frames)
        return
    # keep_deferred: the length of a deferred value is known without reading the value into memory.
    raw = ds.get_item("PixelData", keep_deferred=True)
    if isinstance(raw, RawDataElement):
        length, tell, deferred = raw.length, raw.value_tell, raw.value is None
    else:
        value = raw.value if raw is not None else None
        length, tell, deferred = (len(value) if value is not None else 0), None, False
    if length == _UNDEFINED_LENGTH:
        return
    if length < expected:
        raise TruncatedPixelData(f"pixel data holds {length} bytes; the image it declares needs {expected}")
    if file_size is not None and deferred and tell is not None and tell + length > file_size:
        raise TruncatedPixelData(
            f"pixel data declares {length} bytes but the file ends {tell + length - file_size} bytes early"
        )


def read_within_limits(path: Path, limit: int) -> FileDataset:
    """The whole data set of a stored instance, after the same inflate and declared-size checks as ingest.

    Scoring decodes what ingest accepted; checking again here keeps a file that reached the spool by another
    way (an older version, a restore) from taking the worker's memory.
    """
    from pydicom import dcmread
    from pydicom.filereader import read_file_meta_info

    if str(read_file_meta_info(path).get("TransferSyntaxUID", "")) == DeflatedExplicitVRLittleEndian:
        inflated_size(path, limit)
        ds = dcmread(path)
        check_declared_pixels(ds, limit)
    else:
        # The file itself passed the size limit at ingest; what matters is the decoded size, checked next.
        ds = dcmread(path)
        check_declared_pixels(ds, limit)
    return ds
