"""Any storage order (PSR, LIP, ... and oblique) -> layer in world axis order -> back, exactly;
2D models slice along the axial axis whatever the storage order. No napari."""

from itertools import permutations, product
from types import SimpleNamespace

import numpy as np
import pytest

from _orientation_cases import CASES, stored  # noqa: E402  (tests/core on sys.path)
from napari_attnseg._napari.layers import (META_KEY, STORAGE_AXES, derived_layer_kwargs,
                                           layer_data_tuple, layer_to_source_volume,
                                           layer_to_volume)
from napari_attnseg.orientation import axis_permutation, axis_letters, compose, slice_axis
from napari_attnseg.volume import Volume, zyx_affine_from_nifti, volume_from_affine


def _signed_permutations():
    for perm in permutations(range(3)):
        for signs in product((1.0, -1.0), repeat=3):
            d = np.zeros((3, 3))
            for col, (row, sign) in enumerate(zip(perm, signs)):
                d[row, col] = sign
            yield d


def _file_volume(case):
    data_ijk, aff, _ = stored(case)
    return volume_from_affine(np.ascontiguousarray(data_ijk.T), zyx_affine_from_nifti(aff),
                              modality="MR", source=f"{case}.nii.gz",
                              header={"format": "nifti"})


def _layer(data, kwargs, kind="Image"):
    """A duck-typed layer holding what napari would (scale, translate, affine, metadata)."""
    n = data.ndim
    return SimpleNamespace(data=data, scale=np.asarray(kwargs["scale"]),
                           translate=np.asarray(kwargs["translate"]),
                           affine=np.asarray(kwargs.get("affine", np.eye(n + 1))),
                           metadata=kwargs["metadata"], name=kwargs.get("name", "x"))


@pytest.mark.parametrize("d", list(_signed_permutations()), ids=lambda d: str(d.astype(int).tolist()))
def test_every_signed_permutation_is_put_in_world_order(d):
    perm = axis_permutation(d)
    shown = d[:, list(perm)]
    assert np.allclose(np.abs(shown), np.eye(3)), "the layer transform must not permute axes"
    assert axis_permutation(shown) == (0, 1, 2)  # idempotent
    assert slice_axis(d) == perm[0] and abs(d[0, perm[0]]) == 1  # the axis along S


def test_oblique_gets_the_nearest_axes_and_agrees_with_the_predictor_rule():
    from napari_attnseg.inference.preprocess import canonical_reorientation

    rng = np.random.default_rng(0)
    bases = list(_signed_permutations())
    for _ in range(50):
        base = bases[rng.integers(len(bases))]
        ax, az = np.deg2rad(rng.uniform(-25, 25, size=2))
        rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
        rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
        d = rz @ rx @ base
        perm = axis_permutation(d)
        assert perm == canonical_reorientation(d).perm
        assert np.allclose(np.abs(base[:, list(perm)]), np.eye(3))  # the nearest axes


def test_axis_letters_and_compose():
    psr = _file_volume("PSR")
    # (z, y, x) = (k, j, i) of a P, S, R file: R, S, P
    assert [a for a, _ in axis_letters(psr.direction)] == ["R", "S", "P"]
    assert compose((2, 0, 1), (1, 2, 0)) == (0, 1, 2)


@pytest.mark.parametrize("case", CASES)
def test_layer_order_round_trip_is_exact(case):
    vol = _file_volume(case)
    data, kwargs, kind = layer_data_tuple(vol, name=case)
    assert kind == "image"
    assert np.shares_memory(data, vol.data)  # a view: no copy, painting writes through
    layer = _layer(data, kwargs)
    lin = np.asarray(layer.affine)[:3, :3] @ np.diag(layer.scale)
    assert all(int(np.argmax(np.abs(lin[:, j]))) == j for j in range(3)), "no permutation"
    # every voxel keeps its world position: layer index = stored index permuted
    perm = kwargs["metadata"][META_KEY][STORAGE_AXES]
    rng = np.random.default_rng(1)
    for _ in range(20):
        src_idx = np.array([rng.integers(s) for s in vol.shape])
        lay_idx = src_idx[perm]
        assert data[tuple(lay_idx)] == vol.data[tuple(src_idx)]
        world_layer = (np.asarray(layer.affine) @ np.r_[layer.scale * lay_idx + layer.translate,
                                                        1.0])[:3]
        np.testing.assert_allclose(world_layer, (vol.affine @ np.r_[src_idx, 1.0])[:3],
                                   atol=1e-9)
    back = layer_to_source_volume(layer)
    assert back.shape == vol.shape and np.array_equal(back.data, vol.data)
    np.testing.assert_allclose(back.affine, vol.affine, rtol=0, atol=1e-12)
    assert dict(back.header) == {"format": "nifti"}  # the storage order is not written out
    shown = layer_to_volume(layer)  # what widgets compute on: the layer's own order
    assert shown.shape == data.shape and shown.source == f"{case}.nii.gz"


@pytest.mark.parametrize("case", ["PSR", "LIP-oblique"])
def test_derived_layers_write_back_in_the_stored_order(case):
    vol = _file_volume(case)
    data, kwargs, _ = layer_data_tuple(vol, name="scan")
    src = _layer(data, kwargs)
    result = (np.asarray(data) > np.median(data)).astype(np.uint8)  # computed on the layer grid
    kw = derived_layer_kwargs(src, "scan [attnseg]", provenance={"model": "m"}, shape=data.shape)
    derived = _layer(result, kw, "Labels")
    np.testing.assert_allclose(layer_to_volume(derived).affine, layer_to_volume(src).affine)
    saved = layer_to_source_volume(derived)
    np.testing.assert_allclose(saved.affine, vol.affine, atol=1e-12)
    perm = kwargs["metadata"][META_KEY][STORAGE_AXES]
    np.testing.assert_array_equal(saved.data, np.transpose(result, np.argsort(perm)))
    assert kw["metadata"][META_KEY]["world_axes"] == ["S", "A", "R"]


def test_foreign_layer_without_metadata_is_not_reordered():
    layer = SimpleNamespace(data=np.zeros((3, 4, 5)), scale=(1.0, 2.0, 3.0),
                            translate=(0.0, 0.0, 0.0), affine=None, metadata={}, name="f")
    kw = derived_layer_kwargs(layer, "f [x]")
    assert kw["scale"] == (1.0, 2.0, 3.0) and kw["metadata"][META_KEY]["world_axes"] is None
    assert layer_to_source_volume(layer).shape == (3, 4, 5)


def test_2d_image_in_permuted_order():
    vol = Volume(np.arange(20.0).reshape(4, 5), (0.3, 0.4), origin=(1.0, 2.0),
                 direction=np.array([[0.0, 1.0], [1.0, 0.0]]))
    data, kwargs, _ = layer_data_tuple(vol)
    assert data.shape == (5, 4) and "affine" not in kwargs
    back = layer_to_source_volume(_layer(data, kwargs))
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-12)
    assert np.array_equal(back.data, vol.data)
