"""The ingest gate on real files: what is accepted, and the reason for each refusal."""

from __future__ import annotations

import struct
import tracemalloc
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.encaps import generate_fragmented_frames
from pydicom.uid import generate_uid

from inference.assemble import read_study
from inference.errors import (
    CodestreamMismatch,
    CouldNotScore,
    IngestError,
    InstanceTooLarge,
    MissingAttribute,
    NotDicom,
)
from inference.instance_headers import is_valid_uid, read_instance_headers
from tests.inference.conftest import INFERENCE_FIXTURES

IMAGES = INFERENCE_FIXTURES / "images"
BAD = INFERENCE_FIXTURES / "bad"
MB = 1 << 20


def test_reads_a_real_lidc_ct_slice() -> None:
    headers = read_instance_headers(INFERENCE_FIXTURES / "ct" / "lidc-0002-0.dcm")
    assert headers.modality == "CT"
    assert headers.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert headers.body_part_examined == "CHEST"
    assert headers.study_instance_uid.startswith("1.3.6.1.4.1.14519.5.2.1.6279.6001.")


@pytest.mark.parametrize(
    ("name", "modality", "transfer_syntax"),
    [
        ("mg_ge_senographe.dcm", "MG", "1.2.840.10008.1.2.1"),
        ("dx_chest_highdicom.dcm", "DX", "1.2.840.10008.1.2.1"),
        ("sc_rle.dcm", "OT", "1.2.840.10008.1.2.5"),
        ("sc_jpeg_baseline.dcm", "OT", "1.2.840.10008.1.2.4.50"),
        ("sc_jpeg_lossless.dcm", "OT", "1.2.840.10008.1.2.4.70"),
        ("sc_jpeg2000.dcm", "OT", "1.2.840.10008.1.2.4.91"),
    ],
)
def test_accepts_real_images_in_common_transfer_syntaxes(name: str, modality: str, transfer_syntax: str) -> None:
    headers = read_instance_headers(IMAGES / name)
    assert headers.modality == modality
    assert headers.transfer_syntax_uid == transfer_syntax


@pytest.mark.parametrize(
    ("name", "error", "words"),
    [
        ("missing_uids.dcm", MissingAttribute, "missing"),
        ("not_dicom.json", NotDicom, "not a DICOM Part 10 file"),
    ],
)
def test_refuses_bad_files_with_a_reason(name: str, error: type[IngestError], words: str) -> None:
    with pytest.raises(error) as caught:
        read_instance_headers(BAD / name)
    assert words in caught.value.reason


def test_valid_dicom_medscreen_does_not_score_is_read_not_refused() -> None:
    # Issue 11: refusing these aborted a PACS's batch; intake records them as not scored instead.
    no_pixels = read_instance_headers(BAD / "no_pixel_data_dx.dcm")
    assert (no_pixels.modality, no_pixels.has_pixel_data) == ("CR", False)
    mr = read_instance_headers(BAD / "unsupported_mr.dcm")
    assert (mr.sop_class_uid, mr.has_pixel_data) == ("1.2.840.10008.5.1.4.1.1.4", True)


def test_uid_validation_keeps_file_names_safe() -> None:
    assert is_valid_uid("1.2.840.10008.5.1.4.1.1.2")
    assert not is_valid_uid("../../etc/passwd")
    assert not is_valid_uid("1.02.3")  # leading zero in a component
    assert not is_valid_uid("1." + "2" * 64)


@pytest.mark.shared_data
def test_every_odd_file_in_shared_data_is_accepted_or_refused_with_a_reason(shared_data: Path) -> None:
    """No file of the ~390 odd DICOM files may raise anything but a typed ingest error."""
    outcomes: Counter[str] = Counter()
    files = [p for p in (shared_data / "dicom").rglob("*") if p.is_file()]
    assert len(files) > 300
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in files:
            try:
                headers = read_instance_headers(path)
            except IngestError as exc:
                assert exc.reason, path
                outcomes[exc.kind] += 1
            else:
                assert is_valid_uid(headers.sop_instance_uid)
                outcomes["accepted"] += 1
    assert outcomes["accepted"] > 100
    for kind in ("not-dicom", "missing-attribute"):
        assert outcomes[kind] > 0, outcomes


