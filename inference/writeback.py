"""Write a result back to the PACS following IHE AI Results (AIR).

Two objects per result, in the study they describe:
- a Comprehensive 3D SR with the TID 1500 Measurement Report: the finding, its probability, the call at
  the version's operating point and the image region (the heat-map peak or the CT candidate); the
  algorithm identified in the observer context and in Contributing Equipment (manufacturer, model name,
  software version = MLflow model version, a Device UID derived from name + version + run id, so it
  changes with every trained version). A re-score's SR lists its predecessor in Predecessor Documents.
- a Secondary Capture heat-map overlay, burned in "NOT FOR DIAGNOSTIC USE".
Both are built with highdicom and sent by C-STORE (pynetdicom) or, to a PACS that only speaks DICOMweb, by
STOW-RS (dicomweb-client).
"""

from __future__ import annotations

import copy
import logging
import re
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sr.codedict import codes
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DA, DS, TM
from pynetdicom import AE
from pynetdicom.status import STATUS_SUCCESS, STATUS_WARNING, code_to_category

from inference.dicom_dates import dicom_date
from inference.errors import WritebackFailed
from inference.instance_headers import DEFAULT_CHARSET, DEFAULT_REPERTOIRE, declared_character_sets, text_as_meant
from inference.intake import MANUFACTURER
from inference.pacs_refusals import association_failure, context_refusal
from inference.score_text import score_and_threshold
from inference.scorers import RegionScore, TaskScore
from service.lifecycle import SteeringRight, Task

__all__ = [
    "ResultToWrite",
    "NotScoredToWrite",
    "build_not_scored_sr",
    "algorithm_device_uid",
    "build_sr",
    "build_heatmap",
    "send_c_store",
    "send_stow_rs",
    "header_for_documents",
    "COPIED_TYPE2",
    "MANUFACTURER",
]

log = logging.getLogger(__name__)

COMPREHENSIVE_3D_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.34"
SECONDARY_CAPTURE_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
PIXEL_DATA = Tag("PixelData")

NOT_FOR_DIAGNOSTIC_USE = "NOT FOR DIAGNOSTIC USE"
# Local codes where DICOM/SNOMED have none for an AI probability and its thresholded call.
_SCHEME = "99MEDSCREEN"
PROBABILITY = hd.sr.CodedConcept("PROB", _SCHEME, "Probability of finding (AI decision support)")
CALL = hd.sr.CodedConcept("CALL", _SCHEME, "Call at the model's operating point")
POSITIVE = hd.sr.CodedConcept("POS", _SCHEME, "Above operating point")
NEGATIVE = hd.sr.CodedConcept("NEG", _SCHEME, "Below operating point")
NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")
# The value the call is made at, and what the version may do with a study (its SteeringRight): a reader of the SR
# sees the operating point and, for a shadow version (sent only with MEDSCREEN_WRITEBACK_SHADOW), that the result
# is recorded for monitoring and is not a finding.
OPERATING_POINT = hd.sr.CodedConcept("OPPT", _SCHEME, "Operating point of the model version (threshold)")
STEERING = hd.sr.CodedConcept("STEER", _SCHEME, "Steering right of the model version")
STEERING_VALUES = {
    SteeringRight.defer: hd.sr.CodedConcept("DEFER", _SCHEME, "Defer: positives raised, negatives may wait"),
    SteeringRight.raise_only: hd.sr.CodedConcept("RAISE", _SCHEME, "Raise only: positives raised, negatives keep place"),
    SteeringRight.shadow: hd.sr.CodedConcept("SHADOW", _SCHEME, "Shadow: recorded for monitoring, not a finding"),
}
_TASK_CODES = {
    # task: (procedure reported, finding type)
    Task.chest_xray: (hd.sr.CodedConcept("399208008", "SCT", "Plain chest X-ray"),
                   hd.sr.CodedConcept("233604007", "SCT", "Pneumonia")),
    Task.mammography: (hd.sr.CodedConcept("71651007", "SCT", "Mammography"),
                    hd.sr.CodedConcept("126926005", "SCT", "Neoplasm of breast")),
    Task.ct_chest: (hd.sr.CodedConcept("169069000", "SCT", "CT of chest"),
                 hd.sr.CodedConcept("427359005", "SCT", "Solitary nodule of lung")),
}


