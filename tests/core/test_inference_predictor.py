"""The predictor: input checks, geometry round trips, provenance, device choice, memory plan,
OOM retry, preview = whole-volume slice (tiny random models, no napari)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_attnseg._progress import drain
from napari_attnseg.errors import ModelError
from napari_attnseg.inference import device as device_mod
from napari_attnseg.inference.memory import plan_memory
from napari_attnseg.inference.predictor import (
    PredictConfig,
    plan_prediction,
    predict,
    predict_job,
    predict_slice,
)
from napari_attnseg.inference.preprocess import (
    canonical_reorientation,
    from_canonical,
    intensity_params,
    normalize_intensity,
    resample,
    to_canonical,
)
from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
from napari_attnseg.model.checkpoint import LoadedModel, ModelSpec, load_model, save_model
from napari_attnseg.volume import Volume


def tiny_model(tmp_path, dims=2, in_channels=1, classes=2, patch=None, target_spacing=None,
               modality="CT", name="tiny", seed=0) -> LoadedModel:
    torch.manual_seed(seed)
    cfg = UNetConfig(spatial_dims=dims, in_channels=in_channels, out_channels=classes,
                     channels=(4, 8, 16))
    net = AttentionUNet(cfg)
    patch = patch or ((32, 32) if dims == 2 else (16, 16, 16))
    spec = ModelSpec(arch=cfg, label_names={i: f"c{i}" for i in range(classes)},
                     modality=modality, patch_size=patch, target_spacing=target_spacing,
                     name=name, version="1")
    folder = save_model(tmp_path / f"{name}-{dims}d-{in_channels}-{classes}", net, spec)
    return load_model(folder)


def _volume(shape, spacing=None, direction=None, seed=0, modality="CT"):
    rng = np.random.default_rng(seed)
    data = rng.normal(0, 300, size=shape).astype(np.float32)
    return Volume(data=data, spacing=spacing or (1.0,) * len(shape), direction=direction,
                  origin=(10.0, -5.0, 3.0)[: len(shape)], modality=modality, source="test.nii.gz")


# --------------------------------------------------------------------------- device
def test_gpu_less_run_picks_cpu_and_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "_mps_available", lambda: False)
    dev = device_mod.select_device("auto")
    assert dev.type == "cpu"
    assert "CPU" in device_mod.device_summary(dev) and "no GPU" in device_mod.device_summary(dev)
    with pytest.raises(ModelError, match="no CUDA GPU"):
        device_mod.select_device("cuda")
    with pytest.raises(ValueError, match="did you mean 'cuda'"):
        device_mod.select_device("cdua")


def test_autocast_only_where_asked():
    import contextlib
    assert isinstance(device_mod.autocast_context("cpu", "fp32"), contextlib.nullcontext)
    assert isinstance(device_mod.autocast_context("cpu", "amp"), contextlib.nullcontext)
    ctx = device_mod.autocast_context("cpu", "bf16")
    with ctx:
        y = torch.nn.Linear(4, 4)(torch.ones(1, 4))
    assert y.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        device_mod.autocast_context("cpu", "fp8")


# --------------------------------------------------------------------------- preprocessing
def test_intensity_presets():
    rng = np.random.default_rng(0)
    ct = rng.uniform(-3000, 3000, size=(20, 20)).astype(np.float32)
    out = normalize_intensity(ct, "CT")
    ref = (np.clip(ct, -1000, 1000)) / 1000.0
    np.testing.assert_allclose(out, ref, atol=1e-6)
    out = normalize_intensity(ct, "ct", {"clip": [-100, 200], "mean": 50, "std": 10})
    np.testing.assert_allclose(out, (np.clip(ct, -100, 200) - 50) / 10, rtol=1e-5)
    mr = rng.gamma(2.0, 100.0, size=(64, 64)).astype(np.float32)
    out = normalize_intensity(mr, "MR")
    lo, hi = np.percentile(mr, [0.5, 99.5])
    c = np.clip(mr, lo, hi)
    np.testing.assert_allclose(out, (c - c.mean()) / c.std(), atol=1e-4)
    us = rng.uniform(0, 255, size=(64, 64)).astype(np.float32)
    out = normalize_intensity(us, "US")
    lo, hi = np.percentile(us, [1, 99])
    np.testing.assert_allclose(out, (np.clip(us, lo, hi) - lo) / (hi - lo), atol=1e-5)
    assert out.min() == 0 and out.max() == pytest.approx(1)
    p = intensity_params(np.zeros((4, 4)), "MR")  # constant image: no division by zero
    assert np.isfinite(p.apply(np.zeros((4, 4)))).all()


@pytest.mark.parametrize("direction", [
    np.eye(3),
    np.diag([-1.0, 1.0, -1.0]),
    np.array([[0, 0, 1.0], [-1.0, 0, 0], [0, 1.0, 0]]),  # PSR-like permutation with a flip
])
def test_reorientation_round_trip(direction):
    data = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    reo = canonical_reorientation(direction)
    can = to_canonical(data, reo, channels_first=True)
    # canonical direction is the identity: d[:, perm] with flips applied
    d = direction[:, list(reo.perm)] * np.array([-1 if i in reo.flip else 1 for i in range(3)])
    np.testing.assert_allclose(d, np.eye(3))
    np.testing.assert_array_equal(from_canonical(can, reo, channels_first=True), data)


def test_resample_exact_shape():
    x = np.random.default_rng(0).random((7, 9, 11)).astype(np.float32)
    y = resample(x, (14, 5, 11))
    assert y.shape == (14, 5, 11)
    z = resample(np.stack([x, 1 - x]), (3, 4, 5), channels_first=True)
    assert z.shape == (2, 3, 4, 5)
    np.testing.assert_allclose(z.sum(0), 1.0, atol=1e-5)  # linear interp keeps sums


# --------------------------------------------------------------------------- predictor
def test_2d_model_on_volume_odd_shape_round_trip(tmp_path):
    model = tiny_model(tmp_path)
    vol = _volume((3, 37, 45))
    res = predict(model, vol, PredictConfig(overlap=0.25, batch_size=2, window="patch"))
    assert res.probabilities.shape == (2, 3, 37, 45) and res.probabilities.dtype == np.float32
    assert res.labels.shape == (3, 37, 45) and res.labels.dtype == np.uint8
    np.testing.assert_allclose(res.probabilities.sum(0), 1, atol=1e-5)
    np.testing.assert_array_equal(res.labels, res.probabilities.argmax(0))
    assert res.n_windows == 3 * 2 * 2  # per slice: 2 windows along y and x
    assert "CPU" in res.device


def test_one_window_equals_forward(tmp_path):
    model = tiny_model(tmp_path)
    vol = _volume((32, 32))
    res = predict(model, vol, PredictConfig(precision="fp32"))
    x = np.clip(vol.data, -1000, 1000) / 1000.0
    with torch.inference_mode():
        ref = torch.softmax(model.network(torch.from_numpy(x)[None, None]), 1)[0].numpy()
    np.testing.assert_allclose(res.probabilities, ref, atol=1e-5)


def test_auto_precision_is_bf16_only_on_a_cpu_with_native_bf16(tmp_path, monkeypatch):
    """precision "auto" (the default) runs bf16 autocast where the CPU has AMX / AVX512-BF16
    and fp32 elsewhere; the provenance says which ran; an explicit choice is kept."""
    from napari_attnseg.inference import device as dev

    model = tiny_model(tmp_path)
    vol = _volume((32, 32))
    fp32 = predict(model, vol, PredictConfig(precision="fp32"))
    for native, expected in ((False, "fp32"), (True, "bf16")):
        monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda n=native: n)
        assert dev.resolve_precision("auto", "cpu") == expected
        assert dev.resolve_precision("fp32", "cpu") == "fp32"
        assert dev.resolve_precision("auto", "cuda") == "fp32"
        res = predict(model, vol)
        assert res.provenance["precision"] == expected
        assert res.provenance["config"]["precision"] == "auto"
        if expected == "fp32":
            np.testing.assert_array_equal(res.probabilities, fp32.probabilities)
        else:  # bf16 rounds the activations: close, not equal
            assert not np.array_equal(res.probabilities, fp32.probabilities)
            np.testing.assert_allclose(res.probabilities, fp32.probabilities, atol=0.05)


def test_a_model_declares_its_tta_default_and_the_caller_overrides_it(tmp_path):
    """ModelSpec.tta (config.json "tta": true) makes PredictConfig(tta=None), the default,
    mirror; tta=False / True still decide; the provenance says which ran; a config whose
    "tta" is not a boolean is refused by the loader's check, naming the entry."""
    import json as _json

    from napari_attnseg.errors import ModelError
    from napari_attnseg.model.checkpoint import load_model as _load

    model = tiny_model(tmp_path)
    spec = dataclasses.replace(model.spec, tta=True)
    assert spec.to_json_dict()["tta"] is True and "tta" not in model.spec.to_json_dict()
    declared = dataclasses.replace(model, spec=spec)
    vol = _volume((32, 32))
    plain = predict(model, vol, PredictConfig(precision="fp32"))
    mirrored = predict(model, vol, PredictConfig(precision="fp32", tta=True))
    default = predict(declared, vol, PredictConfig(precision="fp32"))
    off = predict(declared, vol, PredictConfig(precision="fp32", tta=False))
    assert not np.allclose(plain.probabilities, mirrored.probabilities, atol=1e-6)
    np.testing.assert_array_equal(default.probabilities, mirrored.probabilities)
    np.testing.assert_array_equal(off.probabilities, plain.probabilities)
    assert (plain.provenance["tta"], default.provenance["tta"], off.provenance["tta"]) == \
        (False, True, False)
    with pytest.raises(ValueError, match="tta"):
        PredictConfig(tta="yes")
    cfg_path = Path(model.folder) / "config.json"
    d = _json.loads(cfg_path.read_text())
    from napari_attnseg.model.config_check import CONFIG_HASH_KEY, config_hash

    d["tta"] = "yes"
    d.pop(CONFIG_HASH_KEY, None)
    d[CONFIG_HASH_KEY] = config_hash(d)  # an intended edit, so the hash check passes
    cfg_path.write_text(_json.dumps(d))
    with pytest.raises(ModelError, match="'tta' must be true or false"):
        _load(model.folder)


