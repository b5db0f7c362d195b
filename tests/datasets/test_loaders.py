"""Readers of each source on real files: Kermany, NIH, MIAS, LIDC, and the patient-level split."""

from __future__ import annotations

import numpy as np
import pytest

from datasets.chest_xray import kermany_patient_id, load_kermany, load_nih1000
from datasets.ct_candidates import extract_patches, find_candidates
from datasets.lidc import load_lidc, nodule_centres, parse_lidc_xml
from datasets.mias import load_mias, parse_info, read_film
from datasets.splits import patient_split
from tests.conftest import FIXTURES

DATA = FIXTURES / "datasets"


@pytest.mark.parametrize(
    ("name", "patient"),
    [
        ("person1000_bacteria_2931.jpeg", "person1000"),
        ("person1000_virus_1681.jpeg", "person1000"),
        ("IM-0115-0001.jpeg", "IM-0115"),
        ("NORMAL2-IM-0383-0001.jpeg", "NORMAL2-IM-0383"),
    ],
)
def test_kermany_patient_ids_come_from_file_names(name: str, patient: str) -> None:
    assert kermany_patient_id(name) == patient


def test_kermany_loader_labels_folders() -> None:
    items = load_kermany(DATA / "kermany")
    assert sum(i.label == 0 for i in items) == 4 and sum(i.label == 1 for i in items) == 4
    assert {i.patient_id for i in items if i.label == 1} == {"person1000", "person1001", "person1002"}


def test_nih_loader_reads_both_splits() -> None:
    items = load_nih1000(DATA / "nih1000")
    assert len(items) == 8
    assert {i.split for i in items} == {"train", "valid"}
    assert all(len(i.patient_id) == 8 for i in items)


