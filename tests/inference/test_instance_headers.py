"""The ingest gate on real files: what is accepted, and the reason for each refusal."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import pytest

from inference.errors import IngestError, MissingAttribute, NotDicom
from inference.instance_headers import is_valid_uid, read_instance_headers
from tests.inference.conftest import INFERENCE_FIXTURES

IMAGES = INFERENCE_FIXTURES / "images"
BAD = INFERENCE_FIXTURES / "bad"


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