def test_3d_model_reorients_resamples_and_returns_original_grid(tmp_path):
    model = tiny_model(tmp_path, dims=3, target_spacing=(2.0, 1.0, 1.0))
    direction = np.array([[0, 0, 1.0], [-1.0, 0, 0], [0, 1.0, 0]])
    vol = _volume((13, 18, 10), spacing=(1.0, 1.5, 2.0), direction=direction)
    res = predict(model, vol)
    assert res.probabilities.shape == (2, 13, 18, 10)
    np.testing.assert_allclose(res.probabilities.sum(0), 1, atol=1e-4)
    # the same scan stored canonically gives the same probabilities (orientation-independent)
    reo = canonical_reorientation(direction)
    can = Volume(data=np.ascontiguousarray(to_canonical(vol.data, reo)),
                 spacing=tuple(vol.spacing[p] for p in reo.perm), modality="CT")
    res_can = predict(model, can)
    back = from_canonical(res_can.probabilities, reo, channels_first=True)
    np.testing.assert_allclose(back, res.probabilities, atol=1e-5)


def test_provenance_and_geometry_fields(tmp_path):
    model = tiny_model(tmp_path)
    cfg = PredictConfig(overlap=0.3, tta=True, device="cpu")
    res = predict(model, _volume((40, 33)), cfg)
    prov = res.provenance
    assert prov["model_id"] == model.model_id and prov["weights_sha256"] == model.weights_sha256
    assert prov["model_name"] == "tiny" and prov["model_version"] == "1"
    assert prov["config"] == dataclasses.asdict(cfg) and prov["config"]["tta"] is True
    assert prov["intensity"]["preset"] == "CT" and prov["date"] and prov["source"] == "test.nii.gz"
    json.dumps(prov)  # sidecar-ready