@dataclass(frozen=True)
class ResultToWrite:
    task: str
    model_name: str
    model_version: str
    run_id: str | None
    threshold: float
    call: str
    scored: TaskScore
    # Root of every UID medscreen makes (MEDSCREEN_UID_ROOT): ingest recognises its own output by it.
    uid_root: str | None = None
    # The version's steering right, stated in each measurement group; None leaves it out.
    steering: SteeringRight | None = None
    # How 8-bit text of a source that declares no character set is read (MEDSCREEN_DICOM_DEFAULT_CHARSET).
    default_charset: str = DEFAULT_CHARSET

    def new_uid(self) -> str:
        return str(generate_uid(prefix=self.uid_root)) if self.uid_root else str(generate_uid())


# Type 2 attributes the SR and the heat-map copy from the source image (Patient and General Study modules).
# Real senders often leave them out; highdicom needs them present, so an absent one is written empty.
COPIED_TYPE2 = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
    "AccessionNumber", "ReferringPhysicianName",
)


# Character sets the documents are written in as the source sent them: one stand-alone set that highdicom takes
# (ISO_IR 100, ISO_IR 192, GB18030...). Sets with ISO 2022 code extensions (Japanese and Korean, whose standard
# declarations start with an empty value) and ISO_IR 6 are refused by highdicom 0.28, or some of them are; the
# documents of such a study are written in UTF-8 instead, from the names pydicom decoded.
_COPIED_CHARACTER_SETS = frozenset(
    value.value for value in hd.SpecificCharacterSetValues if not value.value.startswith("ISO 2022")
)
UTF8 = "ISO_IR 192"


# Value representations of text in a character set other than the default repertoire (PS3.5 6.1.2.3).
_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})


def _text_values(ds: Dataset) -> list[tuple[Any, list[str]]]:
    """Every text element (in sequence items too) with its values as strings; pixel data is not read."""
    found = []
    for tag in list(ds.keys()):
        if tag == PIXEL_DATA:
            continue
        element = ds[tag]
        if element.VR == "SQ":
            found += [text for item in element.value or [] for text in _text_values(item)]
        elif element.VR in _TEXT_VRS and element.value not in (None, ""):
            value = element.value
            values = list(value) if isinstance(value, MultiValue | list) else [value]
            found.append((element, [str(v) for v in values]))
    return found


def _read_as_meant(fixed: Dataset, default_charset: str) -> None:
    """Text of a source under the default repertoire, which pydicom read as Latin-1, read as the site means it."""
    for element, values in _text_values(fixed):
        meant = [text_as_meant(v, [], default_charset) for v in values]
        if meant != values:
            element.value = meant if len(meant) > 1 else meant[0]


def _header_copy(source: Dataset) -> Dataset:
    """A deep copy of the source without its pixel data (the documents copy attributes, never pixels)."""
    copied = Dataset()
    for element in source:
        if element.tag != PIXEL_DATA:
            copied.add(copy.deepcopy(element))
    return copied


_PATIENT_AGE = re.compile(r"(\d{1,3})([DWMY])")


def _patient_age(value: object) -> str | None:
    """Patient's Age as the AS VR wants it (``nnnU``): ``3Y`` padded to ``003Y``; None when the unit is missing
    (``81``) or it is otherwise not an age, since the documents may only leave this Type 3 attribute out."""
    match = _PATIENT_AGE.fullmatch(str(value or "").strip().upper())
    return f"{int(match.group(1)):03d}{match.group(2)}" if match else None


_PATIENT_SEX = {"M": "M", "MALE": "M", "F": "F", "FEMALE": "F", "O": "O", "OTHER": "O"}


def _patient_sex(value: object) -> str:
    """Patient's Sex as the CS wants it (M, F, O): a spelled-out value read as its letter, anything else empty
    (Type 2: present and empty), since highdicom refuses to copy any other value into the heat-map."""
    return _PATIENT_SEX.get(str(value or "").strip().upper(), "")


