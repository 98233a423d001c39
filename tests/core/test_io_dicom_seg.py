"""DICOM-SEG out and in (highdicom) on the sample CT series: references, segment labels and
colours, voxel-exact read-back on the series grid, SEG files routed (not stacked as images),
overlap, fallbacks and refusals, and ``attnseg predict DICOM_DIR -o result.dcm``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_attnseg.errors import AttnsegError
from napari_attnseg.io import list_series, read_volume, write_volume

hd = pytest.importorskip("highdicom")

ROOT = Path(__file__).resolve().parents[2]
CT_DICOM = ROOT / "sample_data" / "ct_dicom"
PROV = {"label_names": {"0": "background", "1": "organ", "2": "lesion"},
        "label_colors": {"1": "#c83232", "2": "#3232c8"}, "model_name": "ct-phantom-2d"}


@pytest.fixture(scope="module")
def ct():
    return read_volume(CT_DICOM)


def _labels(shape):
    lab = np.zeros(shape, np.uint8)
    lab[4:16, 30:90, 35:95] = 1
    lab[8:12, 50:62, 50:64] = 2
    return lab


@pytest.fixture
def study(tmp_path, ct):
    """A copy of the series with a SEG written beside it (as a PACS export lays them out)."""
    folder = tmp_path / "study"
    shutil.copytree(CT_DICOM, folder / "ct")
    lab = _labels(ct.shape)
    seg = write_volume(ct.with_data(lab, is_labels=True), folder / "seg.dcm", provenance=PROV)
    return folder, seg, lab


def test_seg_references_the_source_and_names_segments(study, ct):
    _, seg_path, lab = study
    seg = hd.seg.segread(str(seg_path))
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert [d.SegmentLabel for d in seg.SegmentSequence] == ["organ", "lesion"]
    refs = {r.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence
            for r in s.ReferencedInstanceSequence}
    assert refs == set(ct.header["sop_instance_uids"])
    assert len(seg.PerFrameFunctionalGroupsSequence) == 12 + 4  # empty frames omitted
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct.header["series_uid"]
    assert seg.StudyInstanceUID == ct.header["study_uid"]
    rgb = hd.color.CIELabColor.from_dicom_value(
        list(seg.SegmentSequence[0].RecommendedDisplayCIELabValue)).to_rgb(clip=True)
    assert np.abs(np.subtract(rgb, (200, 50, 50))).max() <= 1
    pixels = seg.get_pixels_by_source_instance(ct.header["sop_instance_uids"],
                                               combine_segments=True,
                                               assert_missing_frames_are_empty=True)
    assert np.array_equal(pixels, lab)
    side = json.loads(seg_path.with_suffix(".json").read_text())
    assert side["format"] == "dicom-seg" and side["labels"][1]["name"] == "lesion"


def test_seg_reads_back_on_the_series_grid(study, ct):
    _, seg_path, lab = study
    back = read_volume(seg_path)
    assert back.is_labels and back.header["format"] == "dicom-seg"
    assert np.array_equal(back.data, lab)
    assert back.same_grid(ct)
    assert back.metadata["label_names"] == {"1": "organ", "2": "lesion"}
    assert back.metadata["label_colors"]["2"] in ("#3232c8", "#3232c7", "#3332c8")


def test_folder_with_a_seg_reads_the_image_series_not_a_duplicate_slice_error(study, ct):
    folder, seg_path, _ = study
    shutil.copy(seg_path, folder / "ct" / "zz_seg.dcm")
    vol = read_volume(folder / "ct")
    assert not vol.is_labels and vol.shape == ct.shape
    assert [s.uid for s in list_series(folder / "ct")] == [ct.header["series_uid"]]


def test_non_consecutive_label_values_survive(tmp_path, ct):
    shutil.copytree(CT_DICOM, tmp_path / "ct")
    lab = np.zeros(ct.shape, np.uint8)
    lab[3:6, 10:20, 10:20] = 7
    lab[10:12, 40:50, 40:50] = 3
    out = write_volume(ct.with_data(lab, is_labels=True), tmp_path / "s.dcm",
                       provenance={"label_names": {"3": "left", "7": "right"}})
    back = read_volume(out)
    assert np.array_equal(back.data, lab)
    assert back.metadata["label_names"] == {"3": "left", "7": "right"}


def test_empty_result_is_a_valid_seg(tmp_path, ct):
    shutil.copytree(CT_DICOM, tmp_path / "ct")
    lab = np.zeros(ct.shape, np.uint8)
    out = write_volume(ct.with_data(lab, is_labels=True), tmp_path / "e.dcm", provenance=PROV)
    back = read_volume(out)
    assert not back.data.any() and back.same_grid(ct)


def test_overlapping_segments_open_as_layers(tmp_path, ct):
    from pydicom.sr.codedict import codes

    from napari_attnseg.io.dicom_seg import read_dicom_seg_layers

    shutil.copytree(CT_DICOM, tmp_path / "ct")
    files = ct.header["frame_files"]
    import pydicom

    sources = [pydicom.dcmread(f.replace(str(CT_DICOM), str(tmp_path / "ct"))) for f in files]
    for ds in sources:
        for key in ("PatientBirthDate", "PatientSex", "StudyTime", "ReferringPhysicianName",
                    "StudyID", "AccessionNumber"):
            setattr(ds, key, "")
    masks = np.zeros(ct.shape + (2,), bool)
    masks[2:10, 20:60, 20:60, 0] = True
    masks[6:14, 40:80, 40:80, 1] = True  # overlaps segment 1
    algo = hd.AlgorithmIdentificationSequence(name="test", version="1",
                                              family=codes.DCM.ArtificialIntelligence)
    descs = [hd.seg.SegmentDescription(i + 1, name, codes.SCT.Tissue, codes.SCT.Tissue,
                                       "AUTOMATIC", algo) for i, name in enumerate(["a", "b"])]
    seg = hd.seg.Segmentation(sources, masks, "BINARY", descs, hd.UID(), 5, hd.UID(), 1,
                              "other tool", "m", "1", "0")
    seg.save_as(str(tmp_path / "overlap.dcm"))
    layers = read_dicom_seg_layers(tmp_path / "overlap.dcm")
    assert len(layers) == 2
    assert np.array_equal(layers[0].data == 1, masks[..., 0])
    assert np.array_equal(layers[1].data == 2, masks[..., 1])
    assert layers[1].metadata["label_names"] == {"2": "b"}
    one = read_volume(tmp_path / "overlap.dcm")
    overlap = int(np.count_nonzero(masks[..., 0] & masks[..., 1]))
    assert any(f"{overlap} voxels" in w for w in one.warnings)


def test_seg_without_its_series_uses_its_own_frames_with_a_warning(study, tmp_path, ct):
    _, seg_path, lab = study
    alone = tmp_path / "elsewhere" / "alone"
    alone.mkdir(parents=True)
    shutil.copy(seg_path, alone / "seg.dcm")
    vol = read_volume(alone / "seg.dcm")
    assert any("was not found" in w for w in vol.warnings)
    assert vol.shape[1:] == ct.shape[1:] and int(vol.data.sum()) == int(lab.sum())
    assert np.allclose(vol.spacing, ct.spacing, atol=1e-4)


def test_nifti_sourced_result_is_refused_with_a_fix(tmp_path):
    vol = read_volume(ROOT / "sample_data" / "ct_phantom_labels.nii.gz")
    with pytest.raises(AttnsegError, match="save it as .nii.gz or .seg.nrrd"):
        write_volume(vol, tmp_path / "x.dcm")
    assert list(tmp_path.iterdir()) == []


def test_predict_cli_writes_a_dicom_seg(tmp_path, ct):
    from napari_attnseg.cli import main

    shutil.copytree(CT_DICOM, tmp_path / "ct")
    out = tmp_path / "result.dcm"
    assert main(["predict", str(tmp_path / "ct"), "-o", str(out), "-q"]) == 0
    seg = hd.seg.segread(str(out))
    assert {d.SegmentLabel for d in seg.SegmentSequence} <= {"organ", "lesion"}
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    back = read_volume(out)
    assert back.same_grid(ct) and back.data.any()


def test_list_series_of_a_seg_file_describes_its_segments(study, ct):
    _, seg_path, _ = study
    (info,) = list_series(seg_path)
    assert info.modality == "SEG" and info.shape == ct.shape
    assert info.description == "DICOM-SEG: organ, lesion"
