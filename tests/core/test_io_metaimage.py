"""MetaImage (.mha / .mhd) reading without ITK, checked against files ITK (SimpleITK) wrote and
what SimpleITK reads back from them (tests/data/metaimage, see make_fixtures.py): compressed and
raw, oblique 3D and 2D, big-endian, and the refusals (truncated, corrupt, bombs, slice lists)."""

from __future__ import annotations

import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest

from napari_attnseg.errors import ReadError
from napari_attnseg.io import can_read, read_volume, write_volume
from napari_attnseg.volume import nifti_affine_from_zyx

DATA = Path(__file__).resolve().parents[1] / "data" / "metaimage"
REF = np.load(DATA / "reference.npz")
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _lps_affine(vol):
    if vol.ndim == 3:
        return LPS @ nifti_affine_from_zyx(vol.affine)
    a = nifti_affine_from_zyx(vol.affine)  # 2D: (i, j) -> (R, A)
    return np.diag([-1.0, -1.0, 1.0]) @ a


@pytest.mark.parametrize("name", ["oblique_ct.mha", "oblique_ct.mhd", "labels_2d.mha"])
def test_matches_what_simpleitk_reads(name):
    key = name.replace(".", "_")
    vol = read_volume(DATA / name)
    assert np.array_equal(vol.data, REF[key + "_array"])
    assert vol.data.dtype == REF[key + "_array"].dtype
    assert np.allclose(_lps_affine(vol), REF[key + "_lps_affine"], atol=1e-9)
    assert vol.header["format"] == "metaimage"


def test_labels_detected_and_round_trip_to_nifti(tmp_path):
    vol = read_volume(DATA / "labels_2d.mha")
    assert vol.is_labels and set(np.unique(vol.data)) == {0, 1, 2}
    back = read_volume(write_volume(vol, tmp_path / "l.nii.gz"))
    assert np.array_equal(back.data, vol.data) and np.allclose(back.affine, vol.affine)
    ct = read_volume(DATA / "oblique_ct.mha")
    assert not ct.is_labels and can_read(DATA / "oblique_ct.mhd")


def _rewrite(tmp_path, name, replace=None, payload=None):
    raw = (DATA / name).read_bytes()
    head, _, data = raw.partition(b"ElementDataFile = LOCAL\n")
    for old, new in (replace or {}).items():
        head = head.replace(old, new)
    out = tmp_path / name
    out.write_bytes(head + b"ElementDataFile = LOCAL\n" + (data if payload is None else payload))
    return out


def test_big_endian_and_header_size_minus_one(tmp_path):
    ref = REF["oblique_ct_mhd_array"]
    text = (DATA / "oblique_ct.mhd").read_text()
    be = text.replace("BinaryDataByteOrderMSB = False", "BinaryDataByteOrderMSB = True")
    (tmp_path / "be.raw").write_bytes(b"JUNKHEADER" + ref.astype(">i2").tobytes())
    (tmp_path / "be.mhd").write_text(be.replace("oblique_ct.raw", "be.raw").replace(
        "ElementType", "HeaderSize = -1\nElementType"))
    assert np.array_equal(read_volume(tmp_path / "be.mhd").data, ref)


def test_truncated_corrupt_and_oversized_data_are_refused(tmp_path):
    text = (DATA / "oblique_ct.mhd").read_text()
    shutil.copy(DATA / "oblique_ct.raw", tmp_path / "short.raw")
    with open(tmp_path / "short.raw", "r+b") as fh:
        fh.truncate(100)
    (tmp_path / "short.mhd").write_text(text.replace("oblique_ct.raw", "short.raw"))
    with pytest.raises(ReadError, match="truncated"):
        read_volume(tmp_path / "short.mhd")
    bad = _rewrite(tmp_path, "oblique_ct.mha", payload=b"\x78\x9c" + b"\x00garbage" * 20)
    with pytest.raises(ReadError, match="corrupt"):
        read_volume(bad)
    bomb = zlib.compress(b"\x00" * (10 * 7 * 6 * 5 * 2))  # 10x what the header declares
    big = _rewrite(tmp_path, "oblique_ct.mha", {b"CompressedDataSize = ": b"Old = "},
                   payload=bomb)
    with pytest.raises(ReadError, match="more than 420 bytes"):
        read_volume(big)


def test_missing_data_file_slice_lists_and_channels_are_refused(tmp_path):
    text = (DATA / "oblique_ct.mhd").read_text()
    (tmp_path / "gone.mhd").write_text(text)
    with pytest.raises(ReadError, match="does not exist"):
        read_volume(tmp_path / "gone.mhd")
    (tmp_path / "list.mhd").write_text(text.replace("oblique_ct.raw", "slice%03d.raw 0 4 1"))
    with pytest.raises(ReadError, match="one file per slice"):
        read_volume(tmp_path / "list.mhd")
    rgb = _rewrite(tmp_path, "labels_2d.mha", {b"ElementType": b"ElementNumberOfChannels = 3\n"
                                                                b"ElementType"})
    with pytest.raises(ReadError, match="3 channels"):
        read_volume(rgb)
    (tmp_path / "junk.mha").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(ReadError):
        read_volume(tmp_path / "junk.mha")