def test_bad_inputs_give_clear_messages(tmp_path):
    model2d = tiny_model(tmp_path)
    with pytest.raises(ModelError, match=r"2D model .* 4 dimensions .*channel or time point"):
        predict(model2d, np.zeros((2, 3, 32, 32), np.float32))
    two_ch = tiny_model(tmp_path, in_channels=2, name="twoch")
    with pytest.raises(ModelError, match=r"expects 2 input channels .* has 1 channel"):
        predict(two_ch, _volume((32, 32)))
    model3d = tiny_model(tmp_path, dims=3, name="three")
    with pytest.raises(ModelError, match="3D model .* 2D slice"):
        predict(model3d, _volume((32, 32)))
    with pytest.raises(ValueError, match="overlap"):
        PredictConfig(overlap=1.5)
    with pytest.raises(ValueError, match="did you mean"):
        PredictConfig(device="gpu0")
    with pytest.raises(ValueError, match="slice index"):
        predict_slice(model2d, _volume((3, 32, 32)), 5)


def test_corrupted_weights_message_reaches_the_predictor_path(tmp_path):
    model = tiny_model(tmp_path)
    weights = next(p for p in model.folder.iterdir() if p.name != "config.json")
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelError, match="corrupt"):
        load_model(model.folder)
    weights.unlink()
    with pytest.raises(ModelError, match="missing"):
        load_model(model.folder)


