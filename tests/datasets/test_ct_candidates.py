"""The CT candidate step and patches at fixed physical spacings: the lung mask on a phantom, the 2 mm search
grid against native resolution, and patch planes that lie 2.5 mm apart whatever the slice spacing."""

from __future__ import annotations

import dataclasses

import numpy as np

from datasets.ct_candidates import MAX_BLOB_CANDIDATES, SEARCH_MM, Candidate, extract_patch, find_candidates, lung_mask
from datasets.dicom_series import Volume
from datasets.lidc import load_lidc, nodule_centres
from tests.conftest import FIXTURES


def _phantom(pixel_mm: float, slices: int = 4, inset_mm: float = 2.0,
             slice_mm: float | None = None) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """A chest phantom (soft-tissue body, two air lungs, an 8 mm nodule whose centre lies ``inset_mm`` inside
    the right lung's outer wall, a table below the body) at ``pixel_mm``; returns the volume, the nodule's and
    the table's pixel. The nodule is a cylinder through all slices, or with ``slice_mm`` a sphere centred on
    the middle slice."""
    n = int(round(360 / pixel_mm))
    yy, xx = (np.mgrid[0:n, 0:n] - n / 2) * pixel_mm  # mm from the centre
    plane = np.full((n, n), -1000.0, np.float32)
    plane[(yy / 130) ** 2 + (xx / 165) ** 2 <= 1] = 40.0
    for side in (-1, 1):
        plane[((yy + 5) / 95) ** 2 + ((xx - side * 75) / 60) ** 2 <= 1] = -850.0
    nodule_mm = (-5.0, -75.0 - 60.0 + inset_mm)  # 2 mm: bulging from the pleura
    plane[(yy > 150) & (yy < 160) & (np.abs(xx) < 170)] = 300.0  # the table: dense, outside the body
    pixel = (int(round(nodule_mm[0] / pixel_mm + n / 2)), int(round(nodule_mm[1] / pixel_mm + n / 2)))
    table = (int(round(155 / pixel_mm + n / 2)), n // 2)
    volume = np.repeat(plane[None], slices, axis=0)
    for i in range(slices):
        dz = 0.0 if slice_mm is None else (i - (slices - 1) / 2) * slice_mm
        if dz**2 < 16.0:
            volume[i][np.hypot(yy - nodule_mm[0], xx - nodule_mm[1]) <= np.sqrt(16.0 - dz**2)] = 30.0
    return volume, pixel, table


def test_lung_mask_keeps_a_pleural_nodule_inside_and_the_table_out() -> None:
    for pixel_mm in (0.7, SEARCH_MM):
        hu, nodule, table = _phantom(pixel_mm)
        mask = lung_mask(hu, pixel_mm)
        assert mask[:, nodule[0], nodule[1]].all(), pixel_mm
        assert not mask[:, table[0], table[1]].any() and not mask[:, 0, 0].any()
        lung = (hu[0] == -850.0)
        assert (mask[0] & lung).sum() / lung.sum() > 0.99


def test_candidate_search_on_the_2_mm_grid_finds_the_nodule_at_native_precision() -> None:
    # 15 mm from the wall: a nodule closer than the 12 mm peak window to the denser chest wall is no local maximum.
    hu, nodule, _ = _phantom(0.7, inset_mm=15.0)
    volume = Volume(hu, (2.5, 0.7, 0.7), tuple(float(i) for i in range(len(hu))), tuple(str(i) for i in range(len(hu))))
    candidates = find_candidates(volume)
    on_nodule = [c for c in candidates if np.hypot(c.row - nodule[0], c.col - nodule[1]) <= 2]
    assert {c.slice_index for c in on_nodule} == set(range(len(hu)))  # one per slice
    assert all(abs(c.diameter_mm - 8.0) < 2.0 for c in on_nodule)


def test_fixture_nodule_has_a_candidate_on_every_marked_slice() -> None:
    (case,) = load_lidc(FIXTURES / "datasets" / "lidc")
    volume = case.volume()
    candidates = find_candidates(volume)
    for s, r, c, radius, _ in nodule_centres(case, volume):
        assert any(k.slice_index == s and np.hypot(k.row - r, k.col - c) <= max(radius, 5.0) + 4 for k in candidates)


def test_patch_planes_lie_2_5_mm_apart_whatever_the_slice_spacing() -> None:
    (case,) = load_lidc(FIXTURES / "datasets" / "lidc")
    volume = case.volume()  # 3 slices 2.5 mm apart
    assert volume.spacing_mm[0] == 2.5
    # The same anatomy reconstructed at 1.25 mm: a slice between each pair (linear, as the patch samples).
    thin = np.empty((5, *volume.hu.shape[1:]), np.float32)
    thin[0::2] = volume.hu
    thin[1::2] = (volume.hu[:-1] + volume.hu[1:]) / 2
    thin_volume = dataclasses.replace(volume, hu=thin, spacing_mm=(1.25, *volume.spacing_mm[1:]),
                                      z_positions=tuple(float(i) for i in range(5)), sop_instance_uids=("",) * 5)
    _, row, col, _, _ = nodule_centres(case, volume)[0]
    assert np.allclose(extract_patch(volume, 1, row, col), extract_patch(thin_volume, 2, row, col), atol=1e-5)


def test_a_nodule_bulging_from_the_pleura_is_a_candidate() -> None:
    # An 8 mm sphere 2 mm inside the wall: no density maximum (the chest wall beside it is denser), but a
    # blob against the lungs read as air, on the slices through its middle.
    hu, nodule, _ = _phantom(0.7, slices=9, inset_mm=2.0, slice_mm=1.25)
    volume = Volume(hu, (1.25, 0.7, 0.7), tuple(float(i) for i in range(len(hu))), tuple(str(i) for i in range(len(hu))))
    on_nodule = [c for c in find_candidates(volume, max_blobs=MAX_BLOB_CANDIDATES) if np.hypot(c.row - nodule[0], c.col - nodule[1]) <= 4.0 / 0.7]
    assert {3, 4, 5} <= {c.slice_index for c in on_nodule}
    density_only = find_candidates(volume, max_blobs=0)
    assert not [c for c in density_only if np.hypot(c.row - nodule[0], c.col - nodule[1]) <= 4.0 / 0.7]


def test_ground_glass_nodule_beside_denser_tissue_is_a_candidate() -> None:
    # LIDC-IDRI-0002's nodule (about -600 HU, 11 mm wide, on the diaphragm; the readers rate it 4-5): the four
    # slices where it is widest. It is no local maximum of the smoothed density, which keeps rising into the
    # tissue beside it, but a blob once the tissue outside the lungs reads as air.
    (case,) = load_lidc(FIXTURES / "datasets" / "lidc-ground-glass")
    volume = case.volume()
    marks = nodule_centres(case, volume)
    assert len(marks) >= 8 and all(m[4] >= 4 for m in marks)
    nodule_hu = [volume.hu[s, r - 2 : r + 3, c - 2 : c + 3].mean() for s, r, c, _, _ in marks]
    assert -750 < np.mean(nodule_hu) < -450  # sub-solid, as stated

    def on_mark(candidates: list[Candidate]) -> set[int]:
        return {k.slice_index for k in candidates for s, r, c, radius, _ in marks
                if k.slice_index == s and np.hypot(k.row - r, k.col - c) <= max(radius, 5.0) + 4}

    assert {0, 1} <= on_mark(find_candidates(volume, max_blobs=MAX_BLOB_CANDIDATES))
    assert on_mark(find_candidates(volume, max_blobs=0)) == set()  # the density maxima alone miss it
