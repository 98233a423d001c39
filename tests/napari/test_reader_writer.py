"""npe2 reader and writers in a real viewer: NIfTI (RAS, LPS, oblique) -> Labels layer -> NIfTI
with the identical affine and voxels; DICOM folders; bad files give notifications, not crashes."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_attnseg._napari.reader import get_reader
from napari_attnseg._napari.writer import write_image, write_labels

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data"


def _rot(angle_x, angle_z):
    cx, sx, cz, sz = np.cos(angle_x), np.sin(angle_x), np.cos(angle_z), np.sin(angle_z)
    return np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]) @ \
        np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])


NIFTI_AFFINES = {
    "ras": np.array([[0.8, 0, 0, -40.0], [0, 0.9, 0, 12.5], [0, 0, 2.5, -7.0], [0, 0, 0, 1]]),
    "lps": np.array([[-0.8, 0, 0, 40.0], [0, -0.9, 0, 30.0], [0, 0, 2.5, -7.0], [0, 0, 0, 1]]),
    "oblique": np.block([[_rot(0.25, -0.4) @ np.diag([0.8, 0.9, 2.5]),
                          np.array([[-31.2], [7.7], [3.3]])], [np.zeros((1, 3)), np.ones((1, 1))]]),
}


def _save_nifti(path, data_ijk, affine):
    img = nib.Nifti1Image(data_ijk, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.to_filename(str(path))
    return path


@pytest.fixture
def errors(monkeypatch):
    """Capture error and warning notifications from the reader."""
    seen = {"error": [], "warning": []}
    import napari.utils.notifications as notes

    monkeypatch.setattr(notes, "show_error", lambda m: seen["error"].append(str(m)))
    monkeypatch.setattr(notes, "show_warning", lambda m: seen["warning"].append(str(m)))
    return seen


@pytest.mark.parametrize("orient", sorted(NIFTI_AFFINES))
def test_nifti_labels_round_trip_exact(orient, tmp_path, make_napari_viewer):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=(11, 9, 7)).astype(np.uint8)  # (i, j, k) file order
    src = _save_nifti(tmp_path / f"mask_{orient}.nii.gz", labels, NIFTI_AFFINES[orient])
    reader = get_reader(str(src))
    assert reader is not None
    viewer = make_napari_viewer()
    for data, kwargs, kind in reader(str(src)):
        assert kind == "labels"
        viewer._add_layer_from_data(data, kwargs, kind)
    layer = viewer.layers[f"mask_{orient}"]
    assert type(layer).__name__ == "Labels"
    assert layer.data.shape == (7, 9, 11)  # (z, y, x)
    # napari's data->world equals the file's affine (index reversed, world reversed)
    for ijk in [(0, 0, 0), (10, 8, 6), (3, 2, 5)]:
        world_sar = layer.data_to_world(np.array(ijk[::-1], float))
        ras = NIFTI_AFFINES[orient] @ np.r_[ijk, 1]
        np.testing.assert_allclose(np.asarray(world_sar)[::-1], ras[:3], atol=1e-5)
    # the user edits a voxel, then saves through the plugin writer
    layer.data[0, 0, 0] = 3
    out = tmp_path / "saved" / "edited.nii.gz"
    out.parent.mkdir()
    data, meta, _ = layer.as_layer_data_tuple()
    written = write_labels(str(out), data, meta)
    assert written == [str(out)]
    back = nib.load(str(out))
    np.testing.assert_array_equal(back.affine, nib.load(str(src)).affine)
    expected = labels.copy()
    expected[0, 0, 0] = 3
    assert np.array_equal(np.asarray(back.dataobj), expected)
    sidecar = json.loads(out.with_name("edited.json").read_text())
    assert sidecar["source"] == str(src) and sidecar["is_labels"] is True


def test_save_through_napari_uses_plugin_writer(tmp_path, make_napari_viewer):
    src = _save_nifti(tmp_path / "m.nii.gz", np.eye(6, dtype=np.uint8)[:, :, None].repeat(3, 2),
                      NIFTI_AFFINES["lps"])
    viewer = make_napari_viewer()
    viewer.open(str(src), plugin="napari-attnseg")
    out = tmp_path / "viaviewer.nii.gz"
    viewer.layers["m"].save(str(out), plugin="napari-attnseg")
    assert np.array_equal(nib.load(str(out)).affine, nib.load(str(src)).affine)
    assert out.with_name("viaviewer.json").is_file()


def test_writer_without_plugin_metadata_uses_scale_translate(tmp_path, make_napari_viewer):
    viewer = make_napari_viewer()
    layer = viewer.add_labels(np.ones((3, 4, 5), np.uint8), scale=(2.0, 0.5, 0.25),
                              translate=(10.0, -3.0, 4.0), name="plain")
    data, meta, _ = layer.as_layer_data_tuple()
    (path,) = write_labels(str(tmp_path / "plain"), data, meta)  # extension added
    assert path.endswith("plain.nii.gz")
    aff = nib.load(path).affine
    # (i, j, k) -> (R, A, S): x-scale on i, y on j, z on k; translate reversed
    np.testing.assert_allclose(aff, [[0.25, 0, 0, 4.0], [0, 0.5, 0, -3.0], [0, 0, 2.0, 10.0],
                                     [0, 0, 0, 1]], atol=1e-6)
    sidecar = json.loads((tmp_path / "plain.json").read_text())
    assert "no attnseg metadata" in sidecar["provenance"]["geometry_from"]


def test_image_writer_round_trip(tmp_path):
    img = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)
    src = _save_nifti(tmp_path / "im.nii.gz", img, NIFTI_AFFINES["oblique"])
    ((data, kwargs, kind),) = get_reader(str(src))(str(src))
    assert kind == "image"
    meta = dict(kwargs, scale=kwargs["scale"], translate=kwargs["translate"])
    (path,) = write_image(str(tmp_path / "im_out.nii.gz"), data, meta)
    back = nib.load(path)
    np.testing.assert_array_equal(back.affine, nib.load(str(src)).affine)
    np.testing.assert_array_equal(np.asarray(back.dataobj), img)


def test_reader_dicom_folder_matches_nifti_sample(errors):
    """The sample DICOM series (shuffled names, LPS) lands on the CT phantom's world grid."""
    reader = get_reader(str(SAMPLE / "ct_dicom"))
    assert reader is not None
    ((dcm, kw, kind),) = reader(str(SAMPLE / "ct_dicom"))
    assert kind == "image" and dcm.shape == (24, 128, 128)
    ((ct, ckw, _),) = get_reader(str(SAMPLE / "ct_phantom.nii.gz"))(str(SAMPLE / "ct_phantom.nii.gz"))
    from types import SimpleNamespace

    from napari_attnseg._napari.layers import layer_to_volume

    vd = layer_to_volume(SimpleNamespace(data=dcm, **{k: kw.get(k) for k in
                                                      ("scale", "translate", "affine", "metadata")}))
    vc = layer_to_volume(SimpleNamespace(data=ct, **{k: ckw.get(k) for k in
                                                     ("scale", "translate", "affine", "metadata")}))
    assert vd.modality == "CT"
    np.testing.assert_allclose(vd.spacing, vc.spacing, rtol=1e-5)
    # every DICOM voxel's world position maps to an integer CT index with the same HU
    rng = np.random.default_rng(0)
    idx = np.c_[rng.integers(0, 24, 50), rng.integers(0, 128, 50), rng.integers(0, 128, 50)]
    world = (vd.affine @ np.c_[idx, np.ones(50)].T)
    ct_idx = np.linalg.solve(vc.affine, world)[:3].T
    np.testing.assert_allclose(ct_idx, np.round(ct_idx), atol=1e-3)
    ct_idx = np.round(ct_idx).astype(int)
    np.testing.assert_array_equal(np.asarray(dcm)[tuple(idx.T)].astype(float),
                                  np.asarray(ct)[tuple(ct_idx.T)].astype(float))
    assert errors["error"] == []


