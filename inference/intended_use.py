"""A model version's intended use, read from its bundle, and the check a study must pass before it is scored.

A model moves a study only inside the population it was validated on. Each bundle declares it under
``intended_use`` (modalities, body parts, view positions, patient age and sex, pixel spacing and matrix
bounds); a study outside it is not scored, with the reason, and keeps its arrival place.

Age comes from PatientAge, else from PatientBirthDate against StudyDate (then SeriesDate, AcquisitionDate).
**Missing age, conservatively:** when a bundle bounds the age and the header gives none, the study is not
scored (the model cannot vouch for a patient who may be outside its population). An empty BodyPartExamined is
left to routing; a value that is present and not listed is out of scope. An empty ViewPosition (Type 2, often
empty on CR/DX) is read from the View Code Sequence, then, for a radiograph, PatientOrientation (:func:`view_of`);
an image with no view information at all is left to assembly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from inference.dicom_dates import dicom_date
from inference.errors import OutOfScope

__all__ = [
    "IntendedUse", "check_intended_use", "patient_age_years", "view_of", "is_acquisition", "INTENDED_USE_ATTRIBUTES",
    "attributes_differing",
]

_AGE = re.compile(r"^(\d{1,3})([DWMY])$")
# Spellings senders use for a body part a bundle names in English (routing reads the same words).
_BODY_PART_SPELLINGS = {"TORAX": "THORAX", "TÓRAX": "THORAX"}
_DAYS_PER = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25}
# Raw detector images (PS3.3 C.8.11.1.1.1): the storage classes For Processing, whatever the intent says.
_FOR_PROCESSING_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.1.2.1",  # Digital Mammography X-Ray Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.1.3.1",  # Digital Intra-Oral X-Ray Image Storage - For Processing
}
# Secondary Capture (single- and multi-frame): a screenshot or another product's output, never an acquisition.
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
# View Code Sequence values (CID 4010 DX views, CID 4014 MG views), SNOMED CT and the legacy SRT code of each,
# as the ViewPosition defined term they stand for. Any other code is a view no bundle lists (an oblique...).
_VIEW_CODES = {
    "272479007": "PA", "R-40888": "PA",
    "399348003": "AP", "R-10206": "AP",
    "399173006": "LL", "R-10236": "LL",
    "399198007": "RL", "R-10232": "RL",
    "399067008": "LATERAL", "R-102CD": "LATERAL", "49370004": "LATERAL", "G-A104": "LATERAL",
    "399162004": "CC", "R-10242": "CC",
    "399368009": "MLO", "R-10226": "MLO",
    "399260004": "ML", "R-10224": "ML",
    "399352003": "LM", "R-10228": "LM",
    "399192008": "XCCL", "R-1024A": "XCCL",
    "399101009": "XCCM", "R-1024B": "XCCM",
}
# View modifiers (CID 4015) of a diagnostic work-up view, not a screening one: Spot Compression and Magnification.
# The meaning is read too: some senders put a wrong or local code beside the right words.
_WORKUP_MODIFIERS = {"399055006": "spot compression", "R-102D7": "spot compression",
                     "399163009": "magnification", "R-102D6": "magnification"}
# A contact mammogram's estimated magnification is about 1.05-1.15 (the breast on the detector); a magnification
# view is taken at 1.5-2.0. Above this the image is a magnification view whatever its codes say.
MAX_MAMMOGRAPHY_MAGNIFICATION = 1.2
# The largest matrix of a modality when a bundle states none (the shipped bundles predate the bound, and their
# digests name their registered versions). CT is reconstructed at 512x512, at most 1024x1024; one header could
# otherwise declare 4096x4096 slices (40 of them, 284 kB of JPEG-LS, took 4.4 GB). Radiographs and mammograms
# are one image each, bounded by MEDSCREEN_MAX_INSTANCE_MB.
_LARGEST_MATRIX = {"CT": (1024, 1024)}
# Row over column spacing (or the reverse) past which pixels are not square: every version was validated on square
# pixels, and CT reconstructions differ by under 10% (0.545x0.597 mm) when they differ at all.
MAX_PIXEL_ASPECT = 1.25
# The attributes the gate reads: a copy of a stored instance that differs in one of them may change its verdict.
INTENDED_USE_ATTRIBUTES = (
    "SOPClassUID", "Modality", "ImageType", "PresentationIntentType", "PatientAge", "PatientBirthDate", "PatientSex",
    "StudyDate", "SeriesDate", "AcquisitionDate", "BodyPartExamined", "ViewPosition", "ViewCodeSequence",
    "ViewModifierCodeSequence", "PatientOrientation", "EstimatedRadiographicMagnificationFactor", "ImageLaterality",
    "Laterality", "PixelSpacing", "ImagerPixelSpacing", "Rows", "Columns",
)


def _default_max_matrix(modalities: tuple[str, ...]) -> tuple[int, int] | None:
    """The largest matrix of a bundle that names none: the largest of its modalities' defaults, when each has one."""
    found = [_LARGEST_MATRIX.get(modality) for modality in modalities]
    if not found or any(matrix is None for matrix in found):
        return None
    return max(matrix for matrix in found if matrix is not None)


