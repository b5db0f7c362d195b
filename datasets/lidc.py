"""Reader for LIDC-IDRI: CT slabs (``small/``) and the readers' XML (``full/``) with nodule contours."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.dicom_series import Volume, read_series_folder
from datasets.errors import LabelsError

__all__ = ["NoduleRoi", "NoduleRead", "LidcCase", "parse_lidc_xml", "load_lidc", "nodule_centres"]

_NS = {"l": "http://www.nih.gov"}


@dataclass(frozen=True)
class NoduleRoi:
    z_mm: float
    sop_instance_uid: str
    rows: tuple[int, ...]
    cols: tuple[int, ...]


@dataclass(frozen=True)
class NoduleRead:
    """One reader's mark of one nodule >= 3 mm (the ones with characteristics and contours)."""

    reader: str
    nodule_id: str
    malignancy: int | None
    rois: tuple[NoduleRoi, ...]


@dataclass(frozen=True)
class LidcCase:
    patient_id: str
    series_folder: Path
    reads: tuple[NoduleRead, ...]

    def volume(self) -> Volume:
        return read_series_folder(self.series_folder)


def _required_text(element: ET.Element, path: str) -> str:
    text = element.findtext(path, namespaces=_NS)
    if text is None:
        raise LabelsError(f"LIDC reading has an ROI without {path.split(':')[-1]}")
    return text


def parse_lidc_xml(path: Path) -> list[NoduleRead]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise LabelsError(f"{path}: {exc}") from exc
    reads: list[NoduleRead] = []
    for index, session in enumerate(root.findall("l:readingSession", _NS)):
        reader = session.findtext("l:servicingRadiologistID", default=str(index), namespaces=_NS).strip()
        for nodule in session.findall("l:unblindedReadNodule", _NS):
            text = nodule.findtext("l:characteristics/l:malignancy", default="", namespaces=_NS).strip()
            rois = []
            for roi in nodule.findall("l:roi", _NS):
                if roi.findtext("l:inclusion", default="TRUE", namespaces=_NS).strip() != "TRUE":
                    continue
                edges = roi.findall("l:edgeMap", _NS)
                rois.append(
                    NoduleRoi(
                        float(_required_text(roi, "l:imageZposition")),
                        roi.findtext("l:imageSOP_UID", default="", namespaces=_NS).strip(),
                        tuple(int(_required_text(e, "l:yCoord")) for e in edges),
                        tuple(int(_required_text(e, "l:xCoord")) for e in edges),
                    )
                )
            # Nodules < 3 mm have a single point and no characteristics: no malignancy label.
            if rois and text.isdigit():
                reads.append(NoduleRead(reader, nodule.findtext("l:noduleID", "", _NS).strip(), int(text), tuple(rois)))
    return reads


def load_lidc(root: Path) -> list[LidcCase]:
    """Cases under ``root`` (the ``ct/lidc`` folder): slices from ``small/``, reads from ``full/``."""
    root = Path(root)
    cases = []
    for patient_dir in sorted((root / "small").glob("LIDC-IDRI-*")):
        series_dirs = [p for p in patient_dir.glob("*/*") if p.is_dir()]
        if not series_dirs:
            continue
        series = series_dirs[0]
        xml_files = sorted((root / "full" / patient_dir.name).glob(f"*/{series.name}/*.xml"))
        if not xml_files:
            raise LabelsError(f"no reader XML for {patient_dir.name}")
        reads = [r for x in xml_files for r in parse_lidc_xml(x)]
        cases.append(LidcCase(patient_dir.name, series, tuple(reads)))
    return cases


def nodule_centres(case: LidcCase, volume: Volume) -> list[tuple[int, int, int, float, float]]:
    """Per reader's nodule contour on a slice present in the slab: (slice, row, col, radius_px, malignancy).

    One entry per (read, slice), so a nodule seen by four readers over three slices gives up to
    twelve positives, which is what a 2-D patch classifier is trained on.
    """
    z_index = {round(z, 2): i for i, z in enumerate(volume.z_positions)}
    centres = []
    for read in case.reads:
        for roi in read.rois:
            index = z_index.get(round(roi.z_mm, 2))
            if index is None or not roi.rows:
                continue
            rows, cols = np.asarray(roi.rows), np.asarray(roi.cols)
            radius = max(float(rows.max() - rows.min()), float(cols.max() - cols.min())) / 2.0
            centres.append((index, int(rows.mean()), int(cols.mean()), max(radius, 1.0), float(read.malignancy or 0)))
    return centres
