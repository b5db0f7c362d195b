"""The shared data each training task reads, opened through one checked door: a ``--data`` folder that is
missing, empty or laid out otherwise is one :class:`TrainingInputError` naming the path and the layout expected,
which the command line turns into a one-line usage error instead of a reader's (or numpy's) traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from datasets.chest_xray import LabelledImage, load_kermany, load_nih1000
from datasets.errors import DatasetError
from datasets.lidc import LidcCase, load_lidc
from datasets.mias import MiasFilm, load_mias
from training.errors import TrainingInputError

__all__ = [
    "KERMANY_LAYOUT", "NIH1000_LAYOUT", "MIAS_LAYOUT", "LIDC_LAYOUT",
    "require_data_folder", "kermany_images", "nih1000_images", "mias_films", "lidc_cases",
]

KERMANY_LAYOUT = "chest-xray/kermany/[train/]{NORMAL,PNEUMONIA}/*.jpeg"
NIH1000_LAYOUT = "chest-xray/nih1000/{train,valid}/{0_normal,1_abnormal}/*.png"
MIAS_LAYOUT = "mammography/mias/Info.txt and the mdbNNN.png films beside it"
LIDC_LAYOUT = "ct/lidc/small/LIDC-IDRI-*/<study>/<series>/ slices, their reader XML in ct/lidc/full/LIDC-IDRI-*/<study>/<series>/"
SHARED_LAYOUT = "the shared data folder (chest-xray/, mammography/, ct/) or a `medscreen export-training` folder (dicom/ and labels.csv)"

Item = TypeVar("Item")


def require_data_folder(data_dir: Path) -> Path:
    """``data_dir`` when it is a folder; otherwise the error a mistyped ``--data`` deserves."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        state = "is not a folder" if data_dir.exists() else "does not exist"
        raise TrainingInputError(f"--data {data_dir} {state}: expected {SHARED_LAYOUT}")
    return data_dir


def _opened(data_dir: Path, subfolder: str, layout: str, what: str, reader: Callable[[Path], Sequence[Item]]) -> list[Item]:
    root = require_data_folder(data_dir) / subfolder
    try:
        items = list(reader(root))
    except DatasetError as exc:
        raise TrainingInputError(f"--data {data_dir}: {exc}; expected {layout} under it") from exc
    if not items:
        raise TrainingInputError(f"--data {data_dir}: {root} holds no {what}; expected {layout} under it")
    return items


def kermany_images(data_dir: Path) -> list[LabelledImage]:
    return _opened(data_dir, "chest-xray/kermany", KERMANY_LAYOUT, "Kermany film", load_kermany)


def nih1000_images(data_dir: Path) -> list[LabelledImage]:
    return _opened(data_dir, "chest-xray/nih1000", NIH1000_LAYOUT, "NIH film", load_nih1000)


def mias_films(data_dir: Path) -> list[MiasFilm]:
    return _opened(data_dir, "mammography/mias", MIAS_LAYOUT, "MIAS film", load_mias)


def lidc_cases(data_dir: Path) -> list[LidcCase]:
    return _opened(data_dir, "ct/lidc", LIDC_LAYOUT, "LIDC case", load_lidc)
