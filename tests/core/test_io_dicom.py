"""DICOM reading: geometric sorting, rescale, LPS->RAS, spacing problems, bad series."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # noqa: E402

from napari_attnseg.errors import ReadError  # noqa: E402
from napari_attnseg.io import can_read, list_series, read_volume, write_volume  # noqa: E402

LPS_TO_SAR = np.array([[0, 0, 1.0], [0, -1.0, 0], [-1.0, 0, 0]])


def _base(rows, cols, modality="CT", uid=None, desc="synthetic"):
    ds = Dataset()
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = uid or "1.2.3.4"
    ds.StudyInstanceUID = "1.2.3"
    ds.Modality = modality
    ds.SeriesDescription = desc
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    return ds


def pixels(k, rows, cols):
    return (np.arange(rows * cols, dtype=np.uint16).reshape(rows, cols) + 100 * k)


def make_series(folder, n=5, rows=8, cols=6, ps=(0.7, 0.8), step=2.5,
                iop=(1, 0, 0, 0, 1, 0), origin=(-10.0, -20.0, 30.0), slope=1.0,
                intercept=-1024.0, uid="1.2.3.4", modality="CT", positions=None, seed=0,
                desc="synthetic", sizes=None, shift=None):
    """Files named and numbered in a shuffled order; returns the true LPS positions (by k)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    iop = np.asarray(iop, float)
    normal = np.cross(iop[:3], iop[3:])
    names = rng.permutation(n)
    numbers = rng.permutation(n) + 1
    out = []
    for k in range(n):
        r, c = sizes[k] if sizes else (rows, cols)
        ds = _base(r, c, modality, uid, desc)
        pos = (np.asarray(origin) + k * step * normal if positions is None
               else np.asarray(positions[k], float))
        if shift is not None:
            pos = pos + k * np.asarray(shift, float)
        out.append(pos)
        ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in iop]
        ds.PixelSpacing = [ps[0], ps[1]]
        ds.SliceThickness = step
        ds.InstanceNumber = int(numbers[k])
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.PixelData = pixels(k, r, c).tobytes()
        ds.save_as(folder / f"im{names[k]:03d}_{uid[-3:]}.dcm", enforce_file_format=True)
    return np.array(out)


def expected_sar(lps_origin, iop, ps, slice_vec, idx):
    k, r, c = idx
    iop = np.asarray(iop, float)
    lps = lps_origin + k * slice_vec + r * iop[3:] * ps[0] + c * iop[:3] * ps[1]
    return LPS_TO_SAR @ lps


def test_series_sorted_by_position_with_hu(tmp_path):
    pos = make_series(tmp_path / "s", slope=2.0, intercept=-1000.0)
    vol = read_volume(tmp_path / "s")
    assert vol.shape == (5, 8, 6) and vol.data.dtype == np.float32 and vol.modality == "CT"
    for k in range(5):  # slice k holds the image written at position k
        np.testing.assert_array_equal(vol.data[k], pixels(k, 8, 6) * 2.0 - 1000.0)
    np.testing.assert_allclose(vol.spacing, (2.5, 0.7, 0.8))
    for idx in [(0, 0, 0), (4, 7, 5), (2, 3, 1)]:
        want = expected_sar(pos[0], (1, 0, 0, 0, 1, 0), (0.7, 0.8), pos[1] - pos[0], idx)
        np.testing.assert_allclose((vol.affine @ [*idx, 1])[:3], want, atol=1e-6)
    h = vol.header
    assert h["format"] == "dicom" and h["modality"] == "CT" and h["series_uid"] == "1.2.3.4"
    assert h["rescale"] == (2.0, -1000.0) and h["series_description"] == "synthetic"
    assert vol.warnings == ()
    assert vol.orientation_code() == "LPS"


def test_oblique_series_to_nifti_matches_lps_positions(tmp_path):
    a = np.deg2rad(25)
    iop = (np.cos(a), np.sin(a), 0, 0, 0, -1)  # oblique coronal-ish
    pos = make_series(tmp_path / "s", iop=iop, step=3.0, modality="MR", slope=1.0, intercept=0.0)
    vol = read_volume(tmp_path / "s")
    assert vol.modality == "MR" and vol.data.dtype == np.uint16  # no rescale: raw dtype kept
    out = write_volume(vol, tmp_path / "o.nii.gz")
    img = nib.load(str(out))
    slice_vec = pos[1] - pos[0]
    for (k, r, c) in [(0, 0, 0), (4, 7, 5), (1, 2, 3)]:
        ras = img.affine @ [c, r, k, 1]
        iopa = np.asarray(iop)
        lps = pos[0] + k * slice_vec + r * iopa[3:] * 0.7 + c * iopa[:3] * 0.8
        np.testing.assert_allclose(ras[:3], [-lps[0], -lps[1], lps[2]], atol=1e-4)
        assert img.get_fdata()[c, r, k] == vol.data[k, r, c]


