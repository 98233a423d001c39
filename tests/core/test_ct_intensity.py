"""A CT model given a CT that is not in Hounsfield units: stored values without the rescale
intercept, or an image normalised to [0, 1] / [-1, 1]. The labels would be wrong without an
error, so the core says so (``input_warnings``), ``attnseg predict`` logs it naming the file,
and the prediction's provenance keeps it. Real HU scans (the phantoms, every OpenKBP CT, the
spleen CT) raise nothing."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from napari_attnseg.cli import main
from napari_attnseg.inference.predictor import PredictConfig, input_warnings, predict
from napari_attnseg.io.modality import ct_intensity_problem
from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
from napari_attnseg.model.checkpoint import ModelSpec, load_model, save_model
from napari_attnseg.sample.phantoms import ct_phantom


def _ct_model(tmp_path, **spec):
    torch.manual_seed(0)
    cfg = UNetConfig(spatial_dims=2, out_channels=2, channels=(4, 8, 16))
    spec = ModelSpec(arch=cfg, label_names={0: "background", 1: "organ"}, modality="CT",
                     patch_size=(32, 32), name="hutiny", version="1", **spec)
    return save_model(tmp_path / "hutiny", AttentionUNet(cfg), spec)


@pytest.fixture(scope="module")
def phantom():
    image, _ = ct_phantom(0, shape=(8, 64, 64))
    return image


def test_hounsfield_units_pass_and_the_two_usual_mistakes_are_named(phantom):
    hu = np.asarray(phantom.data, np.float32)
    assert ct_intensity_problem(hu) == ""
    raw = ct_intensity_problem(hu + 1024)  # the DICOM intercept not applied
    assert "rescale intercept" in raw and "no negative values" in raw
    for normalised in ((hu + 1024) / 4096, np.clip(hu, -1000, 1000) / 1000):
        assert "normalised" in ct_intensity_problem(normalised)


def test_every_real_ct_in_shared_passes(shared_data):
    nib = pytest.importorskip("nibabel")
    files = sorted((shared_data / "openkbp_ct" / "imagesTr").glob("*.nii.gz"))
    files += [shared_data / "ct_spleen" / "image.nii.gz"]
    files = [f for f in files if f.exists()]
    if not files:
        pytest.skip("no real CT in the shared data")
    flagged = [f.name for f in files if ct_intensity_problem(np.asarray(nib.load(f).dataobj))]
    assert flagged == []


def test_predict_warns_logs_and_records_it(tmp_path, phantom, caplog):
    import dataclasses

    model = load_model(_ct_model(tmp_path))
    raw = dataclasses.replace(phantom, data=np.asarray(phantom.data, np.float32) + 1024,
                              source="raw_ct.nii.gz")
    assert input_warnings(model, phantom) == []
    assert input_warnings(model, raw)[0].startswith("not in Hounsfield units")
    # the user chose MR normalisation for it: per-image statistics, no HU window, no warning
    assert input_warnings(model, raw, PredictConfig(modality="MR")) == []
    with caplog.at_level(logging.WARNING, logger="napari_attnseg.inference.predictor"):
        pred = predict(model, raw, PredictConfig(device="cpu", precision="fp32"))
    assert "raw_ct.nii.gz: not in Hounsfield units" in caplog.text
    assert pred.provenance["input_warnings"] == input_warnings(model, raw)
    assert "input_warnings" not in predict(model, phantom, PredictConfig(device="cpu")).provenance


def test_a_ct_model_with_percentile_normalisation_is_not_warned(tmp_path, phantom):
    import dataclasses

    model = load_model(_ct_model(tmp_path, normalization={"preset": "CT", "percentiles": [1, 99]}))
    raw = dataclasses.replace(phantom, data=np.asarray(phantom.data, np.float32) + 1024)
    assert input_warnings(model, raw) == []


def test_predict_cli_names_the_file(tmp_path, phantom, caplog):
    import dataclasses

    from napari_attnseg.io import write_volume

    scan = tmp_path / "ct_raw_values.nii.gz"
    write_volume(dataclasses.replace(phantom, data=np.asarray(phantom.data, np.int16) + 1024), scan)
    out = tmp_path / "seg.nii.gz"
    with caplog.at_level(logging.WARNING):
        assert main(["predict", str(scan), "-o", str(out), "--model", str(_ct_model(tmp_path)),
                     "--device", "cpu", "-q", "--threads", "1"]) == 0
    assert "ct_raw_values.nii.gz: not in Hounsfield units" in caplog.text
    sidecar = json.loads((tmp_path / "seg.json").read_text())
    assert "Hounsfield" in json.dumps(sidecar)
