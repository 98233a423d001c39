"""2D models that declare the pixel sizes they were trained on (``ModelSpec.inplane_spacing``):
a slice with a known pixel size outside the range is resized to its nearest end before the
network and the result back to the slice's grid; a nominal spacing (no voxel size in the file,
a bare array, a layer at napari's default scale) is used as it is; training and fine-tuning
resize their slices by the same factors as inference."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_attnseg.errors import ModelError
from napari_attnseg.inference.predictor import (PredictConfig, resize_probabilities_inplane, as_volume,
                                                inplane_factors, model_grid_shape, predict, predict_slice,
                                                rescale_note)
from napari_attnseg.inference.preprocess import inplane_factors as factors_for, resample
from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
from napari_attnseg.model.checkpoint import ModelSpec, load_model, save_model
from napari_attnseg.model.config_check import check_config
from napari_attnseg.volume import SPACING_NOMINAL, Volume, spacing_is_nominal

ARCH = UNetConfig(spatial_dims=2, in_channels=1, out_channels=3, channels=(4, 8, 16))
LABELS = {0: "background", 1: "a", 2: "b"}
CFG = PredictConfig(device="cpu", precision="fp32", tta=False)


def _model(tmp_path, rng=(1.0, 1.5), zoom=1.0):
    spec = ModelSpec(arch=ARCH, label_names=LABELS, modality="MR", normalization={"preset": "MR"},
                     patch_size=(32, 32), name="px", inplane_spacing=rng, inplane_zoom=zoom)
    torch.manual_seed(0)
    return load_model(save_model(tmp_path / f"px-{rng}-{zoom}", AttentionUNet(ARCH), spec))


def _volume(pixel=0.5, shape=(4, 40, 48), nominal=False):
    data = np.random.default_rng(0).normal(100.0, 30.0, shape).astype(np.float32)
    return Volume(data, (5.0, pixel, pixel), modality="MR", header={SPACING_NOMINAL: True} if nominal else {})


def test_factors_bring_a_pixel_size_to_the_nearest_end_of_the_range():
    assert factors_for(1.0, (1.0, 1.5), (1.2, 1.4)) == (1.0, 1.0)  # inside: as it is
    assert factors_for(1.0, (1.0, 1.5), (0.5, 0.5)) == (0.5, 0.5)  # 0.5 mm -> 1.0 mm pixels
    assert factors_for(1.0, (1.0, 1.5), (3.0, 0.75)) == (2.0, 0.75)  # per axis
    assert factors_for(0.5, (1.0, 1.5), (0.5, 1.2)) == (0.25, 0.5)  # times the model's zoom
    assert factors_for(0.5, None, (0.5, 0.5)) == (0.5, 0.5)  # no range: the zoom alone
    assert factors_for(1.0, (1.0, 1.5), None) == (1.0, 1.0)  # pixel size unknown
    # rows and columns apart (a coronal view: rows along 2-3 mm slices, columns across 3.75-4.9 mm)
    assert factors_for(1.0, (2.0, 3.0, 3.75, 4.9), (2.5, 1.0)) == (1.0, 1.0 / 3.75)
    assert factors_for(1.0, (2.0, 3.0, 3.75, 4.9), (1.0, 4.0)) == (0.5, 1.0)


def test_spec_and_config_checks(tmp_path):
    spec = ModelSpec(arch=ARCH, label_names=LABELS, patch_size=(32, 32), inplane_spacing=[1.37, 1.68])
    assert spec.inplane_spacing == (1.37, 1.68)
    d = spec.to_json_dict()
    assert d["inplane_spacing"] == [1.37, 1.68] and ModelSpec.from_json_dict(d) == spec
    assert "inplane_spacing" not in dataclasses.replace(spec, inplane_spacing=None).to_json_dict()
    check_config(d, "config.json")
    rows_cols = dataclasses.replace(spec, inplane_spacing=[2.0, 3.0, 3.75, 4.9])
    assert rows_cols.inplane_spacing == (2.0, 3.0, 3.75, 4.9)
    check_config(rows_cols.to_json_dict(), "config.json")
    for bad in ([1.68, 1.37], [0, 1], [1.0], "1.5", [1.0, 2.0, 3.0], [1.0, 2.0, 4.9, 3.75]):
        with pytest.raises(ValueError, match="inplane_spacing"):
            ModelSpec(arch=ARCH, label_names=LABELS, patch_size=(32, 32), inplane_spacing=bad)
        with pytest.raises(ModelError, match="inplane_spacing"):
            check_config({**d, "inplane_spacing": bad}, "config.json")
    arch3d = UNetConfig(spatial_dims=3, in_channels=1, out_channels=3, channels=(4, 8, 16))
    with pytest.raises(ValueError, match="2D models only"):
        ModelSpec(arch=arch3d, label_names=LABELS, patch_size=(32, 32, 32), inplane_spacing=(1, 2))


def test_the_network_sees_the_training_scale_and_the_labels_come_back_on_the_grid(tmp_path):
    model = _model(tmp_path)
    seen = []
    model.network.register_forward_hook(lambda m, inp, out: seen.append(tuple(inp[0].shape[-2:])))
    fine = _volume(0.5)  # 0.5 mm pixels for a 1.0-1.5 mm model: slices at half size
    assert inplane_factors(model, fine) == (0.5, 0.5)
    assert model_grid_shape(model, fine) == (4, 20, 24)
    pred = predict(model, fine, CFG)
    assert pred.labels.shape == fine.shape and pred.probabilities.shape == (3,) + fine.shape
    assert seen and all(s == (20, 24) for s in seen)
    assert pred.provenance["inplane_factors"] == [0.5, 0.5]
    assert rescale_note(model, fine).startswith("0.5 x 0.5 mm pixels, outside the 1-1.5 mm")
    np.testing.assert_allclose(pred.probabilities.sum(0), 1.0, atol=1e-5)
    seen.clear()
    preview = predict_slice(model, fine, 2, CFG)  # the preview resizes the same way
    assert seen == [(20, 24)] and preview.labels.shape == fine.shape[1:]
    assert "inplane_factors" not in preview.provenance  # the slab is not re-checked each preview
    np.testing.assert_array_equal(preview.labels, pred.labels[2])
    seen.clear()
    for unchanged in (_volume(1.25), _volume(0.5, nominal=True), as_volume(model, fine.data)):
        assert inplane_factors(model, unchanged) == (1.0, 1.0) and rescale_note(model, unchanged) == ""
        predict(model, unchanged, CFG)
        assert set(seen) == {(40, 48)}, seen
        seen.clear()


def test_nominal_spacing_is_what_the_files_say(tmp_path):
    nib = pytest.importorskip("nibabel")
    from napari_attnseg.io import read_volume

    data = np.random.default_rng(0).normal(size=(8, 8, 3)).astype(np.float32)
    cases = {"nominal.nii.gz": (np.eye(4), 0, True),  # ACDC as published
             "pixdim.nii.gz": (np.diag([4.88, 4.88, 2.5, 1]), 0, False),  # OpenKBP: codes 0, real pixdim
             "coded.nii.gz": (np.eye(4), 1, False)}  # 1 mm with a real qform/sform
    for name, (aff, code, nominal) in cases.items():
        img = nib.Nifti1Image(data, aff if code else None)  # (an affine alone writes sform 2)
        img.header.set_zooms(tuple(np.diag(aff)[:3]))
        nib.save(img, str(tmp_path / name))
        assert spacing_is_nominal(read_volume(tmp_path / name)) is nominal, name


def test_training_items_are_cut_at_the_scale_inference_uses(tmp_path):
    from napari_attnseg.training.dataset import TrainingPair, prepare_pairs

    model = _model(tmp_path)
    image = _volume(0.5)
    labels = np.zeros(image.shape, np.uint8)
    labels[:, 10:30, 12:36] = 1
    labels[:, 16:22, 20:28] = 2
    pair = TrainingPair(image, dataclasses.replace(image, data=labels, is_labels=True))
    items = prepare_pairs([pair], model.spec, 3)
    assert {it.image.shape for it in items} == {(20, 24)}
    assert {it.labels.shape for it in items} == {(20, 24)}
    assert set(np.unique(items[0].labels)) == {0, 1, 2}  # nearest neighbour: no new values
    plain = prepare_pairs([pair], dataclasses.replace(model.spec, inplane_spacing=None), 3)
    assert {it.image.shape for it in plain} == {(40, 48)}


def test_probabilities_come_back_as_the_linear_zoom_did():
    p = np.random.default_rng(3).random((4, 5, 30, 20)).astype(np.float32)
    p /= p.sum(0, keepdims=True)  # probabilities: bilinear keeps the sum, the renormalization is rounding
    np.testing.assert_allclose(resize_probabilities_inplane(p, (5, 61, 45)),
                               resample(p, (5, 61, 45), order=1, channels_first=True), atol=1e-5)
    np.testing.assert_allclose(resize_probabilities_inplane(p[:, 0], (61, 45)),
                               resample(p[:, 0], (61, 45), order=1, channels_first=True), atol=1e-5)


def test_a_layer_at_napari_default_scale_is_nominal():
    from types import SimpleNamespace

    from napari_attnseg._napari.layers import layer_to_volume, volume_to_layer_kwargs

    def layer(data, scale=(1.0, 1.0, 1.0), metadata=None):
        return SimpleNamespace(data=data, scale=scale, translate=(0.0,) * 3, rotate=None, shear=None,
                               affine=None, metadata=metadata or {}, name="x")

    bare = np.zeros((3, 8, 8), np.float32)
    assert spacing_is_nominal(layer_to_volume(layer(bare)))  # napari's default scale
    assert not spacing_is_nominal(layer_to_volume(layer(bare, scale=(2.5, 0.7, 0.7))))
    vol = _volume(0.5)
    kw = volume_to_layer_kwargs(vol, name="v")  # the plugin's own layer: its header decides
    back = layer_to_volume(layer(vol.data, tuple(kw["scale"]), kw["metadata"]))
    assert not spacing_is_nominal(back) and back.spacing == vol.spacing
    nominal = _volume(0.5, nominal=True)
    kw = volume_to_layer_kwargs(nominal, name="n")
    assert spacing_is_nominal(layer_to_volume(layer(nominal.data, tuple(kw["scale"]), kw["metadata"])))


def test_the_large_volume_argmax_gives_numpys_labels_ties_included(monkeypatch):
    import napari_attnseg.inference.sliding_window as sw

    rng = np.random.default_rng(5)
    p = rng.random((5, 3, 40, 30)).astype(np.float32)
    p[:, 0, :5] = 0.2  # ties: the lower class wins
    p[2, 1, :5] = p[4, 1, :5] = 0.9
    expected = np.argmax(p, axis=0).astype(np.uint8)
    monkeypatch.setattr(sw, "TORCH_ARGMAX_VOXELS", 1)  # the torch passes on a small array
    got = sw.labels_from_probabilities(p)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)


def test_a_sagittally_stored_scan_is_resized_by_its_axial_pixels(tmp_path):
    """Array axes (x, y, z) in storage, 5 mm apart along x: the model cuts axial slices (world
    S first) and resizes them by the in-plane (y, z) pixel size, not by the stored last two axes."""
    model = _model(tmp_path)
    data = np.random.default_rng(1).normal(100.0, 30.0, (40, 48, 4)).astype(np.float32)
    # array axis 0 runs along world x (R), axis 1 along world A, axis 2 along world S
    direction = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    vol = Volume(data, (0.5, 0.5, 5.0), direction=direction, modality="MR")
    assert inplane_factors(model, vol) == (0.5, 0.5)
    pred = predict(model, vol, CFG)
    assert pred.labels.shape == vol.shape
    assert model_grid_shape(model, vol) == (4, 24, 20)
