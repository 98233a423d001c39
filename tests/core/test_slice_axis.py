"""2D models run on axial slices whatever the storage order (a PSR scan used to be segmented in
sagittal slices), and the slice preview is the whole run's slice along that axis."""

import numpy as np
import pytest
import torch

from _orientation_cases import stored  # noqa: E402  (tests/core on sys.path)
from napari_attnseg._napari.layers import layer_data_tuple
from napari_attnseg.inference.predictor import (PredictConfig, predict, predict_slice,
                                                slice_axis, slice_order)
from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
from napari_attnseg.model.checkpoint import ModelSpec, load_model, save_model
from napari_attnseg.orientation import inverse_permutation
from napari_attnseg.volume import Volume, volume_from_affine, zyx_affine_from_nifti


def _model(tmp_path, dims=2):
    torch.manual_seed(0)
    cfg = UNetConfig(spatial_dims=dims, in_channels=1, out_channels=2, channels=(4, 8, 16))
    spec = ModelSpec(arch=cfg, label_names={0: "bg", 1: "fg"}, modality="MR",
                     patch_size=(32, 32) if dims == 2 else (16, 16, 16), name=f"t{dims}",
                     version="1")
    return load_model(save_model(tmp_path / f"m{dims}", AttentionUNet(cfg), spec))


def _volume(case):
    data_ijk, aff, _ = stored(case)
    return volume_from_affine(np.ascontiguousarray(data_ijk.T), zyx_affine_from_nifti(aff),
                              modality="MR")


def _record_inputs(model):
    shapes = []
    model.network.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
    return shapes


@pytest.mark.parametrize("case", ["PSR", "LIP", "LIP-oblique"])
def test_2d_model_sees_axial_slices_and_results_land_on_the_stored_grid(case, tmp_path):
    model = _model(tmp_path)
    vol = _volume(case)
    axis = slice_axis(vol)
    assert abs(vol.direction[0, axis]) > 0.9  # the stored axis along S
    shapes = _record_inputs(model)
    cfg = PredictConfig(window="slice")
    pred = predict(model, vol, cfg)
    assert pred.labels.shape == vol.shape
    # every forward pass got one axial slice: (A extent, R extent) = 30 x 40 voxels, padded
    # to the network's divisor (a sagittal slice of this scan is 20 x 30)
    assert shapes and all(s[-2:] == (32, 40) for s in shapes), shapes
    assert sum(s[0] for s in shapes) == vol.shape[axis]
    # the same as segmenting the scan as the viewer shows it (world axis order), put back
    shown, kwargs, _ = layer_data_tuple(vol)
    in_order = Volume(np.asarray(shown), kwargs["scale"], modality="MR")
    ref = predict(model, in_order, cfg)
    inv = inverse_permutation(slice_order(vol))
    np.testing.assert_allclose(pred.probabilities,
                               np.transpose(ref.probabilities, (0,) + tuple(i + 1 for i in inv)),
                               atol=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_slice_preview_is_the_whole_runs_slice_along_the_axial_axis(dims, tmp_path):
    model = _model(tmp_path, dims)
    vol = _volume("PSR")
    axis = slice_axis(vol)
    cfg = PredictConfig(window="slice")
    index = 15  # superior half of the 20 axial slices
    part = predict_slice(model, vol, index, cfg)
    expect_shape = tuple(s for i, s in enumerate(vol.shape) if i != axis)
    assert part.labels.shape == expect_shape
    if dims == 2:  # the same computation as the whole run's slice
        whole = predict(model, vol, cfg)
        np.testing.assert_allclose(part.probabilities,
                                   np.take(whole.probabilities, index, axis=axis + 1), atol=1e-5)
    with pytest.raises(ValueError, match="axial"):
        predict_slice(model, vol, vol.shape[axis], cfg)


@pytest.mark.parametrize("case", ["PSR", "LIP"])
def test_2d_training_cuts_the_same_axial_slices_as_inference(case, tmp_path):
    """Training pairs stored PSR/LIP give the network the slices inference gives it (axial, the
    in-plane axes in world order: the stored array transposed by the predictor's slice order),
    not slices along the stored first axis (sagittal for PSR)."""
    from napari_attnseg.training.dataset import TrainingPair, _normalize, prepare_pairs

    model = _model(tmp_path)
    image = _volume(case)
    perm = slice_order(image)
    assert perm != (0, 1, 2)
    lab = Volume((np.asarray(image.data) > 1000).astype(np.uint8), image.spacing,
                 image.origin, image.direction, is_labels=True)
    got = prepare_pairs([TrainingPair(image, lab, None, case)], model.spec, 2)
    seen = np.transpose(np.asarray(image.data), perm)  # what inference slices, axis 0 first
    # (intensities normalised per volume: the same numbers whatever the storage order)
    norm = np.transpose(_normalize(image, model.spec), perm)
    assert len(got) == seen.shape[0]
    for k, it in enumerate(got):
        assert it.image.shape == seen.shape[1:]
        np.testing.assert_allclose(it.image, norm[k], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(it.labels, seen[k] > 1000)
    assert sum(int((it.labels == 1).sum()) for it in got) == 6 * 5 * 4  # the marker block
