"""Bad input through the readers (issue 12): every case has the result class it must have.

``python tests/core/test_bad_input_io.py`` prints the table of observed classes (run it with
``PYTHONPATH`` pointing at an older checkout to see the classes before a change). The CLI cases
and write safety are in ``test_bad_input_cli.py``; the napari reader in tests/napari.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _bad_inputs import (RNG, case_registry, ct_like, dicom_series, nifti_raw, put, read_class,  # noqa: E402
                         save_raw)

CASES, case = case_registry()


def _flip(p: Path, at: float | int) -> Path:
    raw = bytearray(p.read_bytes())
    i = at if isinstance(at, int) else int(len(raw) * at)
    raw[i] ^= 0x10
    p.write_bytes(bytes(raw))
    return p


# ---------------------------------------------------------------------- NIfTI: corruption
@case("error")
def nii_gz_flipped_byte(tmp):
    arr = ct_like()
    p = _flip(save_raw(tmp, "ct.nii.gz", nifti_raw(arr)), 0.3)
    return read_class(p, lambda v: np.array_equal(v.data, arr.T))


@case("error")
def nii_gz_crc_trailer_flipped(tmp):
    arr = ct_like()
    p = save_raw(tmp, "ct.nii.gz", nifti_raw(arr))
    _flip(p, len(p.read_bytes()) - 6)
    return read_class(p, lambda v: False)  # the data may be intact; the file is not


@case("error")
def nii_gz_truncated(tmp):
    p = save_raw(tmp, "ct.nii.gz", nifti_raw(ct_like()))
    p.write_bytes(p.read_bytes()[: int(p.stat().st_size * 0.7)])
    return read_class(p)


@case("error")
def nii_truncated_uncompressed(tmp):
    raw = nifti_raw(ct_like())
    return read_class(save_raw(tmp, "ct.nii", raw[: len(raw) - 1000]))


# ---------------------------------------------------------------------- NIfTI: geometry
def _pixdim_file(tmp, value, qform=1, sform=0, shape=(10, 9, 8)):
    raw = nifti_raw(RNG.normal(size=shape).astype(np.float32), qform=qform, sform=sform)
    return save_raw(tmp, "p.nii.gz", put(raw, "pixdim", "f", value, index=1))


@case("error")
def nii_pixdim_zero(tmp):
    return read_class(_pixdim_file(tmp, 0.0))


@case("error")
def nii_pixdim_zero_no_codes(tmp):
    return read_class(_pixdim_file(tmp, 0.0, qform=0))


@case("error")
def nii_pixdim_1e_30(tmp):
    return read_class(_pixdim_file(tmp, 1e-30))


@case("error")
def nii_pixdim_1e30(tmp):
    return read_class(_pixdim_file(tmp, 1e30))


@case("error")
def nii_pixdim_nan(tmp):
    return read_class(_pixdim_file(tmp, float("nan")))


@case("correct")
def nii_pixdim_zero_on_singleton_axis(tmp):
    raw = nifti_raw(RNG.normal(size=(10, 9, 1)).astype(np.float32), sform=0)
    p = save_raw(tmp, "slice.nii.gz", put(raw, "pixdim", "f", 0.0, index=3))
    return read_class(p, lambda v: v.shape == (9, 10) and v.spacing == (1.0, 1.0))


def _sform_file(tmp, cols):
    raw = nifti_raw(RNG.normal(size=(10, 9, 8)).astype(np.float32), qform=0, sform=1)
    rows = np.eye(4)[:3].copy()
    rows[:, :3] = cols
    for k, field in enumerate(("srow_x", "srow_y", "srow_z")):
        put(raw, field, "4f", *rows[k])
    return save_raw(tmp, "s.nii.gz", raw)


@case("error")
def nii_sform_zero_column(tmp):
    return read_class(_sform_file(tmp, np.diag([1.0, 0.0, 1.0])))


@case("error")
def nii_sform_collinear(tmp):
    return read_class(_sform_file(tmp, np.array([[1.0, 1, 0], [0, 0, 0], [0, 0, 2]])))


@case("error")
def nii_sform_nan(tmp):
    return read_class(_sform_file(tmp, np.diag([1.0, np.nan, 1.0])))


@case("error")
def nii_qform_nan(tmp):
    raw = nifti_raw(RNG.normal(size=(10, 9, 8)).astype(np.float32), qform=1, sform=0)
    return read_class(save_raw(tmp, "q.nii.gz", put(raw, "quatern_b", "f", float("nan"))))


# ---------------------------------------------------------------------- NIfTI: sizes, dtypes
def _huge(tmp, name):
    raw = nifti_raw(np.zeros((4, 4, 4), np.int16))
    return save_raw(tmp, name, put(raw, "dim", "4h", 3, 30000, 30000, 30000))


@case("error")
def nii_gz_header_declares_huge_size(tmp):
    return read_class(_huge(tmp, "huge.nii.gz"))


@case("error")
def nii_header_declares_huge_size(tmp):
    return read_class(_huge(tmp, "huge.nii"))


@case("error")
def nii_complex64(tmp):
    p = tmp / "c.nii.gz"
    nib.save(nib.Nifti1Image((RNG.normal(size=(6, 5, 4)) * 1j).astype(np.complex64),
                             np.eye(4)), str(p))
    return read_class(p)


@case("warning")
def nii_rgb24(tmp):
    rgb = np.zeros((6, 5, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"], rgb["G"], rgb["B"] = 200, 100, RNG.integers(0, 255, (6, 5, 4))
    p = tmp / "rgb.nii.gz"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(p))
    grey = 0.299 * 200 + 0.587 * 100 + 0.114 * rgb["B"].astype(np.float32)
    return read_class(p, lambda v: v.data.dtype.kind == "f"
                      and np.allclose(v.data, grey.T, atol=1e-3))


# ---------------------------------------------------------------------- the label-map policy
def _nii(tmp, arr, name, intent=None):
    img = nib.Nifti1Image(arr, np.diag([0.7, 0.7, 2.0, 1.0]))
    if intent:
        img.header.set_intent(intent)
    p = tmp / name
    nib.save(img, str(p))
    return p


@case("correct")
def nii_uint8_scan_200_grey_levels_is_an_image(tmp):
    arr = RNG.integers(0, 200, (20, 20, 6)).astype(np.uint8)
    return read_class(_nii(tmp, arr, "us.nii.gz"), lambda v: not v.is_labels)


@case("correct")
def nii_uint8_scan_12_spaced_levels_is_an_image(tmp):
    arr = (RNG.integers(0, 12, (20, 20, 6)) * 20).astype(np.uint8)
    return read_class(_nii(tmp, arr, "scan.nii.gz"), lambda v: not v.is_labels)


@case("correct")
def nii_int16_two_values_is_an_image(tmp):
    arr = np.where(RNG.random((20, 20, 6)) > 0.5, 1000, 0).astype(np.int16)
    return read_class(_nii(tmp, arr, "phantom.nii.gz"), lambda v: not v.is_labels)


@case("correct")
def nii_small_label_set_is_labels(tmp):
    arr = RNG.integers(0, 6, (20, 20, 6)).astype(np.uint8)
    return read_class(_nii(tmp, arr, "case01.nii.gz"), lambda v: v.is_labels)


@case("correct")
def nii_named_mask_is_labels(tmp):
    arr = np.where(RNG.random((20, 20, 6)) > 0.5, 255, 0).astype(np.uint8)
    return read_class(_nii(tmp, arr, "liver_mask.nii.gz"), lambda v: v.is_labels)


@case("correct")
def nii_label_intent_is_labels(tmp):
    arr = RNG.integers(0, 200, (20, 20, 6)).astype(np.uint16)
    return read_class(_nii(tmp, arr, "aparc.nii.gz", intent="label"), lambda v: v.is_labels)


@case("correct")
def nii_float_values_1_3_are_an_image(tmp):
    arr = np.where(RNG.random((20, 20, 6)) > 0.5, 1.3, 0.0).astype(np.float32)
    return read_class(_nii(tmp, arr, "mask.nii.gz"), lambda v: not v.is_labels)


@case("error")
def nii_fifo_does_not_hang(tmp):
    p = tmp / "pipe.nii.gz"
    os.mkfifo(p)
    return read_class(p, timeout=5)


# ---------------------------------------------------------------------- 2D images
@case("correct")
def png_grey_alpha_is_2d_grey(tmp):
    import imageio.v3 as iio

    grey = RNG.integers(0, 255, (20, 30)).astype(np.uint8)
    iio.imwrite(tmp / "ga.png", np.stack([grey, np.full_like(grey, 255)], -1))
    return read_class(tmp / "ga.png", lambda v: v.shape == (20, 30)
                      and np.array_equal(v.data, grey), pixel_size_mm=0.5)


@case("warning")
def png_grey_with_transparency(tmp):
    import imageio.v3 as iio

    grey = RNG.integers(0, 255, (20, 30)).astype(np.uint8)
    iio.imwrite(tmp / "gt.png", np.stack([grey, RNG.integers(0, 255, (20, 30)).astype(
        np.uint8)], -1))
    return read_class(tmp / "gt.png", lambda v: v.shape == (20, 30), pixel_size_mm=0.5)


# ---------------------------------------------------------------------- NRRD
def _nrrd(tmp, name, fields, payload, raw=False):
    head = "NRRD0004\n" + "".join(f"{k}: {v}\n" for k, v in fields.items()) + "\n"
    p = tmp / name
    p.write_bytes(head.encode() + payload)
    return p


_F = {"type": "short", "dimension": 3, "sizes": "5 4 3", "encoding": "raw", "endian": "little"}
_DATA = np.arange(60, dtype=np.int16).tobytes()


@case("error")
def nrrd_type_quaternion(tmp):
    return read_class(_nrrd(tmp, "q.nrrd", {**_F, "type": "quaternion"}, _DATA))


@case("error")
def nrrd_gzip_over_raw(tmp):
    import gzip

    return read_class(_nrrd(tmp, "g.nrrd", _F, gzip.compress(_DATA)))


@case("error")
def nrrd_raw_data_declared_gzip(tmp):
    return read_class(_nrrd(tmp, "r.nrrd", {**_F, "encoding": "gzip"}, _DATA))


@case("error")
def nrrd_gzip_flipped_byte(tmp):
    import gzip

    data = bytearray(gzip.compress(ct_like((6, 5, 4)).tobytes()))
    data[len(data) // 2] ^= 0x10
    fields = {**_F, "sizes": "4 5 6", "encoding": "gzip"}
    return read_class(_nrrd(tmp, "f.nrrd", fields, bytes(data)))


@case("error")
def nrrd_detached_data_is_a_fifo(tmp):
    os.mkfifo(tmp / "data.raw")
    return read_class(_nrrd(tmp, "d.nhdr", {**_F, "data file": "data.raw"}, b""), timeout=5)


@case("error")
def nrrd_header_declares_huge_size(tmp):
    return read_class(_nrrd(tmp, "h.nrrd", {**_F, "sizes": "40000 40000 40000"}, _DATA))


@case("error")
def nrrd_zero_space_direction(tmp):
    fields = {**_F, "space": "left-posterior-superior",
              "space directions": "(1,0,0) (0,0,0) (0,0,1)"}
    return read_class(_nrrd(tmp, "z.nrrd", fields, _DATA))


@case("error")
def nrrd_spacing_1e30(tmp):
    fields = {**_F, "space": "left-posterior-superior",
              "space directions": "(1e30,0,0) (0,1,0) (0,0,1)"}
    return read_class(_nrrd(tmp, "b.nrrd", fields, _DATA))


# ---------------------------------------------------------------------- DICOM
def _same_as_complete(tmp):
    from napari_attnseg.io import read_volume

    ref = read_volume(dicom_series(tmp / "complete"))
    return lambda v: (np.allclose(v.affine, ref.affine, atol=1e-4)
                      and np.array_equal(v.data, ref.data))


@case("warning")
def dicom_one_slice_without_position_does_not_mirror(tmp):
    return read_class(dicom_series(tmp / "s", drop_position=(3,)), _same_as_complete(tmp))


@case("warning")
def dicom_first_slice_without_position(tmp):
    return read_class(dicom_series(tmp / "s", drop_position=(0,)), _same_as_complete(tmp))


@case("error")
def dicom_missing_position_with_uneven_others(tmp):
    pos = [-10.0, -7.5, -5.0, 0.0, 1.0, 9.0]
    return read_class(dicom_series(tmp / "s", drop_position=(2,), positions=pos))


@case("error")
def dicom_rescale_slope_zero(tmp):
    return read_class(dicom_series(tmp / "s", slope=0.0))


@case("error")
def dicom_pixel_spacing_1e30(tmp):
    return read_class(dicom_series(tmp / "s", spacing=(1e30, 1e30)))


@case("error")
def dicom_header_declares_huge_size(tmp):
    return read_class(dicom_series(tmp / "s", n=3, declare=(60000, 60000)))


@pytest.mark.parametrize("name,expected,fn", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, expected, fn, tmp_path):
    assert fn(tmp_path) == expected


def test_labels_policy_stays_cheap_on_a_big_uint8_scan():
    """The label check must not convert a volume to int64 (10 GiB for a 1.35 GB scan)."""
    import tracemalloc

    from napari_attnseg.io.validate import looks_like_labels

    arr = np.resize(np.arange(251, dtype=np.uint8), 64 * 1024 * 1024)
    mask = (arr > 200).astype(np.uint8)
    tracemalloc.start()
    assert not looks_like_labels(arr)
    assert looks_like_labels(mask)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 40 * 2**20  # chunked: a bounded working set (an int64 copy: 512 MiB)


if __name__ == "__main__":  # the table: observed class per case
    import tempfile

    counts: dict[str, int] = {}
    for name, expected, fn in CASES:
        with tempfile.TemporaryDirectory() as d:
            got = fn(Path(d))
        counts[got] = counts.get(got, 0) + 1
        print(f"| {name} | {expected} | {got} |")
    print(counts)