# Dates and times the documents copy (all Type 2): highdicom converts each to a date or time and refuses the
# whole document when one does not convert ('03.12.2019', seen in real files), which had cost the SR and the
# heat-map of such a study.
_COPIED_DATES_AND_TIMES = {"PatientBirthDate": DA, "StudyDate": DA, "StudyTime": TM}
# The ACR-NEMA time form readers are asked to accept (PS3.5 6.2), hh:mm:ss.frac; pydicom refuses it.
_ACR_NEMA_TIME = re.compile(r"([0-9]{2}):([0-9]{2})(?::([0-9]{2}(?:\.[0-9]{1,6})?))?")


def _copied_date_or_time(keyword: str, value: str) -> str:
    """A copied date or time as DICOM writes it, or "" when it is none. The ACR-NEMA forms that PS3.5 6.2 asks
    readers to accept and older archives still send (``2020.01.25``, ``10:47:02``) are written YYYYMMDD and
    HHMMSS: the dotted date had been copied as it was, an invalid DA in every document (dciodvfy: "Character
    invalid for this VR"), and the study time dropped."""
    if _COPIED_DATES_AND_TIMES[keyword] is DA:
        day = dicom_date(value)
        return "" if day is None else f"{day:%Y%m%d}"
    if acr_nema := _ACR_NEMA_TIME.fullmatch(value):
        value = "".join(part for part in acr_nema.groups() if part)
    try:
        TM(value)
    except ValueError:
        return ""
    return value


def _dates_and_times_to_rewrite(source: Dataset) -> dict[str, str]:
    rewrites = {}
    for keyword in _COPIED_DATES_AND_TIMES:
        value = str(source.get(keyword) or "").strip()
        if value and (written := _copied_date_or_time(keyword, value)) != value:
            rewrites[keyword] = written
    return rewrites


def header_for_documents(source: Dataset, default_charset: str = DEFAULT_CHARSET) -> Dataset:
    """The source's header as the SR and heat-map copy it: the source itself when every copied Type 2 attribute
    is there, its character set is one the documents can keep and its Patient's Age is valid; else a copy with
    the missing Type 2 attributes empty, its text re-encoded in UTF-8 (ISO_IR 192), Patient's Age normalised
    or left out (highdicom copies the Patient Study module as it is, and a strict PACS refuses an invalid AS) and
    Patient's Sex normalised or empty, a birth date, study date or study time in the ACR-NEMA form written as DICOM
    writes it (``2020.01.25`` as ``20200125``), and one that is no DICOM date or time empty (the documents may not
    guess which day '03.12.2019' is).

    A source that declares no character set (or ISO_IR 6) but holds 8-bit text is written in UTF-8 too, its text
    read in ``default_charset`` (MEDSCREEN_DICOM_DEFAULT_CHARSET): copied as it was, its bytes had stood undeclared
    in the documents, which is invalid DICOM."""
    missing = [keyword for keyword in COPIED_TYPE2 if keyword not in source]
    declared = declared_character_sets(source)
    default_repertoire = all(value in DEFAULT_REPERTOIRE for value in declared)
    undeclared_8bit = default_repertoire and any(
        not value.isascii() for _, values in _text_values(source) for value in values
    )
    transcode = undeclared_8bit or (
        bool(declared) and (len(declared) > 1 or declared[0] not in _COPIED_CHARACTER_SETS)
    )
    age = source.get("PatientAge")
    fix_age = age is not None and str(age) != "" and _patient_age(age) != str(age)
    sex = source.get("PatientSex")
    fix_sex = sex is not None and str(sex) != "" and _patient_sex(sex) != str(sex)
    rewrites = _dates_and_times_to_rewrite(source)
    if not missing and not transcode and not fix_age and not fix_sex and not rewrites:
        return source
    fixed = _header_copy(source)
    if transcode:
        # Every text value decoded with the source's own declaration first (escape sequences included), then
        # written out under the new one: pydicom re-encodes a PersonName whose encodings changed.
        fixed.decode()
        if default_repertoire:
            _read_as_meant(fixed, default_charset)
        fixed.SpecificCharacterSet = UTF8
    for keyword in missing:
        setattr(fixed, keyword, "")
    if fix_age:
        normalised = _patient_age(age)
        if normalised is None:
            del fixed.PatientAge
        else:
            fixed.PatientAge = normalised
    if fix_sex:
        fixed.PatientSex = _patient_sex(sex)
    for keyword, value in rewrites.items():
        setattr(fixed, keyword, value)
    return fixed


