"""Build test studies from real images: CT copies of a real LIDC slice with fresh UIDs, and real chest X-ray
and mammography images wrapped as DX and MG DICOM with realistic headers."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

if TYPE_CHECKING:
    import numpy as np

__all__ = ["write_ct_study", "wrap_radiograph", "wrap_mammogram"]


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


def _base_dataset(sop_class_uid: str, modality: str, pixels: np.ndarray, *, study_uid: str, patient_id: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    now = datetime.now(UTC)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AccessionNumber = f"ACC{secrets.randbelow(10**8):08d}"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Modality = modality
    ds.Manufacturer = "medscreen test data (wrapped public image)"
    ds.InstitutionName = "Test Hospital"
    ds.StationName = "WRAP01"
    ds.PatientID = patient_id
    ds.PatientName = f"Test^{patient_id}"
    ds.PatientSex = "O"
    ds.PatientBirthDate = ""
    ds.ReferringPhysicianName = ""
    ds.PatientOrientation = ""
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype("uint8").tobytes()
    return ds


def wrap_radiograph(image_path: Path, out: Path, *, view_position: str = "AP", study_uid: str | None = None,
                    patient_id: str = "CXR0001", patient_age: str = "003Y") -> Path:
    """A real chest X-ray image (Kermany JPEG, NIH PNG) as a DX For Presentation instance.

    ``patient_age`` defaults to a child's (Kermany's films are of children aged 1-5); wrap an NIH adult
    film with its own age, or the chest model rightly declines it as outside its intended use."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(image_path).convert("L"))
    ds = _base_dataset("1.2.840.10008.5.1.4.1.1.1.1", "DX", pixels, study_uid=study_uid or generate_uid(), patient_id=patient_id)
    ds.BodyPartExamined = "CHEST"
    ds.PatientAge = patient_age
    ds.ViewPosition = view_position
    ds.StudyDescription = "XR CHEST 1 VIEW"
    ds.SeriesDescription = f"CHEST {view_position}"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImagerPixelSpacing = [0.5, 0.5]
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out


def wrap_mammogram(png_path: Path, out: Path, *, laterality: str, view_position: str = "MLO", study_uid: str | None = None,
                   patient_id: str = "MG0001") -> Path:
    """A real MIAS film (PNG/PGM, 200 um pixels) as a Digital Mammography For Presentation instance."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(png_path).convert("L"))
    ds = _base_dataset("1.2.840.10008.5.1.4.1.1.1.2", "MG", pixels, study_uid=study_uid or generate_uid(), patient_id=patient_id)
    ds.BodyPartExamined = "BREAST"
    ds.ImageLaterality = laterality
    ds.Laterality = laterality
    ds.ViewPosition = view_position
    ds.StudyDescription = "MAMMOGRAPHY SCREENING BILATERAL"
    ds.SeriesDescription = f"{laterality} {view_position}"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImagerPixelSpacing = [0.2, 0.2]
    ds.PixelSpacing = [0.2, 0.2]
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out
