"""``backend="auto"``: ONNX Runtime on the CPU when installed, exported once into the user's cache
(never a model folder), agreeing with PyTorch on every shipped model (on real cases where
../shared/data is here), and PyTorch with one log line whenever ONNX Runtime cannot run."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_attnseg.cli import main
from napari_attnseg.inference import backend as be
from napari_attnseg.inference.predictor import PredictConfig, predict, slice_volume
from napari_attnseg.io import read_volume
from napari_attnseg.model.checkpoint import load_model
from napari_attnseg.model.registry import SHIPPED_ROOT, ModelRegistry

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[2]
CT = ROOT / "sample_data" / "ct_phantom.nii.gz"
FALLBACK = "running the network with PyTorch"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("user-cache")


@pytest.fixture(autouse=True)
def _cache_env(cache, monkeypatch):
    monkeypatch.setenv("ATTNSEG_CACHE", str(cache))


def _model(name: str):
    return load_model(ModelRegistry().resolve(name))


@pytest.fixture(scope="module")
def ct():
    return read_volume(CT)


def _fallback_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if FALLBACK in r.getMessage()]


def _agreement(a, b) -> float:
    return float(np.mean(a.labels == b.labels))


def test_auto_runs_onnxruntime_and_agrees_with_torch_on_the_sample_ct(ct, cache):
    model = _model("ct-phantom-2d")
    assert not be.is_ready(model, PredictConfig(device="cpu", backend="auto"))
    auto = predict(model, ct, PredictConfig(device="cpu", backend="auto"))
    assert be.is_ready(model, PredictConfig(device="cpu", backend="auto"))
    ref = predict(model, ct, PredictConfig(device="cpu", precision="fp32", backend="torch"))
    assert auto.provenance["backend"] == "onnxruntime" and ref.provenance["backend"] == "torch"
    assert auto.provenance["config"]["backend"] == "auto"
    assert _agreement(auto, ref) >= 0.999
    assert set(np.unique(auto.labels)) == {0, 1, 2}
    assert np.abs(auto.probabilities - ref.probabilities).max() < 1e-3
    entries = list((cache / "onnx").glob("ct-phantom-2d-*.onnx"))
    assert len(entries) == 1
    # never beside the model or in the registry
    assert not list(Path(model.folder).rglob("*.onnx")) and not list(SHIPPED_ROOT.rglob("*.onnx"))
    assert not list(Path(ModelRegistry().root).rglob("*.onnx"))


def _shared_case(shared_data: Path, name: str):
    cases = {
        "acdc-cardiac-mr-2d": (shared_data / "acdc" / "imagesTr" / "patient001_frame01.nii.gz",
                               {"modality": "MR"}),
        "hc18-ultrasound-2d": (shared_data / "hc18" / "images" / "000_HC.png",
                               {"modality": "US", "pixel_size_mm": 0.0691}),
        "openkbp-headneck-ct-2d": (shared_data / "openkbp_ct" / "imagesTr" / "openkbp_001.nii.gz",
                                   {"modality": "CT"}),
    }
    path, kw = cases[name]
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return read_volume(path, **kw)


@pytest.mark.parametrize("name", ["acdc-cardiac-mr-2d", "hc18-ultrasound-2d",
                                  "openkbp-headneck-ct-2d"])
def test_auto_agrees_with_torch_on_the_shipped_real_models(shared_data, name):
    volume = _shared_case(shared_data, name)
    model = _model(name)
    auto = predict(model, volume, PredictConfig(device="cpu", backend="auto"))
    ref = predict(model, volume, PredictConfig(device="cpu", precision="fp32", backend="torch"))
    assert auto.provenance["backend"] == "onnxruntime"
    assert _agreement(auto, ref) >= 0.999, (name, _agreement(auto, ref))
    assert ref.labels.any()
    steps = tuple(model.spec.postprocess)
    if name == "hc18-ultrasound-2d":  # the active version declares its post-processing
        assert steps and auto.provenance["postprocess"] == list(steps)


def test_missing_onnxruntime_falls_back_to_torch_with_one_log_line(ct, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    model = _model("ct-phantom-2d")
    caplog.set_level(logging.INFO, logger="napari_attnseg")
    first = predict(model, ct, PredictConfig(device="cpu", backend="auto"))
    predict(model, ct, PredictConfig(device="cpu", backend="auto"))
    assert first.provenance["backend"] == "torch"
    lines = _fallback_lines(caplog)
    assert len(lines) == 1 and "onnxruntime is not installed" in lines[0], lines
    from napari_attnseg.errors import ModelError

    with pytest.raises(ModelError, match="onnxruntime is not installed"):
        predict(model, ct, PredictConfig(device="cpu", backend="onnxruntime"))


def test_other_precision_and_cuda_fall_back_to_torch(ct, caplog):
    model = _model("ct-phantom-2d")
    caplog.set_level(logging.INFO, logger="napari_attnseg")
    one_slice = slice_volume(ct, 20)
    bf16 = predict(model, one_slice, PredictConfig(device="cpu", precision="bf16", backend="auto"))
    assert bf16.provenance["backend"] == "torch"
    net, name = be.network_for(model, torch.device("cuda"), PredictConfig(device="cpu",
                                                                          backend="auto"))
    assert name == "torch" and net is model.network  # nothing touched the (absent) GPU
    lines = _fallback_lines(caplog)
    assert len(lines) == 2 and "bf16" in lines[0] and "cuda" in lines[1], lines


def test_failed_export_falls_back_once_and_is_not_retried(ct, monkeypatch, caplog):
    from napari_attnseg.inference import onnx_backend

    calls = []

    def broken(model):
        calls.append(1)
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(onnx_backend, "onnx_bytes", broken)
    model = _model("ct-phantom-2d")
    with torch.no_grad():  # other weights than the cached export: this one must be exported
        next(model.network.parameters()).mul_(1.01)
    caplog.set_level(logging.INFO, logger="napari_attnseg")
    one_slice = slice_volume(ct, 20)
    for _ in range(2):
        out = predict(model, one_slice, PredictConfig(device="cpu", backend="auto"))
        assert out.provenance["backend"] == "torch"
    assert calls == [1]
    warnings = [r for r in caplog.records if FALLBACK in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "exporter exploded" in warnings[0].getMessage()


def test_weights_changed_in_memory_get_their_own_export(ct, cache):
    model = _model("ct-phantom-2d")
    one_slice = slice_volume(ct, 20)
    predict(model, one_slice, PredictConfig(device="cpu", backend="auto"))
    before = set((cache / "onnx").glob("*.onnx"))
    with torch.no_grad():
        for p in model.network.parameters():
            p.mul_(0.9)
    auto = predict(model, one_slice, PredictConfig(device="cpu", backend="auto"))
    ref = predict(model, one_slice, PredictConfig(device="cpu", precision="fp32", backend="torch"))
    assert auto.provenance["backend"] == "onnxruntime"
    assert len(set((cache / "onnx").glob("*.onnx")) - before) == 1
    assert np.abs(auto.probabilities - ref.probabilities).max() < 1e-3


def test_a_corrupt_cache_entry_is_exported_again(ct, cache, caplog):
    model = _model("ct-phantom-2d")
    path = be.cache_file(model, be.state_sha256(model.network))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not an onnx file")
    caplog.set_level(logging.WARNING, logger="napari_attnseg")
    one_slice = slice_volume(ct, 20)
    out = predict(model, one_slice, PredictConfig(device="cpu", backend="auto"))
    assert out.provenance["backend"] == "onnxruntime"
    assert any("unusable" in r.getMessage() for r in caplog.records)
    assert path.stat().st_size > 100_000
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_onnxruntime_threads_follow_torch_threads():
    model = _model("ct-phantom-2d")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = be.ort_network(model)
        assert one.session.get_session_options().intra_op_num_threads == 1
        assert be.ort_network(model, threads=2).session.get_session_options() \
            .intra_op_num_threads == 2
    finally:
        torch.set_num_threads(threads)


def test_cli_auto_records_the_backend_and_falls_back_without_onnxruntime(tmp_path, monkeypatch,
                                                                         caplog):
    from napari_attnseg.commands import _backend

    assert _backend.DEFAULT == be.DEFAULT_BACKEND  # the parser's default is the core's
    out = tmp_path / "auto.nii.gz"
    assert main(["predict", str(CT), "-o", str(out), "--model", "ct-phantom-2d",
                 "--backend", "auto", "--threads", "1", "-q"]) == 0
    side = json.loads((tmp_path / "auto.json").read_text())["provenance"]
    assert side["backend"] == "onnxruntime" and side["config"]["backend"] == "auto"
    assert main(["predict", str(CT), "-o", str(tmp_path / "default.nii.gz"), "--model",
                 "ct-phantom-2d", "-q"]) == 0
    side = json.loads((tmp_path / "default.json").read_text())["provenance"]
    assert side["config"]["backend"] == be.DEFAULT_BACKEND
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    caplog.set_level(logging.INFO, logger="napari_attnseg")
    assert main(["predict", str(CT), "-o", str(tmp_path / "torch.nii.gz"), "--model",
                 "ct-phantom-2d", "--backend", "auto", "-q"]) == 0
    side = json.loads((tmp_path / "torch.json").read_text())["provenance"]
    assert side["backend"] == "torch"
    assert len(_fallback_lines(caplog)) == 1
    agree = np.mean(read_volume(out).data == read_volume(tmp_path / "torch.nii.gz").data)
    assert agree >= 0.999