def algorithm_device_uid(model_name: str, model_version: str, run_id: str | None, uid_root: str | None = None) -> str:
    """A stable UID per trained version: same name, version and run give the same UID, any change a new one;
    under ``uid_root`` (MEDSCREEN_UID_ROOT) when given, as every UID medscreen makes."""
    sources = ["medscreen-algorithm", model_name, model_version, run_id or ""]
    return str(generate_uid(prefix=uid_root, entropy_srcs=sources) if uid_root else generate_uid(entropy_srcs=sources))


def _contributing_equipment(result: ResultToWrite | NotScoredToWrite) -> hd.ContributingEquipment:
    equipment = hd.ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=result.model_name,
        software_versions=result.model_version,
        contribution_description=f"AI decision support, MLflow run {result.run_id or 'unknown'}; not a diagnosis",
    )
    equipment.DeviceUID = algorithm_device_uid(result.model_name, result.model_version, result.run_id, result.uid_root)
    return equipment


def _measurement_group(
    result: ResultToWrite, region: RegionScore, finding: hd.sr.CodedConcept, algorithm: hd.sr.AlgorithmIdentification,
    index: int,
) -> Any:
    """TID 1410 (with a region) or TID 1501 (without) for one image: its probability, the call at the operating
    point, and the point where the model looked as SCOORD on that image, the way IHE AI Results viewers
    (OHIF) draw a finding on the image it refers to."""
    tracking = hd.sr.TrackingIdentifier(
        uid=result.new_uid(), identifier=f"{result.task} AI finding {index}" + (f" ({region.label})" if region.label else "")
    )
    call = POSITIVE if region.score >= result.threshold else NEGATIVE
    measurements = [
        hd.sr.Measurement(name=PROBABILITY, value=round(region.score, 6), unit=NO_UNITS, algorithm_id=algorithm),
        hd.sr.Measurement(name=OPERATING_POINT, value=round(result.threshold, 6), unit=NO_UNITS, algorithm_id=algorithm),
    ]
    evaluations = [hd.sr.QualitativeEvaluation(name=CALL, value=call)]
    if result.steering is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(name=STEERING, value=STEERING_VALUES[SteeringRight(result.steering)]))
    if region.point is not None:
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            referenced_region=hd.sr.ImageRegion(
                graphic_type=hd.sr.GraphicTypeValues.POINT,
                graphic_data=np.asarray([region.point], dtype=float),
                source_image=hd.sr.SourceImageForRegion.from_source_image(
                    header_for_documents(region.source, result.default_charset)
                ),
            ),
            finding_type=finding,
            algorithm_id=algorithm,
            measurements=measurements,
            qualitative_evaluations=evaluations,
        )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        finding_type=finding,
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=evaluations,
        source_images=[
            hd.sr.SourceImageForMeasurementGroup.from_source_image(header_for_documents(region.source, result.default_charset))
        ],
    )


def _observation_context(result: ResultToWrite | NotScoredToWrite) -> hd.sr.ObservationContext:
    """The model version as the SR's observer device (TID 1004), named by its Device UID."""
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=algorithm_device_uid(result.model_name, result.model_version, result.run_id, result.uid_root),
                name=f"{result.model_name} {result.model_version}",
                manufacturer_name=MANUFACTURER,
                model_name=result.model_name,
                serial_number=result.model_version,
            ),
        )
    )


def _sr_document(
    result: ResultToWrite | NotScoredToWrite, evidence: list[Dataset], report: hd.sr.MeasurementReport,
    series_instance_uid: str, previous: Dataset | None, described: str,
) -> hd.sr.Comprehensive3DSR:
    """The Comprehensive 3D SR of a result, scored or not: one series number, equipment and description rule."""
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=series_instance_uid,
        series_number=9901,
        sop_instance_uid=result.new_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        previous_versions=[previous] if previous is not None else None,
        contributing_equipment=[_contributing_equipment(result)],
        series_description=f"medscreen AI result {result.model_name} v{result.model_version}{described}",
    )


