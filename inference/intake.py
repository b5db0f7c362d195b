"""Which valid instances become part of a study, and which are acknowledged but left aside.

A PACS that auto-routes whole studies sends medscreen its own SR and heat-map back, and with them SR, PR,
KO, SEG and documents that no model reads. Refusing those aborts the PACS's batch; taking them in would
re-open the study, start a revision and score it again (a feedback loop). So they are acknowledged with
success and recorded as not scored, with the reason:

- ``derived``: medscreen's own output, recognised by its UID root (every UID it makes), its Manufacturer
  on the instance, or a SOP Instance UID it remembers writing;
- ``ignored``: a SOP class medscreen does not score, an image without pixel data, or, for a study already
  received, an image of a modality no model scores or an image that is not an acquisition (a DERIVED\\SECONDARY
  copy, a Secondary Capture: another AI product's output carries the source's modality): only new acquired
  images of a scored modality start a revision.

Only broken data (not DICOM, missing UIDs, undecodable) is refused and quarantined, earlier.
"""

from __future__ import annotations

from dataclasses import dataclass

from inference.intended_use import SECONDARY_CAPTURE
from inference.records import InstanceHeaders
from inference.sop_classes import ACCEPTED_SOP_CLASSES
from service.lifecycle import StudyStatus

__all__ = ["NotScored", "MANUFACTURER", "SCORED_MODALITIES", "not_scored", "is_own_uid"]

# The Manufacturer medscreen writes on every object it creates (SR, heat-map) and in Contributing Equipment.
MANUFACTURER = "medscreen"
# Modalities some model scores; an image of another modality never re-opens a study.
SCORED_MODALITIES = frozenset({"CT", "MG", "CR", "DX"})

_KNOWN_NON_IMAGES = {
    "1.2.840.10008.5.1.4.1.1.88": "structured report",
    "1.2.840.10008.5.1.4.1.1.11": "presentation state",
    "1.2.840.10008.5.1.4.1.1.66.4": "segmentation",
    "1.2.840.10008.5.1.4.1.1.104": "encapsulated document",
    "1.2.840.10008.5.1.4.1.1.88.59": "key object selection",
}


@dataclass(frozen=True)
class NotScored:
    kind: str  # "derived" or "ignored"
    reason: str


def is_own_uid(uid: str, uid_root: str) -> bool:
    return bool(uid_root) and uid.startswith(uid_root)


def _what(sop_class_uid: str) -> str:
    for prefix, name in sorted(_KNOWN_NON_IMAGES.items(), key=lambda item: -len(item[0])):
        if sop_class_uid == prefix or sop_class_uid.startswith(prefix + "."):
            return name
    return f"SOP class {sop_class_uid}"


def not_scored(
    headers: InstanceHeaders, *, uid_root: str, remembered: bool, study_status: str | None,
    image_type: tuple[str, ...] = (),
) -> NotScored | None:
    """Why this valid instance is left out of its study, or None when it is taken in.

    ``remembered``: medscreen recorded sending this SOP Instance UID; ``study_status``: the status of the
    instance's study when it is already known (None for a new study); ``image_type``: the instance's ImageType
    values, read for an image that would re-open a received study.
    """
    if remembered or any(is_own_uid(uid, uid_root) for uid in (headers.sop_instance_uid, headers.series_instance_uid)):
        return NotScored("derived", "medscreen's own result coming back (its UID)")
    if headers.manufacturer.strip().lower() == MANUFACTURER:
        return NotScored("derived", f"medscreen's own result coming back (Manufacturer {MANUFACTURER!r})")
    if headers.sop_class_uid not in ACCEPTED_SOP_CLASSES:
        return NotScored("ignored", f"{_what(headers.sop_class_uid)} ({headers.modality or 'no modality'}): medscreen scores no such object")
    if not headers.has_pixel_data:
        return NotScored("ignored", f"{ACCEPTED_SOP_CLASSES[headers.sop_class_uid][0]} without pixel data")
    if (
        study_status is not None
        and study_status != StudyStatus.receiving
        and headers.modality not in SCORED_MODALITIES
    ):
        return NotScored(
            "ignored",
            f"a {headers.modality or 'modality-less'} image does not re-open a received study "
            f"(only new {', '.join(sorted(SCORED_MODALITIES))} images do)",
        )
    if study_status is not None and study_status != StudyStatus.receiving:
        # With two AI products on one PACS each one's output re-opened the study for the other, and a post-processed
        # copy was scored beside the film it was made from.
        if headers.sop_class_uid.startswith(SECONDARY_CAPTURE):
            return NotScored("ignored", f"a Secondary Capture ({headers.modality}) does not re-open a received study")
        if [value.strip().upper() for value in image_type[:2]] == ["DERIVED", "SECONDARY"]:
            return NotScored(
                "ignored", f"a derived image (ImageType DERIVED\\SECONDARY, {headers.modality}) does not re-open a received study"
            )
    return None