def _bounds(raw: Any) -> tuple[float | None, float | None]:
    if raw is None:
        return None, None
    low, high = raw
    return (None if low is None else float(low)), (None if high is None else float(high))


def _upper(values: Any) -> tuple[str, ...]:
    return tuple(str(v).upper() for v in values or ())


@dataclass(frozen=True)
class IntendedUse:
    """What a version was validated on; bounds are inclusive, ``None`` means unbounded."""

    summary: str
    modalities: tuple[str, ...] = ()
    body_parts: tuple[str, ...] = ()
    view_positions: tuple[str, ...] = ()
    age_years: tuple[float | None, float | None] = (None, None)  # completed years
    sexes: tuple[str, ...] = ()
    pixel_spacing_mm: tuple[float | None, float | None] = (None, None)
    min_matrix: tuple[int, int] | None = None  # (rows, columns)
    max_matrix: tuple[int, int] | None = None  # (rows, columns)
    laterality_required: bool = False

    @classmethod
    def from_bundle(cls, bundle: dict[str, Any]) -> IntendedUse | None:
        raw = bundle.get("intended_use")
        if not raw:
            return None
        matrix = raw.get("min_matrix")
        largest = raw.get("max_matrix") or _default_max_matrix(_upper(raw.get("modalities")))
        return cls(
            summary=str(raw.get("summary", "")),
            modalities=_upper(raw.get("modalities")),
            body_parts=_upper(raw.get("body_parts")),
            view_positions=_upper(raw.get("view_positions")),
            age_years=_bounds(raw.get("age_years")),
            sexes=_upper(raw.get("sexes")),
            pixel_spacing_mm=_bounds(raw.get("pixel_spacing_mm")),
            min_matrix=(int(matrix[0]), int(matrix[1])) if matrix else None,
            max_matrix=(int(largest[0]), int(largest[1])) if largest else None,
            laterality_required=bool(raw.get("laterality_required", False)),
        )

    def describe_age(self) -> str:
        low, high = self.age_years
        if low is not None and high is not None:
            return f"{low:g}-{high:g} y"
        return f"{low:g} y and older" if low is not None else f"up to {high:g} y"


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip().upper()


def patient_age_years(ds: Any) -> float | None:
    """The patient's age in years at the study, from PatientAge or the birth date; None when unknown."""
    match = _AGE.match(_text(ds, "PatientAge"))
    if match is not None:
        return int(match.group(1)) * _DAYS_PER[match.group(2)] / 365.25
    born, seen = _birth_and_study_dates(ds)
    if born is None or seen is None or seen < born:
        return None
    # Completed years as the calendar counts them, plus the share of the year since the last birthday: days / 365.25
    # made a child filmed on the 1st birthday "12 months" (refused) and one filmed on the 6th birthday 5.999 (scored
    # outside 1-5 y), whenever a 29 February fell between.
    years = seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day))
    last, following = _birthday(born, years), _birthday(born, years + 1)
    return years + (seen - last).days / (following - last).days


def _birth_and_study_dates(ds: Any) -> tuple[date | None, date | None]:
    born = dicom_date(_text(ds, "PatientBirthDate"))
    seen = next((d for d in (dicom_date(_text(ds, k)) for k in ("StudyDate", "SeriesDate", "AcquisitionDate")) if d), None)
    return born, seen


def _why_age_unknown(ds: Any) -> str:
    """What the header lacks for an age, or what is wrong with it: a birth date after the study (a mistyped birth
    year, another patient's record merged in) had been reported as no birth date at all."""
    born, seen = _birth_and_study_dates(ds)
    if born is not None and seen is not None and seen < born:
        return f"birth date {born.isoformat()} is after the study date {seen.isoformat()}"
    return "no PatientAge, no PatientBirthDate with StudyDate"


def _birthday(born: date, years: int) -> date:
    """The birthday ``years`` after birth; one born on 29 February has it on 1 March in other years (as
    ``quality.metrics.age_band`` and screening count)."""
    try:
        return born.replace(year=born.year + years)
    except ValueError:
        return date(born.year + years, 3, 1)