def _with_empty_items(target: Path, items: int) -> Path:
    """The DX fixture with one undefined-length private sequence of ``items`` empty items (8 bytes each)."""
    ds = dcmread(IMAGES / "dx_chest_highdicom.dcm")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.add_new(0x00090010, "LO", "BOMB")
    ds.add_new(0x00091010, "UN", b"")  # a placeholder the sequence's bytes replace
    ds.save_as(target, enforce_file_format=True)
    raw = target.read_bytes()
    placeholder = struct.pack("<HH", 0x0009, 0x1010) + b"UN\x00\x00" + struct.pack("<L", 0)
    sequence = (
        struct.pack("<HH", 0x0009, 0x1010) + b"SQ\x00\x00" + struct.pack("<L", 0xFFFFFFFF)
        + struct.pack("<HHL", 0xFFFE, 0xE000, 0) * items + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    )
    assert raw.count(placeholder) == 1
    target.write_bytes(raw.replace(placeholder, sequence))
    return target


def _with_empty_fragments(target: Path, fragments: int) -> Path:
    """The baseline JPEG fixture's one frame followed, in the same frame, by ``fragments`` empty fragments."""
    ds = dcmread(IMAGES / "sc_jpeg_baseline.dcm")
    frame = b"".join(next(generate_fragmented_frames(ds.PixelData)))
    frame += b"\x00" * (len(frame) % 2)
    ds.PixelData = (
        struct.pack("<HHL", 0xFFFE, 0xE000, 0) + struct.pack("<HHL", 0xFFFE, 0xE000, len(frame)) + frame
        + struct.pack("<HHL", 0xFFFE, 0xE000, 0) * fragments
    )
    ds["PixelData"].is_undefined_length = True
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(target)
    return target


def _peak_while(call: Callable[[], object]) -> tuple[BaseException | None, int]:
    """What ``call`` raised (None if nothing), and the most memory Python had allocated meanwhile."""
    error: BaseException | None = None
    tracemalloc.start()
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the refusal is what the tests look at
        error = exc
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return error, peak


def test_a_sequence_of_a_million_empty_items_is_refused_before_it_is_built(tmp_path: Path) -> None:
    # pydicom builds a Dataset per item of an undefined-length sequence: 10^6 empty items (8 MB) cost 712 MB and
    # were accepted. 300,000 of them (2.4 MB) are enough to show it: about 200 MB before the walk.
    path = _with_empty_items(tmp_path / "items.dcm", 300_000)
    error, peak = _peak_while(lambda: read_instance_headers(path, 2048 * MB))
    assert isinstance(error, InstanceTooLarge), error
    assert "250,000 sequence items" in error.reason and "(0009,1010)" in error.reason
    assert peak < 20 * MB


def test_a_few_sequence_items_are_still_read(tmp_path: Path) -> None:
    assert read_instance_headers(_with_empty_items(tmp_path / "items.dcm", 1000), 2048 * MB).modality == "DX"


def test_pixel_data_of_a_million_empty_fragments_is_refused_at_ingest_and_at_scoring(tmp_path: Path) -> None:
    # One object per fragment: 12.5 million empty fragments (100 MB) cost 2.4 GB at ingest and were accepted.
    path = _with_empty_fragments(tmp_path / "fragments.dcm", 1_000_000)
    error, peak = _peak_while(lambda: read_instance_headers(path, 2048 * MB))
    assert isinstance(error, CodestreamMismatch), error
    assert "fragments for 1 frame" in error.reason
    assert peak < 20 * MB
    # The scoring worker reads the whole data set; the codestream check counts the fragments there.
    error, peak = _peak_while(lambda: read_study([path], max_bytes=2048 * MB))
    assert isinstance(error, CouldNotScore) and "fragments for 1 frame" in error.reason, error
    assert peak < 40 * MB


def test_a_frame_in_a_few_fragments_is_still_read(tmp_path: Path) -> None:
    path = _with_empty_fragments(tmp_path / "fragments.dcm", 60)
    assert read_instance_headers(path, 2048 * MB).sop_instance_uid
    read_study([path], max_bytes=2048 * MB)
