"""Readers for the chest X-ray sources: Kermany paediatric pneumonia and NIH ChestX-ray14 thumbnails."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from datasets.errors import LabelsError

__all__ = ["LabelledImage", "kermany_patient_id", "load_kermany", "load_nih1000"]

_IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".pgm", ".dcm"}


@dataclass(frozen=True)
class LabelledImage:
    """One image file with its binary label (1 = abnormal) and the patient it belongs to."""

    path: Path
    label: int
    patient_id: str
    split: str = ""


_PERSON = re.compile(r"^(person\d+)_")
_IM = re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+")


def kermany_patient_id(name: str) -> str:
    """Patient of a Kermany file: ``person123_bacteria_456`` -> ``person123``, ``IM-0115-0001`` -> ``IM-0115``.

    The NORMAL2- prefix marks a second numbering series, so ``NORMAL2-IM-0115`` is another child.
    """
    stem = Path(name).stem
    for pattern in (_PERSON, _IM):
        match = pattern.match(stem)
        if match:
            return match.group(1)
    return stem


def load_kermany(root: Path) -> list[LabelledImage]:
    """``root/{NORMAL,PNEUMONIA}/*.jpeg`` (``root`` is the ``train`` folder or its parent)."""
    root = Path(root)
    if (root / "train").is_dir():
        root = root / "train"
    items: list[LabelledImage] = []
    for folder, label in (("NORMAL", 0), ("PNEUMONIA", 1)):
        directory = root / folder
        if not directory.is_dir():
            raise LabelsError(f"{directory} is missing: expected Kermany NORMAL/PNEUMONIA folders")
        for path in sorted(directory.iterdir()):
            if path.suffix.lower() in _IMAGE_SUFFIXES:
                items.append(LabelledImage(path, label, kermany_patient_id(path.name)))
    return items


def load_nih1000(root: Path) -> list[LabelledImage]:
    """``root/{train,valid}/{0_normal,1_abnormal}/*.png``; the patient is the 8-digit prefix of the name."""
    root = Path(root)
    items: list[LabelledImage] = []
    for split in ("train", "valid"):
        for folder, label in (("0_normal", 0), ("1_abnormal", 1)):
            directory = root / split / folder
            if not directory.is_dir():
                raise LabelsError(f"{directory} is missing: expected NIH {split}/{folder}")
            for path in sorted(directory.iterdir()):
                if path.suffix.lower() in _IMAGE_SUFFIXES:
                    items.append(LabelledImage(path, label, path.stem.split("_")[0], split))
    return items
