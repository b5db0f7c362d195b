"""Build test studies from real images: copies of a real slice with fresh UIDs per instance."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.uid import generate_uid

__all__ = ["write_ct_study"]


def write_ct_study(source_slice: Path, out_dir: Path, count: int) -> list[Path]:
    """Write ``count`` instances of one CT series made from ``source_slice`` (new study/series/SOP UIDs)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = dcmread(source_slice)
    study_uid, series_uid = generate_uid(), generate_uid()
    z0 = float(ds.ImagePositionPatient[2]) if "ImagePositionPatient" in ds else 0.0
    paths = []
    for index in range(count):
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = index + 1
        if "ImagePositionPatient" in ds:
            ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], z0 - index * 1.25]
        path = out_dir / f"ct{index:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
