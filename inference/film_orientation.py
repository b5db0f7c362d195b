"""A frontal chest film turned to the orientation the chest model learnt: Patient Orientation ``L\\F``, the patient's
right on the viewer's left and the head at the top, as a PA or AP film is hung and as the training films were."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from datasets.preprocess import ImageArray

__all__ = ["frontal_mirror_axes", "mirrored"]


def frontal_mirror_axes(ds: Any) -> tuple[int, ...]:
    """The array axes to mirror so that the film reads ``L\\F``: 1 when its rows run toward the patient's right (``R``),
    0 when its columns run toward the head (``H``); () when the header states neither or no valid orientation.

    Only the leading letter of each direction counts (``RA`` is mostly to the right). A film turned by 90 degrees (rows
    toward the head or feet) is not a mirror and is left as stored."""
    declared = ds.get("PatientOrientation")
    values = (
        [str(v).strip().upper() for v in declared] if declared is not None and not isinstance(declared, str) else []
    )
    if len(values) != 2 or not all(values):
        return ()
    rows, columns = values[0][0], values[1][0]
    if rows not in ("L", "R") or columns not in ("H", "F"):
        return ()
    return tuple(axis for axis, mirror in ((0, columns == "H"), (1, rows == "R")) if mirror)


def mirrored(image: ImageArray, axes: tuple[int, ...]) -> ImageArray:
    """``image`` mirrored along ``axes``, its padding mask with it (the image itself when there is nothing to mirror)."""
    if not axes:
        return image
    padding = None if image.padding is None else np.flip(image.padding, axes)
    return replace(image, pixels=np.flip(image.pixels, axes), padding=padding)