def build_sr(result: ResultToWrite, *, series_instance_uid: str, previous: Dataset | None = None) -> Dataset:
    procedure, finding = _TASK_CODES[Task(result.task)]
    source = header_for_documents(result.scored.source, result.default_charset)
    observation_context = _observation_context(result)
    algorithm = hd.sr.AlgorithmIdentification(name=result.model_name, version=result.model_version, manufacturer=MANUFACTURER)
    regions = result.scored.regions or [RegionScore(source, result.scored.localisation.get("point"), result.scored.score)]
    groups = [
        _measurement_group(result, region, finding, algorithm, index)
        for index, region in enumerate(sorted(regions, key=lambda r: -r.score), start=1)
    ]
    report = hd.sr.MeasurementReport(
        observation_context=observation_context, procedure_reported=procedure, imaging_measurements=groups
    )
    evidence = list({
        str(r.source.SOPInstanceUID): header_for_documents(r.source, result.default_charset)
        for r in [RegionScore(source, None, 0.0), *regions]
    }.values())
    sr = _sr_document(result, evidence, report, series_instance_uid, previous, " (decision support)")
    stamp_creation_times(sr, source)
    return sr


NOT_SCORED_VALUES = {
    "could_not_score": hd.sr.CodedConcept("NOTSCORED", _SCHEME, "Not scored: the model could not score this study"),
    "out_of_scope": hd.sr.CodedConcept("OUTOFUSE", _SCHEME, "Not scored: outside the model's intended use"),
}
REASON = hd.sr.CodedConcept("RSN", _SCHEME, "Why the study was not scored")


@dataclass(frozen=True)
class NotScoredToWrite:
    """A later revision of a study the champion did not score (could not score, outside its intended use), whose
    earlier revision's SR is in the PACS: a new SR replaces it, so that the PACS does not keep the earlier call as
    the study's only AI result while the study holds an image no model assessed."""

    task: str
    model_name: str
    model_version: str
    run_id: str | None
    outcome: str
    reason: str
    source: Dataset
    uid_root: str | None = None
    # How 8-bit text of a source that declares no character set is read (MEDSCREEN_DICOM_DEFAULT_CHARSET).
    default_charset: str = DEFAULT_CHARSET

    def new_uid(self) -> str:
        return str(generate_uid(prefix=self.uid_root)) if self.uid_root else str(generate_uid())


def build_not_scored_sr(result: NotScoredToWrite, *, series_instance_uid: str, previous: Dataset) -> Dataset:
    """TID 1500 with one group: the call "not scored" (why, coded) and the reason as text, naming the earlier SR
    as its predecessor; no probability and no operating point."""
    procedure, finding = _TASK_CODES[Task(result.task)]
    source = header_for_documents(result.source, result.default_charset)
    algorithm = hd.sr.AlgorithmIdentification(name=result.model_name, version=result.model_version, manufacturer=MANUFACTURER)
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=result.new_uid(), identifier=f"{result.task} AI not scored"),
        finding_type=finding,
        algorithm_id=algorithm,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=CALL, value=NOT_SCORED_VALUES[result.outcome])],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
    )
    group[0].ContentSequence.append(
        hd.sr.TextContentItem(
            name=REASON, value=result.reason[:1024] or "no reason given",
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
    )
    observation_context = _observation_context(result)
    report = hd.sr.MeasurementReport(
        observation_context=observation_context, procedure_reported=procedure, imaging_measurements=[group]
    )
    sr = _sr_document(result, [source], report, series_instance_uid, previous, ": not scored")
    stamp_creation_times(sr, source)
    return sr


HEATMAP_LONG_SIDE = 512  # the model inputs are at most 512 pixels a side: more would add no detail
_CAPTION_LINE = 14


def heatmap_shape(source: Dataset) -> tuple[int, int]:
    """Rows and columns of the heat-map's image: the source's aspect ratio, its long side 512 (square when the
    source gives no size). The model's input is a square resize of the whole image, so this undoes its squash."""
    rows, columns = int(source.get("Rows") or 0), int(source.get("Columns") or 0)
    if rows <= 0 or columns <= 0:
        return HEATMAP_LONG_SIDE, HEATMAP_LONG_SIDE
    scale = HEATMAP_LONG_SIDE / max(rows, columns)
    return max(1, round(rows * scale)), max(1, round(columns * scale))


def _overlay(image: np.ndarray, heatmap: np.ndarray | None, lines: list[str], shape: tuple[int, int]) -> np.ndarray:
    """Greyscale image resized to ``shape`` with the heat-map in red, as RGB uint8, under a black band that holds
    the burned-in warning (the band is added above the image, so it covers no anatomy)."""
    rows, columns = shape
    base = np.clip(image * 255.0, 0, 255).astype(np.uint8)
    grey = Image.fromarray(base, mode="L").resize((columns, rows), Image.Resampling.BILINEAR)
    rgb: np.ndarray = np.stack([np.asarray(grey, dtype=np.float64)] * 3, axis=-1)
    if heatmap is not None:
        # Shown relative to its own range: on a positive film every cell can be near 1, and a uniform
        # red wash would hide where the model looked. The caption says the colours are relative.
        span = float(heatmap.max() - heatmap.min())
        relative = (heatmap - heatmap.min()) / span if span > 1e-6 else np.zeros_like(heatmap)
        heat = np.asarray(
            Image.fromarray(relative.astype(np.float32), mode="F").resize((columns, rows), Image.Resampling.BILINEAR)
        )
        alpha = 0.6 * np.clip(heat, 0, 1)[..., None] ** 2
        rgb = rgb * (1 - alpha) + np.array([255.0, 40.0, 0.0]) * alpha
    band = _CAPTION_LINE * len(lines) + 6
    canvas = Image.new("RGB", (columns, band + rows), (0, 0, 0))
    canvas.paste(Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), mode="RGB"), (0, band))
    draw = ImageDraw.Draw(canvas)
    for index, line in enumerate(lines):
        draw.text((4, 3 + _CAPTION_LINE * index), line, fill=(255, 255, 0))
    return np.asarray(canvas, dtype=np.uint8)


