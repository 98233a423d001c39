"""write_volume: exact round trips (RAS, LPS, oblique, layers, real data), atomicity, sidecar."""

from __future__ import annotations

import json
import types

import nibabel as nib
import numpy as np
import pytest

from napari_attnseg._napari.layers import layer_to_volume, volume_to_layer_kwargs
from napari_attnseg.errors import WriteError
from napari_attnseg.io import read_volume, write_volume
from napari_attnseg.io import writers as writers_mod
from napari_attnseg.volume import DIRECTION_NOMINAL, Volume


RNG = np.random.default_rng(0)


from _nifti_cases import AFFINES, _oblique_affine, save  # noqa: E402,F401  (tests/core on sys.path)


def fake_layer(vol, metadata=True, labels=False):
    kw = volume_to_layer_kwargs(vol, name="x")
    cls = type("Labels" if labels else "Image", (), {})
    layer = cls()
    layer.data = vol.data
    layer.scale = kw["scale"]
    layer.translate = kw["translate"]
    layer.affine = kw.get("affine")
    layer.metadata = kw["metadata"] if metadata else {}
    layer.name = "x"
    return layer


@pytest.mark.parametrize("kind", list(AFFINES))
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_round_trip_exact(tmp_path, kind, suffix):
    arr = RNG.normal(size=(7, 6, 5)).astype(np.float32)
    src = save(tmp_path, arr, AFFINES[kind], "src.nii.gz")
    vol = read_volume(src)
    out = write_volume(vol, tmp_path / f"out{suffix}")
    a, b = nib.load(str(src)), nib.load(str(out))
    assert np.array_equal(a.affine, b.affine)
    assert np.array_equal(a.get_fdata(), b.get_fdata())
    assert int(b.header["qform_code"]) == int(a.header["qform_code"])
    assert int(b.header["sform_code"]) == int(a.header["sform_code"])
    back = read_volume(out)
    assert np.array_equal(back.affine, vol.affine) and np.array_equal(back.data, vol.data)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_qform_only_round_trip_exact(tmp_path):
    img = nib.Nifti1Image(RNG.normal(size=(4, 5, 6)).astype(np.float32), AFFINES["oblique"])
    img.set_sform(None, code=0)
    img.set_qform(AFFINES["oblique"], code=1)
    nib.save(img, str(tmp_path / "q.nii.gz"))
    vol = read_volume(tmp_path / "q.nii.gz")
    out = write_volume(vol, tmp_path / "q2.nii.gz")
    a, b = nib.load(str(tmp_path / "q.nii.gz")), nib.load(str(out))
    assert int(b.header["sform_code"]) == 0 and int(b.header["qform_code"]) == 1
    assert np.array_equal(a.affine, b.affine)


@pytest.mark.parametrize("kind", list(AFFINES))
def test_through_layers(tmp_path, kind):
    lab = RNG.integers(0, 3, size=(7, 6, 5)).astype(np.int16)
    src = save(tmp_path, lab, AFFINES[kind], "lab.nii.gz")
    vol = read_volume(src)
    assert vol.is_labels
    # with the plugin metadata: the file affine comes back bit for bit
    v1 = layer_to_volume(fake_layer(vol, labels=True))
    out = write_volume(v1, tmp_path / "l1.nii.gz")
    b = nib.load(str(out))
    assert np.array_equal(nib.load(str(src)).affine, b.affine)
    assert b.get_data_dtype() == np.uint8
    assert np.array_equal(np.asanyarray(b.dataobj), lab)
    # without metadata (another plugin's layer): scale/translate/affine give the geometry
    v2 = layer_to_volume(fake_layer(vol, metadata=False, labels=True))
    assert v2.header == {DIRECTION_NOMINAL: True}  # nothing of the file's header; its orientation unknown
    out2 = write_volume(v2, tmp_path / "l2.nii.gz")
    b2 = nib.load(str(out2))
    np.testing.assert_allclose(b2.affine, nib.load(str(src)).affine, rtol=1e-6, atol=1e-5)
    assert np.array_equal(np.asanyarray(b2.dataobj), lab)


