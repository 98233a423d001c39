"""RTSTRUCT out and in (rt-utils): ROIs named and coloured from the label table, contours in the
right place in mm (checked against the DICOM headers, not the reader), round-trip fidelity on a
real CT (the shared spleen case written as a DICOM series), the referenced series found beside
the file, overlaps, refusals, a missing extra, and ``attnseg predict DICOM -o x.rtstruct.dcm`` /
``attnseg evaluate PRED RTSTRUCT``."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_attnseg.errors import AttnsegError, MissingDependencyError, ReadError, WriteError
from napari_attnseg.io import list_series, read_volume, write_volume


def _need_rt_utils():
    """Skip without importing rt-utils: importing it (its opencv-python) unguarded would set Qt
    plugin variables in this test process; the package's own import guards them."""
    import importlib.util

    if importlib.util.find_spec("rt_utils") is None:
        pytest.skip("rt-utils is not installed (pip install 'napari-attnseg[rtstruct]')")


_need_rt_utils()
pydicom = pytest.importorskip("pydicom")

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("ATTNSEG_DATA", ROOT.parent / "shared" / "data"))
CT_DICOM = ROOT / "sample_data" / "ct_dicom"
SAR_TO_LPS = np.array([[0.0, 0.0, -1.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])  # (S,A,R) -> LPS
NAMES = {"label_names": {"1": "spleen", "2": "body"},
         "label_colors": {"1": "#c83232", "2": "#32a050"}}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * np.count_nonzero(a & b) / max(1, a.sum() + b.sum())


def dicom_series_from(vol, folder: Path, uid: str = "1.2.826.0.1.3680043.8.498.77") -> Path:
    """Single-frame CT files with ``vol``'s voxels and geometry (type-2 patient/study
    attributes left out, as in the sample series)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    aff = vol.affine
    col_dir = SAR_TO_LPS @ aff[:3, 2] / vol.spacing[2]  # along a row: increasing column
    row_dir = SAR_TO_LPS @ aff[:3, 1] / vol.spacing[1]  # down a column: increasing row
    data = np.rint(np.asarray(vol.data)).astype(np.int16)
    for k in range(vol.shape[0]):
        ds = Dataset()
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.Modality = uid, uid + ".1", "CT"
        ds.FrameOfReferenceUID, ds.PatientID, ds.PatientName = uid + ".2", "spleen", "Spleen^CT"
        ds.Rows, ds.Columns = data.shape[1:]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.ImagePositionPatient = [round(float(v), 4)
                                   for v in SAR_TO_LPS @ (aff @ [k, 0, 0, 1])[:3]]
        ds.ImageOrientationPatient = [round(float(v), 6) for v in (*col_dir, *row_dir)]
        ds.PixelSpacing = [round(vol.spacing[1], 6), round(vol.spacing[2], 6)]
        ds.SliceThickness = round(vol.spacing[0], 4)
        ds.InstanceNumber = k + 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = data[k].tobytes()
        ds.save_as(folder / f"ct{k:03d}.dcm", enforce_file_format=True)
    return folder


@pytest.fixture(scope="module")
def spleen(tmp_path_factory):
    """The shared spleen CT as a DICOM series, read back, with the expert mask (1) and a body
    outline (2: above -300 HU outside the spleen; bowel gas and the like left as holes)."""
    src = SHARED_DATA / "ct_spleen"
    if not (src / "image.nii.gz").is_file():
        pytest.skip(f"{src} is absent")
    image, mask = read_volume(src / "image.nii.gz"), read_volume(src / "spleen_mask.nii.gz")
    study = tmp_path_factory.mktemp("spleen_study")
    ct = read_volume(dicom_series_from(image, study / "ct"))
    assert ct.shape == image.shape and np.allclose(ct.affine, image.affine, atol=1e-3)
    assert np.array_equal(ct.data, np.rint(image.data))  # the series is the scan
    lab = np.where(image.data > -300, 2, 0).astype(np.uint8)
    lab[mask.data > 0] = 1
    return study, ct, lab


def _round_trip(study, ct, lab, name, provenance):
    out = write_volume(ct.with_data(lab, is_labels=True), study / f"{name}.rtstruct.dcm",
                       provenance=provenance)
    back = read_volume(out)
    assert back.is_labels and back.header["format"] == "rtstruct" and back.same_grid(ct)
    side = json.loads(out.with_name(f"{name}.rtstruct.json").read_text())
    for i, value in enumerate(v for v in np.unique(lab) if v):
        d = dice(back.data == value, lab == value)
        changed = int(np.count_nonzero((back.data == value) != (lab == value)))
        print(f"{name} label {value}: Dice {d:.5f}, {changed} of {int((lab == value).sum())} "
              "voxels changed")
        assert d >= 0.97
        row = side["round_trip"][i]
        assert row["voxels_changed"] == changed and abs(row["dice"] - d) < 1e-4
    return back


@pytest.mark.shared_data
def test_real_case_round_trip_of_the_expert_mask(spleen):
    study, ct, lab = spleen
    back = _round_trip(study, ct, np.where(lab == 1, 1, 0).astype(np.uint8), "spleen",
                       {"label_names": {"1": "spleen"}, "label_colors": {"1": "#c83232"}})
    assert back.metadata == {"label_names": {"1": "spleen"}, "label_colors": {"1": "#c83232"}}


@pytest.mark.slow
@pytest.mark.shared_data
def test_real_case_round_trip_with_a_holed_body_outline(spleen):
    study, ct, lab = spleen
    back = _round_trip(study, ct, lab, "spleen_body", NAMES)
    assert back.metadata["label_names"] == {"1": "spleen", "2": "body"}
    assert back.metadata["label_colors"] == {"1": "#c83232", "2": "#32a050"}


def test_rois_reference_the_series_with_names_and_colours(tmp_path):
    ct = read_volume(CT_DICOM)
    shutil.copytree(CT_DICOM, tmp_path / "ct")
    ct = read_volume(tmp_path / "ct")
    lab = np.zeros(ct.shape, np.uint8)
    lab[4:16, 30:90, 35:95] = 7
    lab[8:12, 50:62, 50:64] = 3
    out = write_volume(ct.with_data(lab, is_labels=True), tmp_path / "r.rtstruct.dcm",
                       provenance={"label_names": {"3": "lesion", "7": "organ"},
                                   "label_colors": {"3": "#3232c8", "7": "#c83232"}})
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3" and ds.Modality == "RTSTRUCT"
    assert [r.ROIName for r in ds.StructureSetROISequence] == ["lesion", "organ"]
    assert [list(r.ROIDisplayColor) for r in ds.ROIContourSequence] == [[50, 50, 200],
                                                                        [200, 50, 50]]
    series = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0] \
        .RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == ct.header["series_uid"]
    assert ds.StudyInstanceUID == ct.header["study_uid"]
    cited = {c.ContourImageSequence[0].ReferencedSOPInstanceUID
             for rc in ds.ROIContourSequence for c in rc.ContourSequence}
    uids = ct.header["sop_instance_uids"]
    assert cited == set(uids[4:16])  # slices with contours only
    back = read_volume(out)
    assert np.array_equal(back.data, lab)  # boxes: contours are exact
    assert back.metadata["label_names"] == {"3": "lesion", "7": "organ"}


def test_contours_sit_on_the_voxel_centres_in_mm_with_non_square_pixels(tmp_path):
    """The contour of a box passes through its corner voxels' centres, computed here from the
    DICOM headers (IPP + column * dx * row direction + row * dy * column direction), on an
    oblique series with 0.7 x 1.3 mm pixels."""
    from napari_attnseg.volume import volume_from_affine

    t = np.radians(20)
    aff = np.eye(4)
    aff[:3, :3] = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]]) \
        @ np.diag([2.5, 0.7, 1.3])
    aff[:3, 3] = [30.0, -20.0, 10.0]
    folder = dicom_series_from(volume_from_affine(np.zeros((5, 20, 16), np.int16), aff),
                               tmp_path / "s")
    vol = read_volume(folder)
    lab = np.zeros(vol.shape, np.uint8)
    r0, r1, c0, c1 = 3, 12, 2, 9
    lab[2, r0:r1 + 1, c0:c1 + 1] = 1
    out = write_volume(vol.with_data(lab, is_labels=True), tmp_path / "b.rtstruct.dcm")
    ds = pydicom.dcmread(out)
    (contour,) = ds.ROIContourSequence[0].ContourSequence
    pts = np.asarray(contour.ContourData, float).reshape(-1, 3)
    uid = contour.ContourImageSequence[0].ReferencedSOPInstanceUID
    (ref,) = [d for d in map(pydicom.dcmread, sorted(folder.iterdir()))
              if d.SOPInstanceUID == uid]
    assert int(ref.InstanceNumber) == 3  # the third slice
    ipp = np.asarray(ref.ImagePositionPatient, float)
    iop = np.asarray(ref.ImageOrientationPatient, float)
    dy, dx = (float(v) for v in ref.PixelSpacing)  # row spacing, column spacing
    corners = {tuple(np.round(ipp + c * dx * iop[:3] + r * dy * iop[3:], 2))
               for r in (r0, r1) for c in (c0, c1)}
    assert {tuple(p) for p in np.round(pts, 2)} == corners
    assert np.array_equal(read_volume(out).data, lab)


def test_rtstruct_found_beside_its_series_and_in_the_load_table(tmp_path):
    shutil.copytree(CT_DICOM, tmp_path / "study" / "ct")
    ct = read_volume(tmp_path / "study" / "ct")
    lab = np.zeros(ct.shape, np.uint8)
    lab[5:9, 20:60, 20:40] = 1
    (tmp_path / "study" / "rt").mkdir()
    out = write_volume(ct.with_data(lab, is_labels=True), tmp_path / "study" / "rt" /
                       "x.rtstruct.dcm", provenance={"label_names": {"1": "liver"}})
    back = read_volume(out)
    assert np.array_equal(back.data, lab) and back.same_grid(ct)
    (info,) = list_series(out)
    assert info.modality == "RTSTRUCT" and "liver" in info.description
    from napari_attnseg.io.formats_in import read_label_layers

    (layer,) = read_label_layers(out)
    assert layer.is_labels and layer.metadata["label_names"] == {"1": "liver"}
    # the image series folder still reads as the image, not the RTSTRUCT
    shutil.copy(out, tmp_path / "study" / "ct" / "zz_rt.dcm")
    img = read_volume(tmp_path / "study" / "ct")
    assert not img.is_labels and img.shape == ct.shape


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # rt-utils' own builder, used here
def test_overlapping_rois_later_wins_with_a_warning(tmp_path):
    from napari_attnseg.io.rtstruct import _rt_utils

    RTStructBuilder = _rt_utils().RTStructBuilder

    shutil.copytree(CT_DICOM, tmp_path / "ct")
    for f in (tmp_path / "ct").iterdir():  # rt-utils needs the type-2 study attributes
        ds = pydicom.dcmread(f)
        for key in ("StudyDate", "StudyTime", "StudyID"):
            if key not in ds:
                setattr(ds, key, "")
        ds.save_as(f)
    rt = RTStructBuilder.create_new(str(tmp_path / "ct"))
    ct = read_volume(tmp_path / "ct")
    a = np.zeros(ct.shape, bool)
    b = np.zeros(ct.shape, bool)
    a[6:10, 20:60, 20:60] = True
    b[8:12, 40:80, 40:80] = True
    for m, name in ((a, "first"), (b, "second")):  # rt-utils: (rows, cols, slices)
        rt.add_roi(np.moveaxis(m, 0, -1), name=name)
    rt.save(str(tmp_path / "foreign.dcm"))
    back = read_volume(tmp_path / "foreign.dcm")
    assert back.metadata["label_names"] == {"1": "first", "2": "second"}
    want = np.zeros(ct.shape, np.uint8)
    want[a], want[b] = 1, 2
    assert np.array_equal(back.data, want)
    (msg,) = [w for w in back.warnings if "overlap" in w]
    assert "'first'" in msg and "'second'" in msg and str(int((a & b).sum())) in msg


def test_result_not_from_dicom_is_refused_clearly(tmp_path):
    vol = read_volume(ROOT / "sample_data" / "ct_phantom_labels.nii.gz")
    with pytest.raises(WriteError, match="RTSTRUCT must reference the DICOM image series"):
        write_volume(vol, tmp_path / "x.rtstruct.dcm")
    assert not list(tmp_path.iterdir())


def test_rtstruct_without_its_series_is_a_clear_error(tmp_path):
    shutil.copytree(CT_DICOM, tmp_path / "a" / "ct")
    ct = read_volume(tmp_path / "a" / "ct")
    lab = np.zeros(ct.shape, np.uint8)
    lab[5:7, 10:20, 10:20] = 1
    out = write_volume(ct.with_data(lab, is_labels=True), tmp_path / "a" / "x.rtstruct.dcm")
    (tmp_path / "b" / "alone").mkdir(parents=True)  # nothing in or beside it
    lone = Path(shutil.copy(out, tmp_path / "b" / "alone" / "x.dcm"))
    with pytest.raises(ReadError, match="series .* was not found") as err:
        read_volume(lone)
    assert "x.dcm" in str(err.value)


def test_missing_extra_names_the_install_command(tmp_path, monkeypatch):
    ct = read_volume(CT_DICOM)
    monkeypatch.setitem(sys.modules, "rt_utils", None)
    with pytest.raises(MissingDependencyError, match=r"napari-attnseg\[rtstruct\]"):
        write_volume(ct.with_data(np.zeros(ct.shape, np.uint8), is_labels=True),
                     tmp_path / "x.rtstruct.dcm")


def test_predict_cli_writes_an_rtstruct(tmp_path):
    from napari_attnseg.cli import main

    shutil.copytree(CT_DICOM, tmp_path / "ct")
    out = tmp_path / "pred.rtstruct.dcm"
    assert main(["predict", str(tmp_path / "ct"), "-o", str(out), "--model", "ct-phantom-2d",
                 "-q", "--threads", "1"]) == 0
    ds = pydicom.dcmread(out)
    assert ds.Modality == "RTSTRUCT"
    names = [r.ROIName for r in ds.StructureSetROISequence]
    back = read_volume(out)
    assert names and sorted(back.metadata["label_names"].values()) == sorted(names)
    assert back.data.any() and back.same_grid(read_volume(tmp_path / "ct"))
    assert json.loads(out.with_name("pred.rtstruct.json").read_text())["format"] == "rtstruct"


def test_evaluate_takes_an_rtstruct_as_ground_truth(tmp_path):
    from napari_attnseg.cli import main

    shutil.copytree(CT_DICOM, tmp_path / "ct")
    ct = read_volume(tmp_path / "ct")
    gt = np.zeros(ct.shape, np.uint8)
    gt[6:14, 30:70, 40:80] = 1
    rt = write_volume(ct.with_data(gt, is_labels=True), tmp_path / "gt.rtstruct.dcm",
                      provenance={"label_names": {"1": "organ"}})
    pred = np.zeros(ct.shape, np.uint8)
    pred[8:14, 40:70, 40:90] = 1
    write_volume(ct.with_data(pred, is_labels=True), tmp_path / "pred.nii.gz")
    assert main(["evaluate", str(tmp_path / "pred.nii.gz"), str(rt), "--json",
                 str(tmp_path / "m.json"), "-q", "--no-definitions"]) == 0
    (row,) = json.loads((tmp_path / "m.json").read_text())["rows"]
    want = dice(pred == 1, gt == 1)  # 2 * 6*30*40 / (8*40*40 + 6*30*50)
    assert abs(want - 2 * 7200 / (12800 + 9000)) < 1e-9
    assert row["label"] == 1 and abs(row["dice"] - want) < 1e-4


def test_empty_result_is_a_valid_rtstruct(tmp_path):
    shutil.copytree(CT_DICOM, tmp_path / "ct")
    ct = read_volume(tmp_path / "ct")
    out = write_volume(ct.with_data(np.zeros(ct.shape, np.uint8), is_labels=True),
                       tmp_path / "e.rtstruct.dcm", provenance={"label_names": {"1": "organ"}})
    assert [r.ROIName for r in pydicom.dcmread(out).StructureSetROISequence] == ["organ"]
    back = read_volume(out)
    assert not back.data.any() and back.same_grid(ct)


def test_errors_are_attnseg_errors(tmp_path):
    bad = tmp_path / "bad.rtstruct.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    with pytest.raises(AttnsegError):
        read_volume(bad)


def test_loading_rt_utils_leaves_qt_alone():
    """opencv-python's Qt build (rt-utils' dependency) points QT_QPA_PLATFORM_PLUGIN_PATH at
    its own Qt plugins when cv2 is imported; every napari started from this process afterwards
    (a subprocess inherits the environment) then fails to load Qt's xcb plugin and aborts."""
    import subprocess
    import sys

    _need_rt_utils()
    code = ("import os; {imp}; "
            "print(sorted(k for k in os.environ if k in ('QT_QPA_PLATFORM_PLUGIN_PATH', 'QT_QPA_FONTDIR')))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_QPA_")}
    ours = subprocess.run([sys.executable, "-c", code.format(
        imp="from napari_attnseg.io.rtstruct import _rt_utils; _rt_utils()")],
        capture_output=True, text=True, env=env, timeout=120)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout.strip() == "[]"
    plain = subprocess.run([sys.executable, "-c", code.format(imp="import cv2")],
                           capture_output=True, text=True, env=env, timeout=120)
    if plain.stdout.strip() == "[]":
        pytest.skip("this cv2 build sets no Qt variables (headless): nothing to guard against")
