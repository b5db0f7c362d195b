"""Seeded mutation of real DICOM files, and senders that deliver them as they are (C-STORE and STOW-RS)."""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, _config

from inference.instance_headers import is_valid_uid

__all__ = ["Mutant", "mutate", "corpus", "send_c_store", "send_stow", "process_group_peak_rss"]


@dataclass(frozen=True)
class Mutant:
    path: Path
    source: Path
    how: str


def corpus(folder: Path, limit: int, seed: int) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.stat().st_size < 8 << 20)
    random.Random(seed).shuffle(files)
    return files[:limit]


def mutate(source: Path, target: Path, rng: random.Random) -> Mutant:
    """One random damage to the bytes after the preamble: flips, cuts, insertions, length fields, zeroed runs."""
    data = bytearray(source.read_bytes())
    start = min(132, len(data))
    how = rng.choice(["flip", "truncate", "insert", "duplicate", "zero", "length", "meta-flip"])
    if len(data) <= start + 8:
        how = "insert"
    if how == "flip":
        for _ in range(rng.randint(1, 64)):
            i = rng.randrange(start, len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif how == "truncate":
        del data[rng.randrange(start, len(data)) :]
    elif how == "insert":
        i = rng.randrange(start, max(start + 1, len(data)))
        data[i:i] = rng.randbytes(rng.randint(1, 4096))
    elif how == "duplicate":
        i = rng.randrange(start, len(data))
        data[i:i] = data[i : i + rng.randint(1, 65536)]
    elif how == "zero":
        i = rng.randrange(start, len(data))
        data[i : i + rng.randint(1, 4096)] = bytes(min(4096, len(data) - i))
    elif how == "length":
        # Element lengths are 16 or 32 bits after a tag: make one huge, the classic parser trap.
        i = rng.randrange(start, len(data) - 4)
        data[i : i + 4] = rng.choice([b"\xff\xff\xff\xff", b"\xfe\xff\xff\x7f", b"\x00\x00\x00\x00"])
    else:
        i = rng.randrange(128, min(len(data), 400))
        data[i] ^= 0xFF
    target.write_bytes(bytes(data))
    return Mutant(target, source, how)


def send_c_store(port: int, paths: list[Path], timeout: float = 30) -> dict[Path, int | None]:
    """Send each file's encoded bytes as they are (no re-encoding); None where no answer came.

    Files whose file meta names no valid SOP class or transfer syntax cannot be proposed and are left out.
    """
    _config.STORE_SEND_CHUNKED_DATASET = True
    sendable: dict[Path, tuple[str, str]] = {}
    for path in paths:
        try:
            meta = read_file_meta_info(path)
            sop_class, syntax = str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)
        except Exception:  # noqa: BLE001 - a file whose meta no longer parses cannot be sent over DIMSE
            continue
        # A mutated meta can name no valid UID: no association can propose it (the sender itself fails).
        if is_valid_uid(sop_class) and is_valid_uid(syntax):
            sendable[path] = (sop_class, syntax)
    results: dict[Path, int | None] = {}
    items = list(sendable.items())
    for start in range(0, len(items), 100):
        batch = items[start : start + 100]
        ae = AE(ae_title="FUZZER")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
        contexts = sorted({pair for _, pair in batch})[:120]
        for sop_class, syntax in contexts:
            try:
                ae.add_requested_context(sop_class, syntax)
            except ValueError:
                continue
        assoc = ae.associate("127.0.0.1", port, ae_title="MEDSCREEN")
        if not assoc.is_established:
            results.update({path: None for path, _ in batch})
            continue
        try:
            for path, _ in batch:
                if not assoc.is_established:
                    assoc = ae.associate("127.0.0.1", port, ae_title="MEDSCREEN")
                try:
                    status = assoc.send_c_store(path)
                    results[path] = int(status.Status) if status else None
                except (ValueError, AttributeError, RuntimeError):
                    results[path] = None  # no context for it: not sent
        finally:
            if assoc.is_established:
                assoc.release()
    return results


def send_stow(base_url: str, headers: dict[str, str], paths: list[Path], per_request: int = 20) -> list[int]:
    """POST the files as multipart/related parts, ``per_request`` a request; returns the HTTP status codes."""
    codes = []
    with httpx.Client(base_url=base_url, timeout=120) as client:
        for start in range(0, len(paths), per_request):
            boundary = secrets.token_hex(8)
            body = b"".join(
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p.read_bytes() + b"\r\n"
                for p in paths[start : start + per_request]
            ) + f"--{boundary}--\r\n".encode()
            content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
            response = client.post("/dicomweb/studies", content=body, headers={**headers, "Content-Type": content_type})
            codes.append(response.status_code)
    return codes


def process_group_peak_rss(pgid: int) -> dict[int, int]:
    """Peak resident memory (VmHWM, bytes) of every live process in the process group ``pgid``."""
    peaks = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            status = (stat.parent / "status").read_text()
        except (OSError, IndexError, ValueError):
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks[int(stat.parent.name)] = int(line.split()[1]) * 1024
    return peaks
