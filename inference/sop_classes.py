"""The SOP classes medscreen accepts for scoring, and the modality each implies when the header lacks one."""

from __future__ import annotations

__all__ = ["ACCEPTED_SOP_CLASSES", "modality_for_sop_class"]

ACCEPTED_SOP_CLASSES: dict[str, tuple[str, str]] = {
    # uid: (name, modality implied by the IOD)
    "1.2.840.10008.5.1.4.1.1.2": ("CT Image Storage", "CT"),
    "1.2.840.10008.5.1.4.1.1.2.1": ("Enhanced CT Image Storage", "CT"),
    "1.2.840.10008.5.1.4.1.1.1.2": ("Digital Mammography X-Ray Image Storage - For Presentation", "MG"),
    "1.2.840.10008.5.1.4.1.1.1.2.1": ("Digital Mammography X-Ray Image Storage - For Processing", "MG"),
    "1.2.840.10008.5.1.4.1.1.1": ("Computed Radiography Image Storage", "CR"),
    "1.2.840.10008.5.1.4.1.1.1.1": ("Digital X-Ray Image Storage - For Presentation", "DX"),
    "1.2.840.10008.5.1.4.1.1.1.1.1": ("Digital X-Ray Image Storage - For Processing", "DX"),
    "1.2.840.10008.5.1.4.1.1.7": ("Secondary Capture Image Storage", "OT"),
}


def modality_for_sop_class(sop_class_uid: str) -> str | None:
    entry = ACCEPTED_SOP_CLASSES.get(sop_class_uid)
    return entry[1] if entry else None
