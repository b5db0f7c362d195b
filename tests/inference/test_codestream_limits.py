"""A compressed frame whose codestream declares another image than Rows/Columns is refused before any decode.

The JPEG 2000 decoder sizes its output from the codestream's SIZ marker: a 2 kB file whose header says 64x64
and whose codestream says 16000x16000 made the scoring worker allocate over a gigabyte (review defect 1).
Nothing here decodes the hostile files.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.encaps import encapsulate, generate_fragmented_frames
from pydicom.uid import JPEG2000Lossless, generate_uid
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy import select

from inference.assemble import read_study
from inference.errors import CodestreamMismatch, CouldNotScore
from inference.ingest import InstanceIngestor
from inference.instance_headers import read_instance_headers
from inference.receive.status import dicom_status_for
from inference.tables import Instance, QuarantinedItem
from service.db import make_session_factory
from service.settings import Settings
from tests.inference.conftest import INFERENCE_FIXTURES, requires_dcmtk, storescu

IMAGES = INFERENCE_FIXTURES / "images"
MB = 1 << 20


def j2k_siz_bomb(target: Path, side: int) -> Path:
    """A 64x64 DX whose JPEG 2000 codestream's SIZ marker declares ``side`` x ``side`` pixels."""
    ds = dcmread(IMAGES / "dx_chest_highdicom.dcm")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows = ds.Columns = 64
    ds.PixelData = np.zeros((64, 64), np.uint8).tobytes()
    ds.compress(JPEG2000Lossless)
    frame = b"".join(next(generate_fragmented_frames(ds.PixelData)))
    siz = frame.index(b"\xff\x51")
    # SIZ: FF51 Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz ...: the image and the tile grow together.
    size = struct.pack(">II", side, side)
    frame = frame[: siz + 6] + size + frame[siz + 14 : siz + 22] + size + frame[siz + 30 :]
    ds.PixelData = encapsulate([frame])
    ds.save_as(target)
    return target


def jpeg_header_shrunk(target: Path) -> Path:
    """The real baseline JPEG fixture with its header's Rows/Columns halved: the SOF still says the real size."""
    ds = dcmread(IMAGES / "sc_jpeg_baseline.dcm")
    ds.Rows, ds.Columns = ds.Rows // 2, ds.Columns // 2
    ds.save_as(target)
    return target


def test_a_j2k_siz_bomb_is_refused_at_ingest_and_at_scoring(tmp_path: Path) -> None:
    bomb = j2k_siz_bomb(tmp_path / "j2k.dcm", 16000)
    assert bomb.stat().st_size < 10_000
    with pytest.raises(CodestreamMismatch, match="declares 16000x16000 pixels.*header declares 64x64") as refused:
        read_instance_headers(bomb, 2048 * MB)
    assert dicom_status_for(refused.value) == 0xA900
    with pytest.raises(CouldNotScore, match="codestream declares 16000x16000"):
        read_study([bomb], max_bytes=2048 * MB)


def test_a_jpeg_whose_sof_disagrees_with_the_header_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CodestreamMismatch, match="JPEG codestream declares"):
        read_instance_headers(jpeg_header_shrunk(tmp_path / "jpeg.dcm"), 2048 * MB)


@pytest.mark.parametrize("name", ["sc_jpeg2000.dcm", "sc_jpeg_baseline.dcm", "sc_jpeg_lossless.dcm", "sc_rle.dcm"])
def test_consistent_compressed_images_still_pass_both_checks(name: str) -> None:
    read_instance_headers(IMAGES / name, 2048 * MB)
    assert len(read_study([IMAGES / name], max_bytes=2048 * MB)) == 1


def test_the_refused_file_is_quarantined_with_its_reason(ingestor: InstanceIngestor, tmp_path: Path) -> None:
    received = ingestor.spool.new_incoming_path()
    received.write_bytes(j2k_siz_bomb(tmp_path / "j2k.dcm", 16000).read_bytes())
    with pytest.raises(CodestreamMismatch):
        ingestor.accept_file(received, source="dimse")
    with make_session_factory(ingestor.engine)() as session:
        quarantined = session.execute(select(QuarantinedItem.kind, QuarantinedItem.reason)).all()
        assert session.scalars(select(Instance)).all() == []
    assert [kind for kind, _ in quarantined] == ["codestream-mismatch"]
    assert "16000x16000" in quarantined[0][1]


@pytest.mark.integration
@requires_dcmtk
def test_over_c_store_the_bomb_is_never_acknowledged(
    dimse_server: ThreadedAssociationServer, sqlite_settings: Settings, tmp_path: Path
) -> None:
    # -xv: propose JPEG 2000 Lossless, so the file goes as it is.
    output = storescu(sqlite_settings.dicom_port, j2k_siz_bomb(tmp_path / "j2k.dcm", 16000), extra=("-xv",))
    assert "Received Store Response (Success)" not in output, output
    assert "0xa900" in output.lower() or "DataSetDoesNotMatchSOPClass" in output, output


def _jpeg_frames_with_offset_table(target: Path, frames: int) -> Path:
    """``frames`` copies of the baseline JPEG fixture's frame, one fragment each, listed in the basic offset table."""
    ds = dcmread(IMAGES / "sc_jpeg_baseline.dcm")
    frame = b"".join(next(generate_fragmented_frames(ds.PixelData)))
    frame += b"\x00" * (len(frame) % 2)
    ds.PixelData = encapsulate([frame] * frames, has_bot=True)
    ds["PixelData"].is_undefined_length = True
    ds.NumberOfFrames = frames
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(target)
    return target


def test_the_codestream_check_reads_each_frame_once(tmp_path: Path) -> None:
    # Each frame's header read had run on through the next megabyte of other frames' fragments, appending one
    # fragment at a time: 1000 frames of a 1.7 kB JPEG (1.7 MB) took 6.5 s, 2000 frames 17 s.
    path = _jpeg_frames_with_offset_table(tmp_path / "frames.dcm", 1000)
    started = time.perf_counter()
    read_instance_headers(path, 2048 * MB)
    assert time.perf_counter() - started < 2.0