def test_reader_rejects_unrelated_and_reports_broken(tmp_path, errors):
    (tmp_path / "notes.txt").write_text("hello")
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(empty)) is None
    assert get_reader(str(tmp_path / "missing.nii.gz")) is None
    bad = tmp_path / "fake.nii"
    bad.write_text("this is not a NIfTI file at all " * 20)
    reader = get_reader(str(bad))
    assert reader is not None  # the name says NIfTI: the reader tries, then reports
    assert reader(str(bad)) == []
    assert len(errors["error"]) == 1 and "fake.nii" in errors["error"][0]
    truncated = tmp_path / "trunc.nii.gz"
    noise = np.random.default_rng(0).integers(0, 1000, size=(20, 20, 20)).astype(np.int16)
    good = _save_nifti(tmp_path / "good.nii.gz", noise, NIFTI_AFFINES["ras"])
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    # a list: the good file opens, the broken one becomes a notification
    out = get_reader([str(good), str(truncated)])([str(good), str(truncated)])
    assert len(out) == 1 and out[0][1]["name"] == "good"
    assert "trunc.nii.gz" in errors["error"][-1]


def test_reader_shows_warnings(tmp_path, errors):
    data = np.ones((6, 6, 6), np.float32)
    data[0, 0, 0] = np.nan
    src = _save_nifti(tmp_path / "nan.nii.gz", data, NIFTI_AFFINES["ras"])
    (layer,) = get_reader(str(src))(str(src))
    assert np.isfinite(layer[0]).all()
    assert any("NaN" in w and "nan.nii.gz" in w for w in errors["warning"])


@pytest.mark.parametrize("orient", ["identity", "lps", "oblique"])
def test_real_labels_layer_world_matches_volume_affine(orient, make_napari_viewer):
    from napari_attnseg._napari.layers import layer_data_tuple, layer_to_volume
    from napari_attnseg.volume import Volume

    direction = {"identity": np.eye(3), "lps": np.diag([1.0, -1.0, -1.0]),
                 "oblique": _rot(0.3, 0.2)}[orient]
    vol = Volume(np.zeros((4, 5, 6), np.uint8), (2.0, 0.5, 0.75), origin=(3.0, -4.0, 5.5),
                 direction=direction, is_labels=True)
    viewer = make_napari_viewer()
    data, kwargs, kind = layer_data_tuple(vol, name="v")
    layer = viewer._add_layer_from_data(data, kwargs, kind)[0]
    assert type(layer).__name__ == "Labels"
    for idx in [(0, 0, 0), (3, 4, 5), (1.5, 0.25, 2.0)]:
        np.testing.assert_allclose(np.asarray(layer.data_to_world(np.array(idx))),
                                   (vol.affine @ np.r_[idx, 1])[:3], atol=1e-9)
    np.testing.assert_allclose(layer_to_volume(layer).affine, vol.affine, atol=1e-12)
    # a user rotation in the layer controls is part of the geometry a writer must keep
    layer.rotate = 20
    moved = layer_to_volume(layer)
    idx = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose((moved.affine @ np.r_[idx, 1])[:3],
                               np.asarray(layer.data_to_world(idx)), atol=1e-9)