def test_uneven_spacing_warns(tmp_path):
    positions = [(0, 0, z) for z in (0.0, 2.0, 4.0, 7.0, 9.0)]
    make_series(tmp_path / "s", positions=positions)
    vol = read_volume(tmp_path / "s")
    assert any("uneven slice spacing" in w for w in vol.warnings)
    assert vol.header["slice_positions_mm"] == [0.0, 2.0, 4.0, 7.0, 9.0]


def test_gantry_tilt_warns_and_keeps_positions(tmp_path):
    pos = make_series(tmp_path / "s", shift=(0, 0.5, 0))  # table offset per slice
    vol = read_volume(tmp_path / "s")
    assert any("gantry tilt" in w for w in vol.warnings)
    np.testing.assert_allclose((vol.affine @ [4, 0, 0, 1])[:3], LPS_TO_SAR @ pos[4], atol=1e-6)


def test_missing_positions_fall_back_to_instance_number(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    for k, num in enumerate([3, 1, 2]):
        ds = _base(4, 4)
        ds.InstanceNumber = num
        ds.SliceThickness = 4.0
        ds.PixelSpacing = [0.5, 0.5]
        ds.PixelData = pixels(num, 4, 4).tobytes()
        ds.save_as(folder / f"f{k}.dcm", enforce_file_format=True)
    vol = read_volume(folder)
    assert any("no ImagePositionPatient" in w for w in vol.warnings)
    for k in range(3):
        np.testing.assert_array_equal(vol.data[k], pixels(k + 1, 4, 4).astype(np.float32))
    np.testing.assert_allclose(vol.spacing, (4.0, 0.5, 0.5))


def test_duplicates_identical_dropped_different_refused(tmp_path):
    make_series(tmp_path / "s", n=3)
    src = sorted((tmp_path / "s").iterdir())[0]
    ds = pydicom.dcmread(src)
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(tmp_path / "s" / "copy.dcm", enforce_file_format=True)
    vol = read_volume(tmp_path / "s")
    assert vol.shape[0] == 3 and any("1 duplicate" in w for w in vol.warnings)
    arr = ds.pixel_array.copy()
    arr[0, 0] += 7
    ds.PixelData = arr.tobytes()
    ds.save_as(tmp_path / "s" / "copy.dcm", enforce_file_format=True)
    with pytest.raises(ReadError, match="duplicate slice position"):
        read_volume(tmp_path / "s")


def test_slices_of_different_sizes_refused(tmp_path):
    make_series(tmp_path / "s", n=3, sizes=[(8, 6), (8, 6), (6, 6)])
    with pytest.raises(ReadError, match=r"differ in size.*8x6.*6x6"):
        read_volume(tmp_path / "s")


def test_several_series(tmp_path):
    make_series(tmp_path / "d" / "a", n=3, uid="1.2.3.100", desc="small")
    make_series(tmp_path / "d" / "b" / "deep", n=6, uid="1.2.3.200", desc="big", step=1.0)
    vol = read_volume(tmp_path / "d")
    assert vol.shape[0] == 6 and vol.header["series_uid"] == "1.2.3.200"
    assert any("1.2.3.100" in w and "small" in w for w in vol.warnings)
    small = read_volume(tmp_path / "d", series_uid="1.2.3.100")
    assert small.shape[0] == 3 and small.warnings == ()
    infos = list_series(tmp_path / "d")
    assert [i.uid for i in infos] == ["1.2.3.200", "1.2.3.100"]
    assert infos[0].shape == (6, 8, 6) and infos[0].modality == "CT"
    np.testing.assert_allclose(infos[0].spacing, (1.0, 0.7, 0.8))
    assert len(infos[1].files) == 3 and infos[0].description == "big"
    with pytest.raises(ReadError, match="not found"):
        read_volume(tmp_path / "d", series_uid="9.9")


def test_no_pixel_data_and_no_dicom(tmp_path):
    with pytest.raises(ReadError, match="without pixel data"):
        read_volume(get_testdata_file("test-SR.dcm"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.dcm").write_text("not dicom at all")
    (tmp_path / "empty" / "x.txt").write_text("hello")
    assert can_read(tmp_path / "empty")  # a .dcm name: the cheap guess says yes
    with pytest.raises(ReadError, match="no DICOM files"):
        read_volume(tmp_path / "empty")
    (tmp_path / "empty" / "readme.dcm").unlink()
    assert not can_read(tmp_path / "empty")
    with pytest.raises(ReadError, match="no DICOM files"):
        read_volume(tmp_path / "empty")


def test_pydicom_sample_files():
    for name, modality in (("CT_small.dcm", "CT"), ("MR_small.dcm", "MR")):
        path = get_testdata_file(name)
        ds = pydicom.dcmread(path)
        vol = read_volume(path)
        assert vol.modality == modality and vol.shape == (1, ds.Rows, ds.Columns)
        want = ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(
            ds.get("RescaleIntercept", 0))
        np.testing.assert_allclose(vol.data[0], want)
        np.testing.assert_allclose(vol.spacing[1:], [float(v) for v in ds.PixelSpacing])
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        np.testing.assert_allclose(vol.origin, LPS_TO_SAR @ ipp, atol=1e-6)


def test_compressed_decoded_or_clear_error(monkeypatch):
    ref = read_volume(get_testdata_file("MR_small.dcm"))
    path = get_testdata_file("MR_small_jp2klossless.dcm")
    try:
        import pylibjpeg  # noqa: F401
        import openjpeg  # noqa: F401
        np.testing.assert_array_equal(read_volume(path).data, ref.data)
    except ImportError:
        pass

    def boom(self):
        raise RuntimeError("no decoder")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(boom))
    with pytest.raises(ReadError, match=r"JPEG 2000.*pip install pylibjpeg"):
        read_volume(path)


def test_enhanced_multiframe(tmp_path):
    rows, cols, n = 4, 5, 3
    ds = _base(rows, cols, "MR")
    ds.NumberOfFrames = n
    zs = [6.0, 0.0, 3.0]  # frames stored out of order
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = [0.5, 0.25]
    pm.SliceThickness = 3.0
    shared.PixelMeasuresSequence = Sequence([pm])
    po = Dataset()
    po.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PlaneOrientationSequence = Sequence([po])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per = []
    for z in zs:
        g = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = [1.0, 2.0, z]
        g.PlanePositionSequence = Sequence([pp])
        per.append(g)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    frames = np.stack([pixels(int(z), rows, cols) for z in zs])
    ds.PixelData = frames.tobytes()
    p = tmp_path / "enh.dcm"
    ds.save_as(p, enforce_file_format=True)
    vol = read_volume(p)
    assert vol.shape == (3, rows, cols) and vol.modality == "MR"
    for k, z in enumerate([0.0, 3.0, 6.0]):
        np.testing.assert_array_equal(vol.data[k], pixels(int(z), rows, cols))
    np.testing.assert_allclose(vol.spacing, (3.0, 0.5, 0.25))
    np.testing.assert_allclose(vol.origin, (0.0, -2.0, -1.0))


def test_single_frame_2d_ultrasound(tmp_path):
    ds = _base(6, 7, "US")
    ds.PixelData = pixels(0, 6, 7).tobytes()
    ds.save_as(tmp_path / "us.dcm", enforce_file_format=True)
    vol = read_volume(tmp_path / "us.dcm")
    assert vol.ndim == 2 and vol.modality == "US" and vol.spacing == (1.0, 1.0)
    assert any("PixelSpacing" in w for w in vol.warnings)
    ds.PixelSpacing = [0.2, 0.3]
    ds.save_as(tmp_path / "us2.dcm", enforce_file_format=True)
    vol2 = read_volume(tmp_path / "us2.dcm")
    assert vol2.spacing == (0.2, 0.3) and vol2.warnings == ()
    np.testing.assert_array_equal(vol2.data, pixels(0, 6, 7))


def test_import_is_lazy():
    import subprocess
    import sys

    code = ("import sys, napari_attnseg.io as io; io.can_read('.');"
            "print('pydicom' in sys.modules, 'nibabel' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