def _pixel_spacing(source: Dataset, shape: tuple[int, int]) -> tuple[float, float] | None:
    """The source's Pixel Spacing scaled to the heat-map's pixels (None when the source has none)."""
    spacing = source.get("PixelSpacing")
    rows, columns = int(source.get("Rows") or 0), int(source.get("Columns") or 0)
    if spacing is None or len(spacing) != 2 or rows <= 0 or columns <= 0:
        return None
    row_spacing, column_spacing = float(spacing[0]), float(spacing[1])
    if row_spacing <= 0 or column_spacing <= 0:
        return None
    return row_spacing * rows / shape[0], column_spacing * columns / shape[1]


def _source_image(source: Dataset) -> Dataset:
    """A Source Image Sequence item naming the image the heat-map was made from."""
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return item


_ORIENTATION = re.compile(r"[APLRHF]+")


def _direction(cosines: list[float]) -> str:
    """Patient-orientation letters of one direction cosine vector, strongest axis first (an oblique one is "LP")."""
    x, y, z = cosines
    letters = [("L" if x > 0 else "R", abs(x)), ("P" if y > 0 else "A", abs(y)), ("H" if z > 0 else "F", abs(z))]
    return "".join(letter for letter, size in sorted(letters, key=lambda item: -item[1]) if size >= 0.01)


def _patient_orientation(source: Dataset) -> list[str]:
    """The heat-map's Patient Orientation: the source image's when it has a valid one (its pixels keep the
    source's rows and columns), else derived from Image Orientation (Patient) (CT), else empty (Type 2)."""
    declared = source.get("PatientOrientation")
    values = [str(v) for v in declared] if isinstance(declared, MultiValue) else []
    if len(values) == 2 and all(_ORIENTATION.fullmatch(v) for v in values):
        return values
    cosines = source.get("ImageOrientationPatient")
    if cosines is not None and len(cosines) == 6:
        derived = [_direction([float(c) for c in cosines[:3]]), _direction([float(c) for c in cosines[3:]])]
        if all(derived):
            return derived
    return []