def test_patient_split_keeps_each_patient_on_one_side_and_is_seeded() -> None:
    patients = [f"p{i // 3}" for i in range(60)]
    labels = [int(i // 3 % 4 == 0) for i in range(60)]
    train, val = patient_split(patients, labels, 0.25, seed=1)
    assert not {patients[i] for i in train} & {patients[i] for i in val}
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(60))
    assert any(labels[i] for i in val) and not all(labels[i] for i in val)
    again = patient_split(patients, labels, 0.25, seed=1)
    assert np.array_equal(again[1], val)


def test_mias_info_rows_and_coordinates() -> None:
    info = parse_info(DATA / "mias" / "Info.txt")
    background, findings = info["mdb005"]
    assert background == "F" and len(findings) == 2
    assert findings[0].col == 477 and findings[0].row == 1023 - 133  # Info.txt origin is bottom-left
    assert info["mdb059"][1][0].row is None  # a finding without a centre stays a finding
    assert info["mdb003"][1] == []


def test_mias_loader_pairs_films_by_patient() -> None:
    films = load_mias(DATA / "mias")
    assert [f.refnum for f in films] == ["mdb001", "mdb002", "mdb003"]
    assert films[0].patient_id == films[1].patient_id != films[2].patient_id
    assert films[0].suspicious == 1 and films[0].malignant == 0 and films[2].suspicious == 0
    image = read_film(films[0])
    assert image.pixels.shape == (1024, 1024) and image.spacing_mm == (0.2, 0.2)


def test_lidc_reader_xml_and_slices() -> None:
    (case,) = load_lidc(DATA / "lidc")
    assert case.patient_id == "LIDC-IDRI-0001"
    reads = parse_lidc_xml(next((DATA / "lidc" / "full").rglob("*.xml")))
    assert len(reads) == 4 and {r.malignancy for r in reads} == {4, 5}
    volume = case.volume()
    assert volume.hu.shape == (3, 512, 512)
    assert volume.z_positions == (-120.0, -117.5, -115.0)
    assert volume.hu.min() < -900 and volume.hu.max() > 100  # HU after rescale, not raw values
    marks = nodule_centres(case, volume)
    assert marks and all(0 <= s < 3 for s, *_ in marks)


def test_candidates_cover_the_nodule_and_patches_are_model_ready() -> None:
    (case,) = load_lidc(DATA / "lidc")
    volume = case.volume()
    candidates = find_candidates(volume)
    _, row, col, radius, _ = nodule_centres(case, volume)[0]
    assert any(np.hypot(c.row - row, c.col - col) <= radius + 4 for c in candidates)
    patches = extract_patches(volume, candidates)
    assert patches.shape == (len(candidates), 3, 32, 32) and patches.dtype == np.float32
    assert 0.0 <= patches.min() and patches.max() <= 1.0


@pytest.mark.integration
def test_shared_data_sources_split_by_patient(shared_data) -> None:
    items = load_kermany(shared_data / "chest-xray" / "kermany")
    assert (sum(i.label == 0 for i in items), sum(i.label == 1 for i in items)) == (1341, 3875)
    train, val = patient_split([i.patient_id for i in items], [i.label for i in items], 0.2, seed=0)
    assert not {items[i].patient_id for i in train} & {items[i].patient_id for i in val}
    films = load_mias(shared_data / "mammography" / "mias")
    assert len(films) == 170 and sum(f.suspicious for f in films) == 62 and sum(f.malignant for f in films) == 29
    assert len({f.patient_id for f in films}) == 85
    assert len(load_nih1000(shared_data / "chest-xray" / "nih1000")) == 800
    assert [c.patient_id for c in load_lidc(shared_data / "ct" / "lidc")] == ["LIDC-IDRI-0001", "LIDC-IDRI-0002", "LIDC-IDRI-0003"]


def test_generic_dicom_folder_with_labels_csv(tmp_path) -> None:
    import shutil

    import pydicom

    from datasets.dicom_folder import load_dicom_folder
    from datasets.errors import LabelsError

    folder = tmp_path / "export"
    folder.mkdir()
    for index, source in enumerate(sorted((DATA / "lidc" / "small").rglob("*.dcm"))):
        shutil.copy(source, folder / f"IMG{index:04d}")  # PACS exports often have no suffix
    shutil.copy(DATA / "dicom" / "CT_small.dcm", folder / "other")
    uid = pydicom.dcmread(next(folder.glob("IMG*"))).StudyInstanceUID
    labels = tmp_path / "labels.csv"
    labels.write_text(f"StudyInstanceUID,label\n{uid},1\n1.2.3.404,0\n")
    (study,) = load_dicom_folder(folder, labels)
    assert study.label == 1 and study.modality == "CT" and study.patient_id == "LIDC-IDRI-0001"
    assert sum(len(files) for files in study.series.values()) == 3
    labels.write_text("StudyInstanceUID,label\n1.2.3,yes\n")
    with pytest.raises(LabelsError):
        load_dicom_folder(folder, labels)


def test_one_folder_reader_groups_studies_and_series(tmp_path) -> None:
    import shutil

    import pydicom

    from datasets.dicom_folder import dicom_files, group_into_studies

    folder = tmp_path / "export"
    (folder / "nested").mkdir(parents=True)
    lidc = sorted((DATA / "lidc" / "small").rglob("*.dcm"))
    for index, source in enumerate(lidc):
        shutil.copy(source, folder / "nested" / f"IMG{index:04d}")
    shutil.copy(DATA / "dicom" / "CT_small.dcm", folder / "other")
    (folder / "notes.txt").write_text("not DICOM")

    def header(path):
        try:
            return pydicom.dcmread(path, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:
            return None

    files = list(dicom_files([folder]))
    assert len(files) == len(lidc) + 2  # every file, found by content later, not by suffix
    studies = group_into_studies(files, header, lambda ds: (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)))
    assert len(studies) == 2
    lidc_study = next(s for s in studies if len(s.paths) == len(lidc))
    assert set(lidc_study.series) == set(lidc_study.headers)
    with pytest.raises(FileNotFoundError):
        list(dicom_files([tmp_path / "missing"]))


def test_slices_are_ordered_along_the_normal_not_by_instance_number() -> None:
    from pydicom.dataset import Dataset

    from datasets.dicom_series import is_axial, slice_position, sorted_slices

    def slice_at(z: float, number: int, orientation=(1, 0, 0, 0, 1, 0)) -> Dataset:
        ds = Dataset()
        ds.ImageOrientationPatient = list(orientation)
        ds.ImagePositionPatient = [0.0, 0.0, z]
        ds.InstanceNumber = number
        return ds

    # The scanner numbered the slices head to foot while z rises: the order follows z, not the number.
    slices = [slice_at(z, n) for n, z in enumerate([30.0, 10.0, 20.0], start=1)]
    assert [ds.ImagePositionPatient[2] for ds in sorted_slices(slices)] == [10.0, 20.0, 30.0]
    assert slice_position(slices[0]) == 30.0 and is_axial(slices[0])
    assert not is_axial(slice_at(0.0, 1, orientation=(0, 1, 0, 0, 0, -1)))  # sagittal
