"""NIfTI reading: orientation, labels, scaling, 4D/5D, NaN, bad files, real data."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from napari_attnseg.errors import ReadError
from napari_attnseg.io import can_read, detect_format, list_series, read_volume

RNG = np.random.default_rng(0)


from _nifti_cases import AFFINES, _oblique_affine, save  # noqa: E402,F401  (tests/core on sys.path)


@pytest.mark.parametrize("kind", list(AFFINES))
def test_3d_transposed_and_affine_converted(tmp_path, kind):
    arr = RNG.normal(size=(7, 6, 5)).astype(np.float32)
    p = save(tmp_path, arr, AFFINES[kind])
    vol = read_volume(p)
    assert vol.shape == (5, 6, 7)
    np.testing.assert_array_equal(vol.data, arr.transpose(2, 1, 0))
    stored = nib.load(str(p)).affine
    np.testing.assert_array_equal(vol.header["nifti_affine"], stored)
    # independent check: voxel (i, j, k) of the file sits at the same RAS point
    i, j, k = 3, 2, 4
    ras = stored @ [i, j, k, 1]
    sar = vol.affine @ [k, j, i, 1]
    np.testing.assert_allclose(sar[:3], ras[2::-1], atol=1e-9)
    assert vol.orientation_code() == "".join(nib.aff2axcodes(stored))
    assert vol.header["format"] == "nifti" and vol.is_labels is False
    if kind == "oblique":
        assert not vol.is_axis_aligned


def test_2d_nifti(tmp_path):
    arr = RNG.integers(0, 1000, size=(9, 4)).astype(np.int16)
    p = save(tmp_path, arr, np.diag([0.3, 0.4, 1.0, 1.0]), "slice.nii")
    vol = read_volume(p)
    assert vol.shape == (4, 9) and vol.data.dtype == np.int16
    np.testing.assert_allclose(vol.spacing, (0.4, 0.3), rtol=1e-6)
    np.testing.assert_array_equal(vol.data, arr.T)


def test_single_slice_3d_file_becomes_2d(tmp_path):
    arr = RNG.normal(size=(6, 5, 1)).astype(np.float32)
    vol = read_volume(save(tmp_path, arr, AFFINES["RAS"]))
    assert vol.shape == (5, 6)
    np.testing.assert_array_equal(vol.data, arr[..., 0].T)


def test_label_detection(tmp_path):
    lab = RNG.integers(0, 4, size=(6, 6, 6)).astype(np.int16)
    assert read_volume(save(tmp_path, lab, np.eye(4), "lab.nii.gz")).is_labels
    img = RNG.integers(-1000, 1000, size=(6, 6, 6)).astype(np.int16)
    assert not read_volume(save(tmp_path, img, np.eye(4), "img.nii.gz")).is_labels
    fmask = (RNG.random((6, 6, 6)) > 0.5).astype(np.float32)
    v = read_volume(save(tmp_path, fmask, np.eye(4), "fmask.nii.gz"))
    assert v.is_labels and np.issubdtype(v.data.dtype, np.integer)
    np.testing.assert_array_equal(v.data, fmask.T)
    fimg = RNG.normal(size=(6, 6, 6)).astype(np.float32)
    assert not read_volume(save(tmp_path, fimg, np.eye(4), "fimg.nii.gz")).is_labels


def test_scaling_applied(tmp_path):
    raw = RNG.integers(0, 100, size=(4, 5, 6)).astype(np.int16)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(2.0, -10.0)
    p = tmp_path / "scaled.nii.gz"
    nib.save(img, str(p))
    vol = read_volume(p)
    np.testing.assert_allclose(vol.data, raw.T * 2.0 - 10.0)
    assert np.issubdtype(vol.data.dtype, np.floating)


def test_4d_needs_split(tmp_path):
    arr = RNG.normal(size=(4, 5, 6, 3)).astype(np.float32)
    p = save(tmp_path, arr, np.eye(4), "four.nii.gz")
    with pytest.raises(ReadError, match=r"4D with 3 volumes.*split_4d"):
        read_volume(p)
    vol = read_volume(p, split_4d=2)
    np.testing.assert_array_equal(vol.data, arr[..., 2].T)
    assert vol.header["split_4d"] == 2
    with pytest.raises(ReadError, match="out of range"):
        read_volume(p, split_4d=3)
    assert "4D" in list_series(p)[0].description


def test_trailing_singleton_squeezed_and_5d_refused(tmp_path):
    arr = RNG.normal(size=(4, 5, 6, 1)).astype(np.float32)
    vol = read_volume(save(tmp_path, arr, np.eye(4), "t1.nii.gz"))
    assert vol.shape == (6, 5, 4)
    five = np.zeros((3, 3, 3, 2, 2), np.float32)
    p5 = save(tmp_path, five, np.eye(4), "five.nii.gz")
    with pytest.raises(ReadError, match="5D") as exc:
        read_volume(p5)
    assert "five.nii.gz" in str(exc.value)


def test_nan_inf_replaced_with_warning(tmp_path):
    arr = RNG.normal(size=(4, 4, 4)).astype(np.float32) + 5
    arr[0, 0, 0] = np.nan
    arr[1, 2, 3] = np.inf
    arr[2, 2, 2] = -np.inf
    vol = read_volume(save(tmp_path, arr, np.eye(4)))
    assert np.all(np.isfinite(vol.data))
    finite_min = np.nanmin(np.where(np.isfinite(arr), arr, np.nan))
    assert vol.data[0, 0, 0] == pytest.approx(finite_min)
    assert len(vol.warnings) == 1 and "3 of 64 voxels" in vol.warnings[0]


def test_bad_files(tmp_path):
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    with pytest.raises(ReadError, match=r"empty.nii.gz.*empty"):
        read_volume(empty)
    good = save(tmp_path, RNG.normal(size=(20, 20, 20)).astype(np.float32), np.eye(4))
    blob = good.read_bytes()
    trunc = tmp_path / "trunc.nii.gz"
    trunc.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ReadError, match="trunc.nii.gz"):
        read_volume(trunc)
    text = tmp_path / "notes.nii"
    text.write_text("this is not an image\n" * 40)
    with pytest.raises(ReadError, match="notes.nii"):
        read_volume(text)
    with pytest.raises((ReadError, FileNotFoundError), match="missing.nii.gz"):
        read_volume(tmp_path / "missing.nii.gz")
    other = tmp_path / "data.xyz"
    other.write_text("hello")
    with pytest.raises(ReadError, match="unsupported format"):
        read_volume(other)


def test_gz_of_text_is_refused(tmp_path):
    p = tmp_path / "fake.nii.gz"
    p.write_bytes(gzip.compress(b"hello world" * 100))
    with pytest.raises(ReadError, match="fake.nii.gz"):
        read_volume(p)


def test_can_read_is_cheap_and_safe(tmp_path):
    p = save(tmp_path, np.zeros((2, 2, 2), np.float32), np.eye(4))
    assert can_read(p) and detect_format(p) == "nifti"
    assert not can_read(tmp_path / "nothing.nii.gz")
    (tmp_path / "a.txt").write_text("x")
    assert not can_read(tmp_path / "a.txt")
    assert not can_read(tmp_path)  # folder without DICOM
    raw = tmp_path / "noext"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), str(tmp_path / "u.nii"))
    (tmp_path / "u.nii").rename(raw)
    assert detect_format(raw) == "nifti"  # sniffed from the magic bytes


def test_real_data_geometry(shared_data):
    sc = shared_data / "mri_spinalcord"
    t2 = read_volume(sc / "t2.nii.gz")
    assert t2.orientation_code() == "PSR" and t2.shape == (52, 55, 60)
    np.testing.assert_allclose(t2.spacing, (1, 1, 1), rtol=1e-5)
    t2s = read_volume(sc / "t2star.nii.gz")
    assert t2s.orientation_code() == "LAS" and t2s.shape == (9, 54, 49)
    np.testing.assert_allclose(t2s.spacing, (7.5, 0.5, 0.5), rtol=1e-5)
    assert t2s.anisotropy == pytest.approx(15.0, rel=1e-4)
    mask = read_volume(sc / "t2star_greymatter_mask.nii.gz")
    assert mask.is_labels and mask.same_grid(t2s)
    ct = read_volume(shared_data / "ct_spleen" / "image.nii.gz")
    assert ct.shape == (26, 166, 164) and ct.orientation_code() == "RAS"
    np.testing.assert_allclose(ct.spacing, (5.0, 0.794922, 0.794922), rtol=1e-5)
    assert not ct.is_labels and ct.data.min() < -500  # HU
    assert read_volume(shared_data / "ct_spleen" / "spleen_mask.nii.gz").is_labels