def build_heatmap(result: ResultToWrite, *, series_instance_uid: str) -> Dataset | None:
    scored = result.scored
    if scored.image is None:
        return None
    shown, at = score_and_threshold(scored.score, result.threshold)
    shadow = result.steering == SteeringRight.shadow
    lines = [
        f"{NOT_FOR_DIAGNOSTIC_USE} - AI decision support",
        f"{result.model_name} v{result.model_version}: p={shown} ({result.call} at {at})",
        # A shadow version's map reaches the PACS only with MEDSCREEN_WRITEBACK_SHADOW; burned into the image, the
        # call had read as a finding wherever the SR (which says shadow) was not opened beside it.
        *(["SHADOW: recorded for monitoring, not a finding"] if shadow else []),
        "red: where the model looked most (relative)",
    ]
    source = header_for_documents(scored.source, result.default_charset)
    shape = heatmap_shape(source)
    pixels = _overlay(scored.image, scored.heatmap, lines, shape)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=series_instance_uid,
        series_number=9902,
        sop_instance_uid=result.new_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        # highdicom takes single letters only; the source's own value replaces this placeholder below.
        patient_orientation=("L", "P"),
        contributing_equipment=[_contributing_equipment(result)],
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    spacing = _pixel_spacing(source, shape)
    if spacing is not None:
        # Set here, as highdicom would: its from_ref_dataset types the spacing as integers.
        sc.PixelSpacing = [DS(value, auto_format=True) for value in spacing]
    sc.SourceImageSequence = [_source_image(source)]
    sc.PatientOrientation = _patient_orientation(source)
    # General Series Laterality is Type 2C: a mammography heat-map is of one breast; anything else (a chest film
    # whose source says L, the side its marker is on) is sent empty (present, no value), which is what the
    # module asks for when laterality is unknown or the body part unpaired.
    image_laterality = str(getattr(source, "ImageLaterality", "") or getattr(source, "Laterality", "") or "")
    is_breast = Task(result.task) == Task.mammography
    sc.Laterality = image_laterality if is_breast and image_laterality in ("L", "R") else ""
    sc.BurnedInAnnotation = "YES"
    shadow_note = " Shadow version: recorded for monitoring, not a finding." if shadow else ""
    sc.ImageComments = (
        f"{NOT_FOR_DIAGNOSTIC_USE}. AI heat-map of {result.model_name} version {result.model_version}.{shadow_note}"
    )
    sc.SeriesDescription = (
        f"medscreen heat-map {result.model_name} v{result.model_version}{' SHADOW' if shadow else ''}"
        f" - {NOT_FOR_DIAGNOSTIC_USE}"
    )[:64]
    sc.DerivationDescription = "AI heat-map overlay (decision support, not a diagnosis)"
    stamp_creation_times(sc, source)
    return sc


_CREATION_TIMES = (
    ("InstanceCreationDate", "InstanceCreationTime"),
    ("ContentDate", "ContentTime"),
    ("DateOfSecondaryCapture", "TimeOfSecondaryCapture"),
)
_OFFSET = re.compile(r"([+-])(\d{2})(\d{2})")
# DCM 109102 "Processing Equipment": the purpose of the equipment items the documents' creation adds.
PROCESSING_EQUIPMENT = "109102"


def _source_zone(source: Dataset) -> tuple[str, timezone] | None:
    match = _OFFSET.fullmatch(str(source.get("TimezoneOffsetFromUTC", "") or "").strip())
    if match is None or int(match.group(2)) > 14 or int(match.group(3)) > 59:
        return None
    minutes = (int(match.group(2)) * 60 + int(match.group(3))) * (-1 if match.group(1) == "-" else 1)
    return match.group(0), timezone(timedelta(minutes=minutes))


def stamp_creation_times(document: Dataset, source: Dataset, now: datetime | None = None) -> None:
    """The document's creation and content times on the source's clock: one Timezone Offset From UTC applies to
    every date and time of an instance, the copied Study Date and Time among them. A source that states its offset
    has it copied and the times written in it (highdicom wrote the worker's local time and dropped the offset, so
    a study stamped +0900 was restated in the worker's zone); one that states none has the site's local time (the
    process's ``TZ``), as its own times are, and no offset."""
    instant = (now or datetime.now(UTC)).astimezone(UTC)
    zone = _source_zone(source)
    if zone is not None:
        document.TimezoneOffsetFromUTC = zone[0]
        local = instant.astimezone(zone[1])
    else:
        if "TimezoneOffsetFromUTC" in document:
            del document.TimezoneOffsetFromUTC
        local = instant.astimezone()
    for date_keyword, time_keyword in _CREATION_TIMES:
        if date_keyword in document:
            setattr(document, date_keyword, local.strftime("%Y%m%d"))
            setattr(document, time_keyword, local.strftime("%H%M%S.%f"))
    # Every processing-equipment item is made with the document: medscreen's, and highdicom's own, which the library
    # stamps with the worker's local time and no offset. A DT without an offset is read in the document's Timezone
    # Offset From UTC (PS3.3 C.12.1.1.8), so under another zone it had stated the contribution hours off (05:40
    # New York read as 05:40 +0900, 14 h early). The source's acquisition equipment carries no time of ours.
    for item in document.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item and _is_processing_equipment(item):
            item.ContributionDateTime = local.strftime("%Y%m%d%H%M%S.%f") + (zone[0] if zone else "")


