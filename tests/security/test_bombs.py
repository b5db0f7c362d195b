"""Decompression and pixel-size bombs are refused while streaming, in bounded memory (issue 14, High)."""

from __future__ import annotations

import resource
import tracemalloc
from pathlib import Path

import pytest

from inference.assemble import read_study
from inference.errors import CouldNotScore, InstanceTooLarge, TruncatedPixelData
from inference.ingest import InstanceIngestor
from inference.instance_headers import read_instance_headers
from inference.receive.process import build_ingestor
from inference.receive.status import dicom_status_for
from service.settings import Settings
from tests.inference.conftest import requires_dcmtk, storescu
from tests.security.bombs import deflate_bomb, pixel_bomb, truncated_pixels

MB = 1 << 20


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return deflate_bomb(tmp_path_factory.mktemp("bomb") / "bomb.dcm", 600)


def test_a_600_mb_deflate_bomb_is_refused_at_a_100_mb_limit_in_bounded_memory(bomb: Path) -> None:
    assert bomb.stat().st_size < 2 * MB
    tracemalloc.start()
    try:
        with pytest.raises(InstanceTooLarge, match="inflates to more than") as refused:
            read_instance_headers(bomb, 100 * MB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40 * MB, f"reading the header took {peak / MB:.0f} MB"
    assert dicom_status_for(refused.value) == 0xA700


def test_a_deflated_file_within_the_limit_is_read_from_a_bounded_prefix(tmp_path: Path) -> None:
    small = deflate_bomb(tmp_path / "small.dcm", 40)
    tracemalloc.start()
    try:
        headers = read_instance_headers(small, 100 * MB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert headers.modality == "CT" and headers.transfer_syntax_uid == "1.2.840.10008.1.2.1.99"
    assert peak < 30 * MB


def test_declared_pixel_size_past_the_limit_is_refused_before_decoding(tmp_path: Path) -> None:
    with pytest.raises(InstanceTooLarge, match="declares .* once decoded"):
        read_instance_headers(pixel_bomb(tmp_path / "pixels.dcm"), 2048 * MB)


def test_truncated_pixel_data_is_refused_at_ingest_not_at_scoring(tmp_path: Path) -> None:
    with pytest.raises(TruncatedPixelData, match="holds .* bytes"):
        read_instance_headers(truncated_pixels(tmp_path / "short.dcm"), 2048 * MB)


def test_the_scoring_worker_checks_the_same_limits_before_decoding(bomb: Path, tmp_path: Path) -> None:
    with pytest.raises(CouldNotScore, match="inflates to more than"):
        read_study([bomb], max_bytes=100 * MB)
    with pytest.raises(CouldNotScore, match="once decoded"):
        read_study([pixel_bomb(tmp_path / "pixels.dcm")], max_bytes=2048 * MB)


def test_the_bomb_is_quarantined_without_its_bytes_past_the_quota(sqlite_settings: Settings, bomb: Path) -> None:
    ingestor: InstanceIngestor = build_ingestor(sqlite_settings.model_copy(update={"max_instance_mb": 100}))
    received = ingestor.spool.new_incoming_path()
    received.write_bytes(bomb.read_bytes())
    with pytest.raises(InstanceTooLarge):
        ingestor.accept_file(received, source="dimse")
    assert not any(ingestor.spool.incoming.iterdir())
    assert not any(ingestor.spool.studies.iterdir())


@requires_dcmtk
def test_over_c_store_the_receiver_refuses_the_bomb_without_growing(
    ingestor: InstanceIngestor, dimse_server, sqlite_settings: Settings, tmp_path: Path
) -> None:
    ingestor.max_instance_bytes = 10 * MB
    bomb = deflate_bomb(tmp_path / "bomb.dcm", 200)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # storescu (its own process) re-encodes, and with --propose-deflated sends the data set deflated again.
    output = storescu(sqlite_settings.dicom_port, bomb, extra=("--propose-deflated",))
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert "-> Deflated Explicit VR Little Endian" in output, output
    assert "Refused: OutOfResources" in output, output
    assert grown < 100 * MB, f"the receiver grew by {grown / MB:.0f} MB"