def _spacing(ds: Any) -> tuple[float, ...] | None:
    """Every value of PixelSpacing (else ImagerPixelSpacing): the row and the column spacing."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            if value is not None and len(value) >= 1:
                return tuple(float(v) for v in value)
        except (TypeError, ValueError):
            continue
    return None


def _image_problem(ds: Any, use: IntendedUse) -> str | None:
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if use.min_matrix is not None and (rows < use.min_matrix[0] or columns < use.min_matrix[1]):
        return f"image of {columns}x{rows} pixels; at least {use.min_matrix[1]}x{use.min_matrix[0]} needed"
    if use.max_matrix is not None and (rows > use.max_matrix[0] or columns > use.max_matrix[1]):
        return f"image of {columns}x{rows} pixels; at most {use.max_matrix[1]}x{use.max_matrix[0]}"
    spacings = _spacing(ds)
    low, high = use.pixel_spacing_mm
    # Both values: the smaller alone was checked, and 0.5\1000 mm passed as 0.5 mm (the CT search grid is sized
    # from each, and took gigabytes).
    for spacing in spacings or ():
        if (low is not None and spacing < low) or (high is not None and spacing > high):
            return f"pixel spacing {spacing:g} mm outside {low:g}-{high:g} mm" if low is not None and high is not None \
                else f"pixel spacing {spacing:g} mm out of range"
    if spacings and min(spacings) > 0 and max(spacings) / min(spacings) > MAX_PIXEL_ASPECT:
        shown = "x".join(f"{v:g}" for v in spacings)
        return f"pixel spacing {shown} mm: pixels far from square (validated on square pixels)"
    body_part = _text(ds, "BodyPartExamined")
    body_part = _BODY_PART_SPELLINGS.get(body_part, body_part)
    if use.body_parts and body_part and body_part not in use.body_parts:
        return f"body part {body_part}; validated for {', '.join(use.body_parts)}"
    if use.laterality_required and not (_text(ds, "ImageLaterality") or _text(ds, "Laterality")):
        return "image without laterality (ImageLaterality/Laterality)"
    return None


def _codes(items: Any) -> list[tuple[str, str]]:
    """(code value, upper-case meaning) of each item of a code sequence; [] when absent or empty."""
    return [(str(item.get("CodeValue", "") or "").strip(), str(item.get("CodeMeaning", "") or "").strip().upper())
            for item in items or ()]


def _view_items(ds: Any) -> list[Any]:
    return list(ds.get("ViewCodeSequence") or ())


def view_of(ds: Any) -> str:
    """The image's view as a ViewPosition defined term (``PA``, ``LL``, ``CC``...), or "" when nothing states one.

    ViewPosition first; when it is empty (Type 2: many CR/DX systems leave it so), the View Code Sequence; then, for a
    radiograph, PatientOrientation: rows running to the patient's left or right with columns to the feet or head is
    a frontal film (PA or AP cannot be told apart, so "" as today), an anterior or posterior direction is a lateral or
    an oblique (``LATERAL``). A lateral film whose ViewPosition was empty had passed as frontal and set the score.
    """
    position = _text(ds, "ViewPosition")
    if position:
        return position
    for code, meaning in _codes(_view_items(ds)):
        if code or meaning:
            return _VIEW_CODES.get(code, meaning or code)
    orientation = ds.get("PatientOrientation")
    if _text(ds, "Modality") in ("CR", "DX") and orientation:
        letters = set("".join(str(v) for v in (orientation if not isinstance(orientation, str) else [orientation])).upper())
        if letters & {"A", "P"}:
            return "LATERAL"
    return ""


def _workup_view(ds: Any) -> str | None:
    """Why the image is a spot or magnification view (DICOM says so in View Modifier Code Sequence, CID 4015, while
    ViewPosition stays CC or MLO), or None."""
    modifiers = list(ds.get("ViewModifierCodeSequence") or ())
    for item in _view_items(ds):
        modifiers.extend(item.get("ViewModifierCodeSequence") or ())
    for code, meaning in _codes(modifiers):
        found = _WORKUP_MODIFIERS.get(code) or next(
            (name for word, name in (("SPOT", "spot compression"), ("MAGNIF", "magnification")) if word in meaning), None
        )
        if found:
            return f"a {found} view (View Modifier {code or meaning})"
    if _text(ds, "Modality") == "MG":
        try:
            factor = float(ds.get("EstimatedRadiographicMagnificationFactor") or 0)
        except (TypeError, ValueError):
            factor = 0.0
        if factor > MAX_MAMMOGRAPHY_MAGNIFICATION:
            return f"a magnification view (estimated magnification {factor:g})"
    return None


def is_acquisition(ds: Any) -> bool:
    """False for an image made from another (ImageType DERIVED\\SECONDARY: a post-processed copy, another product's
    output) and for a Secondary Capture; such an image is not the film the model learnt to read."""
    raw = ds.get("ImageType") or ()
    image_type = [str(v).strip().upper() for v in (raw.split("\\") if isinstance(raw, str) else raw)]
    if image_type[:2] == ["DERIVED", "SECONDARY"]:
        return False
    return not str(ds.get("SOPClassUID", "")).startswith(SECONDARY_CAPTURE)


def attributes_differing(stored: Any, received: Any) -> list[str]:
    """The :data:`INTENDED_USE_ATTRIBUTES` whose values differ between two copies of one instance."""
    return [keyword for keyword in INTENDED_USE_ATTRIBUTES if stored.get(keyword) != received.get(keyword)]


def _for_processing(ds: Any) -> bool:
    return str(ds.get("SOPClassUID", "")) in _FOR_PROCESSING_CLASSES or _text(ds, "PresentationIntentType") == (
        "FOR PROCESSING"
    )


def check_intended_use(use: IntendedUse, datasets: Sequence[Any], model: str) -> list[Any]:
    """The images of the study inside ``use``: the only ones its scorer may see (``scorers.score_study``).

    Raises :class:`OutOfScope` with a reader's reason when the study is outside ``use``; ``model`` names the
    version in the reason (``chest-xray v1``). Images of another modality, of a view the bundle does not list (a
    lateral film, by ViewPosition or, when that is empty, by :func:`view_of`) or of a spot or magnification view
    (View Modifier Code Sequence, a mammogram's estimated magnification) are left out, not checked: they are never
    scored. So are For Processing (raw detector) images when the study has For Presentation ones, and derived
    images and Secondary Captures (:func:`is_acquisition`) when it has acquired ones; a study with only raw images
    is out of scope, as every version was validated on images processed for reading.
    """
    images = [ds for ds in datasets if not use.modalities or _text(ds, "Modality") in use.modalities]
    if not images:
        found = sorted({_text(ds, "Modality") for ds in datasets})
        raise OutOfScope(f"modality {', '.join(found) or 'unknown'}; {model} is validated for {', '.join(use.modalities)}")
    # A DR system often sends the raw image beside the processed one; the raw one looks like nothing the
    # model learnt from, and the study's score is its most suspicious image's.
    presentation = [ds for ds in images if not _for_processing(ds)]
    if not presentation:
        raise OutOfScope(
            f"only For Processing (raw detector) images; {model} is validated on For Presentation images only"
        )
    # A post-processed copy (an inverted "black bone" film) or another product's overlay beside the film it was
    # made from: scored too, the higher of the two set the study's score and a negative study was raised.
    acquired = [ds for ds in presentation if is_acquisition(ds)]
    images = acquired or presentation
    if use.view_positions:
        # An image with no view information at all is left to assembly; a view that is not listed is left out.
        images = [ds for ds in images if view_of(ds) in (*use.view_positions, "")]
        if not images:
            raise OutOfScope(f"no {'/'.join(use.view_positions)} view; {model} is validated for those views only")
    # A spot or magnification view keeps ViewPosition CC or MLO: only its modifier or its magnification tells.
    screening = [ds for ds in images if _workup_view(ds) is None]
    if not screening:
        raise OutOfScope(f"only {_workup_view(images[0])}; {model} is validated for {use.summary or 'other views'}")
    images = screening
    first = images[0]
    if use.age_years != (None, None):
        age = patient_age_years(first)
        if age is None:
            raise OutOfScope(
                f"patient age unknown ({_why_age_unknown(first)}); {model} is validated for "
                f"{use.describe_age()} only"
            )
        low, high = use.age_years
        years = math.floor(age + 1e-9)
        if (low is not None and years < low) or (high is not None and years > high):
            shown = f"{years} y" if years >= 1 else f"{math.floor(age * 12 + 1e-9)} months"
            raise OutOfScope(f"patient {shown}; {model} is validated for {use.describe_age()}")
    sex = _text(first, "PatientSex")
    if use.sexes and sex not in use.sexes:
        raise OutOfScope(f"patient sex {sex or 'unknown'}; {model} is validated for {', '.join(use.sexes)}")
    # Conservative: one image outside the bounds (a thumbnail among full views) keeps the whole study unscored.
    problems = [problem for ds in images if (problem := _image_problem(ds, use)) is not None]
    if problems:
        raise OutOfScope(f"{problems[0]}; {model} is validated for {use.summary or 'another population'}")
    return images
