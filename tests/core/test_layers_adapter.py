"""Volume -> layer kwargs -> Volume round trips with a duck-typed (fake) layer; no napari."""

from types import SimpleNamespace

import numpy as np
import pytest

from napari_attnseg._napari.layers import (META_KEY, derived_layer_kwargs, layer_data_tuple,
                                           layer_to_volume, volume_to_layer_kwargs)
from napari_attnseg.volume import DIRECTION_NOMINAL, Volume


def _rotation(ax, angle):
    c, s = np.cos(angle), np.sin(angle)
    r = np.eye(3)
    i, j = [k for k in range(3) if k != ax]
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


DIRECTIONS = {
    "identity": np.eye(3),
    "lps": np.diag([1.0, -1.0, -1.0]),  # DICOM-like: rows run posterior, columns left
    "oblique": _rotation(0, 0.3) @ _rotation(1, -0.2),
}


def _fake_layer(data, kwargs, kind="Image"):
    """What napari would hold: scale/translate/affine/metadata as given (affine default I)."""
    n = data.ndim
    cls = type(kind, (), {})
    layer = cls()
    layer.data = data
    layer.scale = np.asarray(kwargs.get("scale", np.ones(n)))
    layer.translate = np.asarray(kwargs.get("translate", np.zeros(n)))
    layer.affine = np.asarray(kwargs.get("affine", np.eye(n + 1)))
    layer.metadata = kwargs.get("metadata", {})
    layer.name = kwargs.get("name", "x")
    return layer


def _napari_world(layer, index):
    """napari's data->world: affine @ (scale * index + translate), computed independently."""
    p = np.asarray(layer.scale) * np.asarray(index, float) + np.asarray(layer.translate)
    return (np.asarray(layer.affine) @ np.r_[p, 1.0])[:-1]


@pytest.mark.parametrize("which", sorted(DIRECTIONS))
def test_round_trip(which):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 3, size=(5, 6, 7)).astype(np.uint8)
    vol = Volume(data, (2.5, 0.7, 0.9), origin=(-10.0, 20.0, 3.5), direction=DIRECTIONS[which],
                 modality="MR", is_labels=True, source="/x/y.nii.gz",
                 header={"format": "nifti"}, metadata={"model": "m1"})
    d, kwargs, kind = layer_data_tuple(vol, name="y")
    assert kind == "labels" and d is vol.data
    if which == "identity":
        assert "affine" not in kwargs
        assert kwargs["translate"] == vol.origin
    assert kwargs["scale"] == vol.spacing
    layer = _fake_layer(d, kwargs, "Labels")
    back = layer_to_volume(layer)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-12)
    np.testing.assert_allclose(back.spacing, vol.spacing, rtol=1e-12)
    assert np.array_equal(back.data, vol.data)
    assert back.modality == "MR" and back.is_labels and back.source == "/x/y.nii.gz"
    assert back.header["format"] == "nifti" and back.metadata["model"] == "m1"
    for idx in [(0, 0, 0), (4, 5, 6), (1.5, 2.0, 3.25)]:
        np.testing.assert_allclose(_napari_world(layer, idx), (vol.affine @ np.r_[idx, 1])[:3],
                                   atol=1e-9)


def test_2d_volume_round_trip():
    vol = Volume(np.zeros((4, 5), np.float32), (0.3, 0.4), origin=(1.0, 2.0),
                 direction=np.array([[0.0, 1.0], [1.0, 0.0]]))
    layer = _fake_layer(vol.data, volume_to_layer_kwargs(vol))
    back = layer_to_volume(layer)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-12)
    assert not back.is_labels


def test_foreign_layer_uses_its_transform():
    """A layer without plugin metadata (another reader) keeps its scale/translate/affine."""
    aff = np.eye(4)
    aff[:3, :3] = DIRECTIONS["oblique"]
    layer = _fake_layer(np.zeros((3, 4, 5)), {"scale": (2.0, 1.0, 0.5),
                                              "translate": (1.0, -2.0, 3.0), "affine": aff})
    vol = layer_to_volume(layer)
    for idx in [(0, 0, 0), (2, 3, 4)]:
        np.testing.assert_allclose((vol.affine @ np.r_[idx, 1])[:3], _napari_world(layer, idx),
                                   atol=1e-9)
    assert vol.header == {DIRECTION_NOMINAL: True} and vol.modality == ""  # another reader's affine


def test_rotate_and_shear_are_included():
    """napari world = affine @ (rotate @ shear @ scale @ index + translate)."""
    rot = _rotation(0, 0.4)
    layer = SimpleNamespace(data=np.zeros((3, 4, 5)), scale=(2.0, 1.0, 1.0),
                            translate=(1.0, 0.0, 0.0), rotate=rot, shear=[0.1, 0.0, 0.0],
                            affine=None, metadata={}, name="r")
    vol = layer_to_volume(layer)
    shear = np.eye(3)
    shear[0, 1] = 0.1
    idx = np.array([1.0, 2.0, 3.0])
    expect = rot @ shear @ (np.array([2.0, 1.0, 1.0]) * idx) + np.array([1.0, 0.0, 0.0])
    np.testing.assert_allclose((vol.affine @ np.r_[idx, 1])[:3], expect, atol=1e-12)


def test_stale_metadata_is_ignored_when_shape_differs():
    vol = Volume(np.zeros((3, 4, 5)), (1.0, 2.0, 3.0), modality="CT", header={"a": 1})
    kwargs = volume_to_layer_kwargs(vol)
    layer = _fake_layer(np.zeros((3, 4, 6)), kwargs)
    back = layer_to_volume(layer)
    assert back.header == {DIRECTION_NOMINAL: True} and back.modality == ""
    np.testing.assert_allclose(back.spacing, (1.0, 2.0, 3.0))


def test_derived_layer_copies_geometry_and_adds_provenance():
    vol = Volume(np.zeros((3, 4, 5)), (1.0, 2.0, 3.0), origin=(5, 6, 7),
                 direction=DIRECTIONS["lps"], modality="CT", header={"k": "v"})
    src = _fake_layer(vol.data, volume_to_layer_kwargs(vol, name="scan"))
    kw = derived_layer_kwargs(src, "scan [attnseg]", provenance={"model": "x"})
    assert kw["name"] == "scan [attnseg]"
    np.testing.assert_allclose(kw["affine"], volume_to_layer_kwargs(vol)["affine"])
    assert kw["metadata"][META_KEY]["header"] == {"k": "v"}
    assert kw["metadata"][META_KEY]["provenance"]["model"] == "x"
    with pytest.raises(ValueError, match="differs"):
        derived_layer_kwargs(src, "bad", shape=(1, 2, 3))


def test_4d_layer_refused_with_message():
    layer = _fake_layer(np.zeros((2, 3, 4, 5)), {"scale": (1, 1, 1, 1)})
    with pytest.raises(ValueError, match="4 dimensions"):
        layer_to_volume(layer)
