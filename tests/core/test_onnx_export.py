"""Models out: ONNX and TorchScript export of the shipped model (checked, self-describing),
``attnseg predict --backend onnxruntime`` agreeing with PyTorch on the sample data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_attnseg.cli import main
from napari_attnseg.io import read_volume

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[2]
CT = ROOT / "sample_data" / "ct_phantom.nii.gz"
CT_DICOM = ROOT / "sample_data" / "ct_dicom"
MODEL = "ct-phantom-2d"


@pytest.fixture(scope="module")
def model():
    from napari_attnseg.model.checkpoint import load_model
    from napari_attnseg.model.registry import ModelRegistry

    return load_model(ModelRegistry().resolve(MODEL))


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory, model):
    from napari_attnseg.inference.onnx_backend import export_onnx

    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "ct.onnx")


def test_onnx_file_is_self_describing_and_matches_torch(onnx_file, model):
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    spec = json.loads(meta["attnseg_spec"])
    assert spec["label_names"] == {"0": "background", "1": "organ", "2": "lesion"}
    assert meta["attnseg_weights_sha256"] == model.weights_sha256
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(3, 1, 80, 112)).astype(np.float32))
    with torch.no_grad():
        ref = model.network(x).numpy()
    got = sess.run(None, {"image": x.numpy()})[0]
    assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-3


def test_torchscript_export_runs_without_the_package_at_another_size(tmp_path, model):
    from napari_attnseg.inference.onnx_backend import export_torchscript

    path = export_torchscript(model, tmp_path / "ct.pt")
    extra = {"attnseg_spec.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["attnseg_spec.json"])["name"] == MODEL
    x = torch.randn(1, 1, 48, 96)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model.network(x), atol=1e-3)


@pytest.fixture(scope="module")
def both(model, onnx_file):
    from napari_attnseg.inference.onnx_backend import load_onnx_file
    from napari_attnseg.inference.predictor import PredictConfig, predict

    vol = read_volume(CT)  # PyTorch in fp32, as ONNX Runtime runs (precision "auto" may be bf16)
    return (predict(model, vol, PredictConfig(precision="fp32")),
            predict(load_onnx_file(onnx_file), vol))


def test_onnxruntime_agrees_with_torch_on_the_sample_ct(both):
    a, b = both
    agreement = float(np.mean(a.labels == b.labels))
    assert agreement >= 0.999, agreement
    assert set(np.unique(a.labels)) == {0, 1, 2}
    assert np.abs(a.probabilities - b.probabilities).max() < 1e-3


def test_predict_cli_backend_onnxruntime(tmp_path, both):
    out = tmp_path / "seg.nii.gz"
    assert main(["predict", str(CT), "-o", str(out), "--model", MODEL,
                 "--backend", "onnxruntime", "-q"]) == 0
    back = read_volume(out)
    assert float(np.mean(back.data == both[0].labels)) >= 0.999
    side = json.loads((tmp_path / "seg.json").read_text())
    assert side["provenance"]["backend"] == "onnxruntime"
    assert back.metadata["label_names"] == {"1": "organ", "2": "lesion"}


def test_export_cli_and_predict_with_the_onnx_file(tmp_path):
    onnx_path = tmp_path / "exported.onnx"
    assert main(["export", MODEL, "-o", str(onnx_path), "-q"]) == 0
    out = tmp_path / "dcm_seg.nii.gz"
    assert main(["predict", str(CT_DICOM), "-o", str(out), "--model", str(onnx_path), "-q"]) == 0
    side = json.loads((tmp_path / "dcm_seg.json").read_text())
    assert side["provenance"]["backend"] == "onnxruntime"
    assert read_volume(out).data.any()


def test_export_cli_refuses_unknown_suffix(tmp_path, capsys):
    assert main(["export", MODEL, "-o", str(tmp_path / "m.bin")]) == 2
    assert ".onnx" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_onnx_file_without_metadata_is_refused(tmp_path, model):
    import onnx

    from napari_attnseg.errors import ModelError
    from napari_attnseg.inference.onnx_backend import load_onnx_file, onnx_bytes

    proto = onnx.load_from_string(onnx_bytes(model))
    del proto.metadata_props[:]
    (tmp_path / "bare.onnx").write_bytes(proto.SerializeToString())
    with pytest.raises(ModelError, match="attnseg export"):
        load_onnx_file(tmp_path / "bare.onnx")