def test_preview_slice_matches_whole_volume(tmp_path):
    model = tiny_model(tmp_path, modality="MR")
    vol = _volume((5, 40, 36), modality="MR")
    whole = predict(model, vol)
    prev = predict_slice(model, vol, 3)
    assert prev.probabilities.shape == (2, 40, 36) and prev.labels.shape == (40, 36)
    np.testing.assert_allclose(prev.probabilities, whole.probabilities[:, 3], atol=1e-5)
    assert prev.provenance["slice_index"] == 3
    model3 = tiny_model(tmp_path, dims=3, name="m3")
    vol3 = _volume((20, 16, 16))
    p3 = predict_slice(model3, vol3, 10)
    assert p3.probabilities.shape == (2, 16, 16)


def test_warm_up_returns_the_run_normalization_and_changes_no_result(tmp_path):
    from napari_attnseg.inference.predictor import intensity_for, warm_up

    model = tiny_model(tmp_path, modality="MR")
    vol = _volume((5, 40, 36), modality="MR")
    cold = predict_slice(model, vol, 1)
    result = warm_up(model, vol, index=4)
    assert result.intensity == intensity_for(model, vol, PredictConfig())
    assert 0 < result.preview_seconds < 10
    warm = predict_slice(model, vol, 1, intensity=result.intensity)
    np.testing.assert_array_equal(warm.probabilities, cold.probabilities)
    assert warm_up(model, _volume((40, 36), modality="MR")) is not None  # 2D images too
    model3 = tiny_model(tmp_path, dims=3, name="m3")
    assert warm_up(model3, _volume((20, 16, 16)), index=99) is not None  # clamped to the volume


def test_cancel_stops_predict_job_within_one_batch(tmp_path):
    model = tiny_model(tmp_path)
    calls = []
    net = model.network
    orig = net.forward

    def counting(x):
        calls.append(x.shape[0])
        return orig(x)

    net.forward = counting
    job = predict_job(model, _volume((12, 32, 32)), PredictConfig(batch_size=2))
    for p in job:
        if p.stage == "segmenting" and p.done == 1:
            job.close()
            break
    assert len(calls) == 1


def test_cuda_oom_retries_with_cpu_stitching_and_smaller_batches(tmp_path):
    model = tiny_model(tmp_path)
    orig = model.network.forward
    sizes = []

    def flaky(x):
        sizes.append(x.shape[0])
        if x.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return orig(x)

    model.network.forward = flaky
    stages = []
    res = drain(predict_job(model, _volume((3, 32, 32)), PredictConfig(batch_size=4)),
                lambda p: stages.append(p.stage))
    assert res.labels.shape == (3, 32, 32)
    assert sizes[:2] == [3, 2] and "retrying" in stages  # 4 -> 2 -> 1 window per batch
    model.network.forward = lambda x: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("oom"))
    with pytest.raises(ModelError, match="out of memory even with one window"):
        predict(model, _volume((3, 32, 32)))


