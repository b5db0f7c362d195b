"""Reader for mini-MIAS mammograms: films (PGM or lossless PNG) and ``Info.txt`` findings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.errors import LabelsError
from datasets.preprocess import ImageArray, read_image_file

__all__ = ["MiasFinding", "MiasFilm", "parse_info", "load_mias", "read_film", "MIAS_PIXEL_MM", "MIAS_SIZE"]

MIAS_PIXEL_MM = 0.2
MIAS_SIZE = 1024


@dataclass(frozen=True)
class MiasFinding:
    """One annotated abnormality; ``row``/``col`` are top-left-origin pixel indices (Info.txt is bottom-left)."""

    kind: str  # CALC CIRC SPIC MISC ARCH ASYM
    severity: str  # B or M
    row: int | None
    col: int | None
    radius: float | None


@dataclass(frozen=True)
class MiasFilm:
    refnum: str
    path: Path
    background: str  # F fatty, G fatty-glandular, D dense-glandular
    findings: tuple[MiasFinding, ...]

    @property
    def patient_id(self) -> str:
        # Left and right films of one woman are consecutive numbers: mdb001+mdb002 = patient 1.
        return f"mias-{(int(self.refnum[3:]) + 1) // 2:03d}"

    @property
    def suspicious(self) -> int:
        return int(bool(self.findings))

    @property
    def malignant(self) -> int:
        return int(any(f.severity == "M" for f in self.findings))


def parse_info(info_path: Path) -> dict[str, tuple[str, list[MiasFinding]]]:
    """``REFNUM BG CLASS [SEVERITY X Y RADIUS]`` rows -> {refnum: (background, findings)}.

    Some rows lack a centre (diffuse calcifications: ``* NOTE 3``); they keep the finding without
    a position so the film still counts as abnormal.
    """
    if not Path(info_path).is_file():
        raise LabelsError(f"{info_path} is missing")
    films: dict[str, tuple[str, list[MiasFinding]]] = {}
    for line in Path(info_path).read_text(errors="replace").splitlines():
        parts = line.split()
        if not parts or not parts[0].startswith("mdb") or len(parts) < 3:
            continue
        refnum, background, kind = parts[0], parts[1], parts[2]
        entry = films.setdefault(refnum, (background, []))
        if kind == "NORM":
            continue
        severity = parts[3] if len(parts) > 3 else "B"
        row = col = radius = None
        if len(parts) >= 7 and parts[4].isdigit() and parts[5].isdigit():
            col = int(parts[4])
            row = MIAS_SIZE - 1 - int(parts[5])
            radius = float(parts[6])
        entry[1].append(MiasFinding(kind, severity, row, col, radius))
    return films


def load_mias(root: Path) -> list[MiasFilm]:
    """Films present under ``root`` (``mdbNNN.png`` or ``.pgm``) joined with ``Info.txt``."""
    root = Path(root)
    info = parse_info(root / "Info.txt")
    films = []
    for path in sorted(p for p in root.iterdir() if p.stem.startswith("mdb") and p.suffix in {".png", ".pgm"}):
        if path.stem not in info:
            raise LabelsError(f"{path.name} has no row in Info.txt")
        background, findings = info[path.stem]
        films.append(MiasFilm(path.stem, path, background, tuple(findings)))
    return films


def read_film(film: MiasFilm) -> ImageArray:
    image = read_image_file(film.path)
    return ImageArray(np.asarray(image.pixels, np.float32), (MIAS_PIXEL_MM, MIAS_PIXEL_MM), True)