def test_geometry_only_volume_and_dtypes(tmp_path):
    d = np.deg2rad(30)
    direction = np.array([[1, 0, 0], [0, np.cos(d), -np.sin(d)], [0, np.sin(d), np.cos(d)]])
    lab = np.zeros((3, 4, 5), np.int64)
    lab[1, 2, 3] = 300
    vol = Volume(lab, spacing=(2.0, 0.5, 0.25), origin=(1.0, 2.0, 3.0), direction=direction,
                 is_labels=True, metadata={"model": "m1"})
    out = write_volume(vol, tmp_path / "g.nii.gz", provenance={"crf": True})
    img = nib.load(str(out))
    assert img.get_data_dtype() == np.uint16
    back = read_volume(out)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)
    np.testing.assert_array_equal(back.data, lab)
    side = json.loads((tmp_path / "g.json").read_text())
    assert side["provenance"] == {"model": "m1", "crf": True}
    assert side["is_labels"] and side["dtype"] == "uint16"
    assert side["labels"] == [{"label": 300, "voxels": 1, "volume_mm3": 0.25}]
    assert side["geometry"]["spacing_mm"] == [2.0, 0.5, 0.25]
    img2d = Volume(RNG.normal(size=(4, 6)).astype(np.float32), spacing=(0.3, 0.2))
    back2 = read_volume(write_volume(img2d, tmp_path / "two.nii.gz"))
    assert back2.shape == (4, 6)
    np.testing.assert_allclose(back2.spacing, (0.3, 0.2), rtol=1e-6)
    np.testing.assert_array_equal(back2.data, img2d.data)


def test_reference_lends_geometry(tmp_path):
    src = save(tmp_path, RNG.normal(size=(5, 4, 3)).astype(np.float32), AFFINES["LPS"])
    ref = read_volume(src)
    seg = Volume(np.ones(ref.shape, np.uint8), spacing=(1, 1, 1), is_labels=True)
    out = write_volume(seg, tmp_path / "seg.nii.gz", reference=ref)
    assert np.array_equal(nib.load(str(out)).affine, nib.load(str(src)).affine)


def test_failed_verification_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    vol = Volume(np.zeros((2, 3, 4), np.float32), spacing=(1, 1, 1))
    target = tmp_path / "keep.nii.gz"
    target.write_bytes(b"old")

    def bad(*args, **kwargs):
        raise WriteError(target, "verification failed: simulated")

    monkeypatch.setattr(writers_mod, "_verify", bad)
    with pytest.raises(WriteError, match="simulated"):
        write_volume(vol, target)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.nii.gz"]


def test_bad_targets(tmp_path):
    vol = Volume(np.zeros((2, 3, 4), np.float32), spacing=(1, 1, 1))
    with pytest.raises(WriteError, match="only .nii"):
        write_volume(vol, tmp_path / "x.nrrd")
    with pytest.raises(WriteError, match="does not exist"):
        write_volume(vol, tmp_path / "nope" / "x.nii.gz")


def test_real_data_round_trips(shared_data, tmp_path):
    cases = [shared_data / "mri_spinalcord" / f for f in ("t2.nii.gz", "t2star.nii.gz",
                                                          "t2_cord_mask.nii.gz")]
    cases.append(shared_data / "ct_spleen" / "image.nii.gz")
    for src in cases:
        vol = read_volume(src)
        out = write_volume(vol, tmp_path / src.name)
        a, b = nib.load(str(src)), nib.load(str(out))
        assert np.array_equal(a.affine, b.affine), src
        assert np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj)), src
        v2 = layer_to_volume(fake_layer(vol, labels=vol.is_labels))
        out2 = write_volume(v2, tmp_path / ("L" + src.name))
        assert np.array_equal(a.affine, nib.load(str(out2)).affine), src
