"""``attnseg predict``: NIfTI in, labels (+ probabilities) out with geometry and provenance."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_attnseg.cli import main
from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
from napari_attnseg.model.checkpoint import ModelSpec, save_model


def _model(tmp_path, classes=2):
    torch.manual_seed(0)
    cfg = UNetConfig(spatial_dims=2, out_channels=classes, channels=(4, 8, 16))
    spec = ModelSpec(arch=cfg, label_names={i: f"c{i}" for i in range(classes)}, modality="CT",
                     patch_size=(32, 32), name="clitiny", version="1")
    return save_model(tmp_path / "clitiny", AttentionUNet(cfg), spec)


def _scan(tmp_path):
    nib = pytest.importorskip("nibabel")
    data = np.random.default_rng(0).normal(0, 300, (30, 27, 5)).astype(np.float32)  # i, j, k
    aff = np.array([[-0.8, 0, 0, 10.0], [0, 0.9, 0, -20.0], [0, 0, 3.0, 5.0], [0, 0, 0, 1]])
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(data, aff), str(path))
    return path, aff


def test_predict_cli_writes_labels_and_probabilities(tmp_path, capsys):
    import nibabel as nib

    from napari_attnseg.io import read_volume

    scan, aff = _scan(tmp_path)
    folder = _model(tmp_path)
    out, probs = tmp_path / "seg.nii.gz", tmp_path / "prob.nii.gz"
    rc = main(["predict", str(scan), "-o", str(out), "--model", str(folder), "--overlap", "0.25",
               "--probabilities", str(probs), "--device", "cpu", "-q"])
    assert rc == 0
    img = nib.load(str(out))
    assert img.shape == (30, 27, 5)
    np.testing.assert_allclose(img.affine, aff, atol=1e-5)
    assert np.issubdtype(img.get_data_dtype(), np.unsignedinteger)
    lab = read_volume(out)
    assert set(np.unique(lab.data)) <= {0, 1}
    p = nib.load(str(probs)).get_fdata()
    assert p.shape == (30, 27, 5) and 0 <= p.min() and p.max() <= 1
    np.testing.assert_array_equal(np.asarray(img.dataobj) == 1, p > 0.5)
    sidecar = json.loads((tmp_path / "seg.json").read_text())
    text = json.dumps(sidecar)
    assert "clitiny@1" in text and "weights_sha256" in text


def test_predict_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    from napari_attnseg.model.registry import ModelRegistry

    monkeypatch.setattr(ModelRegistry, "default_model", lambda self, *a: None)  # none shipped
    monkeypatch.setattr("napari_attnseg.model.registry.SHIPPED_ROOT", tmp_path / "none")
    scan, _ = _scan(tmp_path)
    rc = main(["predict", str(scan), "-o", str(tmp_path / "x.nii.gz"),
               "--model", str(tmp_path / "nope")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
    rc = main(["predict", str(scan), "-o", str(tmp_path / "x.nii.gz"), "-q"])
    assert rc == 2
    assert "no model installed" in capsys.readouterr().err
    folder = _model(tmp_path)
    rc = main(["predict", str(scan), "-o", str(tmp_path / "x.nii.gz"), "--model", str(folder),
               "--device", "cuda"]) if not torch.cuda.is_available() else 2
    assert rc == 2