def _is_processing_equipment(item: Dataset) -> bool:
    return any(
        code.get("CodeValue") == PROCESSING_EQUIPMENT and code.get("CodingSchemeDesignator") == "DCM"
        for code in item.get("PurposeOfReferenceCodeSequence", [])
    )


def send_c_store(
    datasets: list[Dataset], *, host: str, port: int, called_ae: str, calling_ae: str,
    tls_args: tuple[ssl.SSLContext, str] | None = None,
) -> None:
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for sop_class in (COMPREHENSIVE_3D_SR_STORAGE, SECONDARY_CAPTURE_IMAGE_STORAGE):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(host, port, ae_title=called_ae, tls_args=tls_args)
    if not assoc.is_established:
        where = f"{host}:{port}{' over TLS' if tls_args else ''}"
        raise WritebackFailed(
            association_failure(
                assoc, called_ae=called_ae, calling_ae=calling_ae, where=where,
                sop_classes=[ds.SOPClassUID for ds in datasets],
            )
        )
    try:
        # A PACS may accept the association yet no context for a class (many take Basic or Enhanced SR only):
        # say which class it refused and why, instead of pynetdicom's ValueError at the send.
        accepted = {str(context.abstract_syntax) for context in assoc.accepted_contexts}
        for ds in datasets:
            if str(ds.SOPClassUID) not in accepted:
                raise WritebackFailed(context_refusal(assoc, ds.SOPClassUID, called_ae=called_ae))
        for ds in datasets:
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code is None:
                raise WritebackFailed(f"no C-STORE response from {called_ae} for {ds.SOPInstanceUID}")
            # Success, or a warning (PS3.4 B.2.3's 0xB000/0xB006/0xB007, PS3.7 C's 0x0001/0x0107/0x0116): the
            # PACS stored it. A warning read as a refusal had the same document sent until dead-lettered.
            if code_to_category(code) not in (STATUS_SUCCESS, STATUS_WARNING):
                raise WritebackFailed(f"{called_ae} refused {ds.SOPClassUID.name}: status 0x{code:04X}")
            if code != 0x0000:
                log.warning("%s stored the %s with warning status 0x%04X", called_ae, ds.SOPClassUID.name, code)
    finally:
        assoc.release()


def send_stow_rs(
    datasets: list[Dataset], *, base_url: str, token: str | None = None, ca_file: str | None = None, timeout_s: float = 30
) -> None:
    """Store the documents in their study by STOW-RS (dicomweb-client); any refused instance fails the send."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    if ca_file:
        session.verify = ca_file
    headers = {"Authorization": f"Bearer {token}"} if token else None
    client = DICOMwebClient(url=base_url, session=session, headers=headers, timeout=timeout_s)
    client.set_http_retry_params(retry=False)  # the scoring job retries with its own backoff and dead letter
    study_uid = str(datasets[0].StudyInstanceUID)
    try:
        response = client.store_instances(datasets, study_instance_uid=study_uid)
    except requests.exceptions.RequestException as exc:
        raise WritebackFailed(f"STOW-RS to {base_url} failed: {exc}") from exc
    finally:
        session.close()
    failed = response.get("FailedSOPSequence") if response is not None else None
    if failed:
        reasons = ", ".join(f"0x{int(item.get('FailureReason', 0)):04X}" for item in failed)
        raise WritebackFailed(f"STOW-RS to {base_url}: {len(failed)} instance(s) refused ({reasons})")
