"""2.5D models (``ModelSpec.context_slices``): the neighbouring slices as input channels, built
one way for training, whole-volume inference, the slice preview and the scribble fine-tune;
a one-slice model's weights start a 2.5D model exactly where it was."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_attnseg.errors import ModelError
from napari_attnseg.inference.predictor import (PredictConfig, _prepare, drain, intensity_for, predict,
                                                predict_job, predict_slice)
from napari_attnseg.inference.preprocess import stack_context
from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
from napari_attnseg.model.checkpoint import ModelSpec, load_model, save_model
from napari_attnseg.model.config_check import check_config
from napari_attnseg.volume import Volume

ARCH = UNetConfig(spatial_dims=2, in_channels=1, out_channels=3, channels=(4, 8, 16))
LABELS = {0: "background", 1: "a", 2: "b"}


def _volume(seed: int = 0, z: int = 9) -> Volume:
    rng = np.random.default_rng(seed)
    return Volume(rng.normal(100.0, 30.0, (z, 24, 32)).astype(np.float32), (2.5, 1.0, 1.0), modality="MR")


def _model(tmp_path, k: int, seed: int = 0, state: dict | None = None):
    arch = dataclasses.replace(ARCH, in_channels=2 * k + 1)
    spec = ModelSpec(arch=arch, label_names=LABELS, modality="MR", normalization={"preset": "MR"},
                     patch_size=(32, 32), name=f"ctx{k}", context_slices=k)
    torch.manual_seed(seed)
    net = AttentionUNet(arch)
    if state is not None:
        net.load_state_dict(state)
    return load_model(save_model(tmp_path / f"ctx{k}-{seed}", net, spec))


def test_stack_context_against_a_loop():
    data = np.random.default_rng(1).normal(size=(5, 3, 4)).astype(np.float32)
    for k in (0, 1, 2, 6):
        got = stack_context(data, k)
        assert got.shape == (2 * k + 1, 5, 3, 4)
        for c in range(2 * k + 1):
            for z in range(5):
                np.testing.assert_array_equal(got[c, z], data[min(max(z + c - k, 0), 4)])
    image = data[0]
    np.testing.assert_array_equal(stack_context(image, 2), np.stack([image] * 5))
    with pytest.raises(ValueError, match="context_slices"):
        stack_context(data, 9)
    with pytest.raises(ValueError, match="2.5D input"):
        stack_context(data[None], 1)


def test_spec_and_config_checks():
    with pytest.raises(ValueError, match="in_channels = 5"):
        ModelSpec(arch=ARCH, label_names=LABELS, patch_size=(32, 32), context_slices=2)
    arch3d = UNetConfig(spatial_dims=3, in_channels=3, out_channels=3, channels=(4, 8, 16))
    with pytest.raises(ValueError, match="2D models only"):
        ModelSpec(arch=arch3d, label_names=LABELS, patch_size=(32, 32, 32), context_slices=1)
    with pytest.raises(ValueError, match="integer"):
        ModelSpec(arch=ARCH, label_names=LABELS, patch_size=(32, 32), context_slices=True)
    spec = ModelSpec(arch=dataclasses.replace(ARCH, in_channels=3), label_names=LABELS, patch_size=(32, 32),
                     context_slices=1)
    d = spec.to_json_dict()
    assert d["context_slices"] == 1 and ModelSpec.from_json_dict(d) == spec
    assert "context_slices" not in dataclasses.replace(spec, arch=ARCH, context_slices=0).to_json_dict()
    check_config(d, "config.json")
    for bad, why in (({**d, "context_slices": 2}, "in_channels = 5"), ({**d, "context_slices": -1}, "0..8"),
                     ({**d, "context_slices": "1"}, "integer")):
        with pytest.raises(ModelError, match=why):
            check_config(bad, "config.json")


def test_the_network_sees_exactly_k_neighbours_a_side(tmp_path):
    vol = _volume()
    changed = Volume(vol.data.copy(), vol.spacing, modality="MR")
    changed.data[5] += np.random.default_rng(2).normal(0, 40.0, changed.data[5].shape).astype(np.float32)
    for k in (0, 2):
        model = _model(tmp_path, k)
        # one intensity normalization for both runs: only slice 5's voxels differ
        cfg = PredictConfig(device="cpu", precision="fp32", tta=False)
        intensity = intensity_for(model, vol, cfg)
        a = drain(predict_job(model, vol, cfg, intensity=intensity)).probabilities
        b = drain(predict_job(model, changed, cfg, intensity=intensity)).probabilities
        moved = [z for z in range(vol.shape[0]) if not np.allclose(a[:, z], b[:, z], atol=1e-6)]
        assert moved == list(range(5 - k, 5 + k + 1)), (k, moved)


def test_preview_training_and_inference_see_the_same_input(tmp_path):
    from napari_attnseg.training.dataset import TrainingPair, prepare_pairs

    vol = _volume(3)
    model = _model(tmp_path, 2, seed=4)
    cfg = PredictConfig(device="cpu", precision="fp32", tta=False)
    whole = predict(model, vol, cfg).probabilities
    for i in (0, 1, 4, vol.shape[0] - 1):
        np.testing.assert_allclose(predict_slice(model, vol, i, cfg).probabilities, whole[:, i], atol=1e-5)
    prep = _prepare(model, vol, intensity_for(model, vol, cfg))
    assert prep.image.shape == (5,) + vol.shape
    labels = Volume(np.zeros(vol.shape, np.uint8), vol.spacing, is_labels=True)
    items = prepare_pairs([TrainingPair(vol, labels)], model.spec, 3)
    assert len(items) == vol.shape[0]
    for s, it in enumerate(items):
        assert it.image.shape == (5, 24, 32) and it.labels.shape == (24, 32)
        np.testing.assert_allclose(it.image, prep.image[:, s], atol=1e-6)
    image2d = Volume(vol.data[4], (1.0, 1.0), modality="MR")
    assert predict(model, image2d, cfg).labels.shape == (24, 32)


def test_inflated_weights_predict_what_the_one_slice_model_did(tmp_path):
    from napari_attnseg.commands.train import inflated_state

    one = _model(tmp_path, 0, seed=5)
    target = AttentionUNet(dataclasses.replace(ARCH, in_channels=5)).state_dict()
    state = inflated_state(one.network.state_dict(), target)
    changed = [k for k in target if target[k].shape != one.network.state_dict()[k].shape]
    assert changed and all(state[k].shape == target[k].shape for k in target)
    wide = _model(tmp_path, 2, state=state)
    vol = _volume(6)
    cfg = PredictConfig(device="cpu", precision="fp32", tta=False)
    np.testing.assert_allclose(predict(wide, vol, cfg).probabilities, predict(one, vol, cfg).probabilities,
                               atol=1e-5)
    with pytest.raises(ValueError, match="cannot inflate"):
        inflated_state(one.network.state_dict(),
                       AttentionUNet(dataclasses.replace(ARCH, in_channels=5, channels=(4, 8, 32))).state_dict())


def test_random_crop_moves_every_channel_as_the_one_slice():
    from napari_attnseg.training.augment import AugmentParams, random_crop

    rng = np.random.default_rng(7)
    image = rng.normal(size=(40, 36)).astype(np.float32)
    labels = (rng.random((40, 36)) > 0.5).astype(np.int64)
    mask = np.ones((40, 36), bool)
    spatial_only = AugmentParams(p_rotate=1.0, p_scale=1.0, p_elastic=1.0, p_flip=1.0, p_rot90=1.0,
                                 p_int_scale=0.0, p_int_shift=0.0, p_gamma=0.0, p_noise=0.0)
    stack = np.stack([image, image + 1.0, image * 2.0])
    for seed in range(4):
        one = random_crop(image, labels, mask, (32, 32), np.random.default_rng(seed), params=spatial_only)
        many = random_crop(stack, labels, mask, (32, 32), np.random.default_rng(seed), params=spatial_only)
        assert many[0].shape == (3, 32, 32)
        np.testing.assert_array_equal(many[1], one[1])
        np.testing.assert_array_equal(many[2], one[2])
        np.testing.assert_allclose(many[0][0], one[0], atol=1e-5)
        np.testing.assert_allclose(many[0][1], one[0] + 1.0, atol=1e-4)
        np.testing.assert_allclose(many[0][2], one[0] * 2.0, atol=1e-4)
    with pytest.raises(ValueError, match="do not match"):
        random_crop(stack[:, :30], labels, mask, (32, 32), rng)


def test_scribble_finetune_of_a_2p5d_model(tmp_path):
    from napari_attnseg.interactive import IGNORE
    from napari_attnseg.training.scribble_finetune import (ScribbleFinetuneConfig, prepare_targets,
                                                           scribble_finetune)

    model = _model(tmp_path, 1, seed=8)
    vol = _volume(9, z=6)
    scr = np.full(vol.shape, IGNORE, np.uint8)
    scr[2, 5:8, 4:20] = 1
    scr[2, 15:18, 4:20] = 0
    t = prepare_targets(model, vol, scr, ScribbleFinetuneConfig(target="scribbles"))
    assert t.images.shape == (6, 3, 24, 32)
    # whole slices through the decoder on cached encoder outputs, and augmented crops of all
    for extra in ({}, {"train": "all", "patch_size": 16, "augment": True, "pairwise_weight": 0.5}):
        cfg = ScribbleFinetuneConfig(target="scribbles", max_steps=3, max_seconds=60.0, batch_size=2, **extra)
        res = scribble_finetune(model, vol, scr, cfg)
        assert res.steps == 3 and np.isfinite(res.losses).all()


def test_onnx_runtime_runs_a_2p5d_model_as_torch_does(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from napari_attnseg.inference.onnx_backend import onnx_model

    model = _model(tmp_path, 2, seed=10)
    vol = _volume(11)
    cfg = PredictConfig(device="cpu", precision="fp32", tta=False)
    np.testing.assert_allclose(predict(onnx_model(model), vol, cfg).probabilities,
                               predict(model, vol, cfg).probabilities, atol=1e-4)