def test_memory_plan_decisions():
    kw = dict(shape=(128, 256, 256), patch_size=(256, 256), overlap=0.5, num_classes=2,
              batch_size=4)
    ok = plan_memory(**kw, available_bytes=64 << 30, one_patch_seconds=0.04)
    assert ok.decision == "ok" and ok.n_windows == 128
    assert ok.seconds == pytest.approx(128 * 0.04 * 1.05)
    need = ok.peak_bytes
    half = plan_memory(**kw, available_bytes=int(need / 0.7 * 0.95))
    assert half.decision == "fp16_accumulator" and half.fp16_accumulator
    refuse = plan_memory(**kw, available_bytes=need // 10)
    assert refuse.decision == "refuse" and "needs about" in refuse.message
    gpu = plan_memory(**kw, available_bytes=64 << 30, device_type="cuda", device_free_bytes=1 << 20)
    assert gpu.decision == "stitch_on_cpu" and gpu.accumulate_on_cpu
    gpu_ok = plan_memory(**kw, available_bytes=64 << 30, device_type="cuda",
                         device_free_bytes=64 << 30)
    assert gpu_ok.decision == "ok" and not gpu_ok.accumulate_on_cpu


def test_refused_plan_raises_before_running(tmp_path, monkeypatch):
    model = tiny_model(tmp_path)
    from napari_attnseg.inference import memory
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 1000)
    plan = plan_prediction(model, _volume((4, 32, 32)))
    assert plan.decision == "refuse"
    with pytest.raises(ModelError, match="Crop the image"):
        predict(model, _volume((4, 32, 32)))


def test_preset_override_and_model_normalization(tmp_path):
    model = tiny_model(tmp_path)
    model = dataclasses.replace(model, spec=dataclasses.replace(
        model.spec, normalization={"clip": [-100.0, 200.0]}))
    vol = _volume((3, 32, 32))
    res = predict(model, vol)
    assert res.provenance["intensity"]["preset"] == "CT"
    assert res.provenance["intensity"]["clip"] == [-100.0, 200.0]
    res = predict(model, vol, PredictConfig(modality="mr"))
    assert res.provenance["intensity"]["preset"] == "MR"
    assert res.provenance["intensity"]["clip"] != [-100.0, 200.0]  # the CT window is dropped
    # IntensityParams.as_dict round-trips through a spec's normalization
    p = intensity_params(vol.data, "MR")
    q = intensity_params(vol.data * 3, "MR", p.as_dict())
    assert (q.lo, q.hi, q.shift, q.scale) == pytest.approx((p.lo, p.hi, p.shift, p.scale))


def test_window_modes_for_2d_models():
    """'slice' runs each whole slice (rounded up to the divisor) as one window; 'patch' keeps
    the training patch; 'auto' is 'slice' unless a slice is huge; bad names are refused."""
    from types import SimpleNamespace

    from napari_attnseg.inference.predictor import MAX_SLICE_WINDOW, window_patch

    model = SimpleNamespace(
        spec=SimpleNamespace(patch_size=(32, 32)),
        network=SimpleNamespace(divisor=16, config=SimpleNamespace(spatial_dims=2)),
    )
    assert window_patch(model, (5, 37, 45), PredictConfig(window="slice")) == (48, 48)
    assert window_patch(model, (5, 37, 45), PredictConfig(window="auto")) == (48, 48)
    assert window_patch(model, (5, 37, 45), PredictConfig(window="patch")) == (32, 32)
    huge = (1, 2048, MAX_SLICE_WINDOW // 2048 + 16)
    assert window_patch(model, huge, PredictConfig(window="auto")) == (32, 32)
    with pytest.raises(ValueError, match="window"):
        PredictConfig(window="tiles")


def test_default_batch_size_follows_the_device():
    """On the CPU, batching pays only for small windows (128x128: 0.74x the time; 256x256
    slices gained nothing): windows up to CPU_BATCH_PIXELS a batch; 4 on GPUs; an explicit
    batch size always wins."""
    import torch

    assert PredictConfig().batch_for(torch.device("cpu")) == 1
    assert PredictConfig().batch_for(torch.device("cpu"), (256, 256)) == 1
    assert PredictConfig().batch_for(torch.device("cpu"), (128, 128)) == 4
    assert PredictConfig().batch_for(torch.device("cpu"), (192, 192)) == 1
    assert PredictConfig().batch_for(torch.device("cpu"), (96, 96, 96)) == 1
    assert PredictConfig().batch_for(torch.device("cpu"), (64, 64)) == 4  # at most 4
    assert PredictConfig().batch_for(torch.device("cuda")) == 4
    assert PredictConfig(batch_size=3).batch_for(torch.device("cpu")) == 3
    with pytest.raises(ValueError, match="batch_size"):
        PredictConfig(batch_size=0)
