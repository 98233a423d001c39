"""A 2D model's further views (``ModelSpec.views``): a network that cuts the volume along another
axis (coronal beside axial), whose probabilities are averaged with the model's. The average is
checked against the two networks run by hand on the transposed array, on scans stored in other
orientations; the preview runs the model alone; bad view entries and folders are refused."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from napari_attnseg.errors import ModelError
from napari_attnseg.inference.predictor import PredictConfig, predict, predict_slice
from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
from napari_attnseg.model.checkpoint import ModelSpec, load_model, save_model
from napari_attnseg.model.config_check import check_config
from napari_attnseg.model.views import attach_views
from napari_attnseg.volume import Volume

ARCH = UNetConfig(spatial_dims=2, in_channels=1, out_channels=3, channels=(4, 8, 16))
LABELS = {0: "background", 1: "right parotid", 2: "left parotid"}
CFG = PredictConfig(device="cpu", precision="fp32", tta=False)
SAL = np.diag([1.0, 1.0, -1.0])  # slices toward superior, rows anterior, columns toward the left
CORONAL = (2, 0, 1)


def _save(tmp_path, name, seed, orientation=None, labels=None):
    spec = ModelSpec(arch=ARCH, label_names=labels or LABELS, modality="CT", normalization={"preset": "CT"},
                     patch_size=(32, 32), name=name, orientation=orientation,
                     provenance={"params": {"mirror": False}})
    torch.manual_seed(seed)
    return save_model(tmp_path / name, AttentionUNet(ARCH), spec)


def _scan(direction=SAL, shape=(12, 16, 20)):
    data = np.random.default_rng(0).normal(40.0, 300.0, shape).astype(np.float32)
    return Volume(data, (2.5, 3.9, 3.9), direction=direction, modality="CT")


@pytest.fixture()
def pair(tmp_path):
    axial = _save(tmp_path, "axial", 0, orientation="SAL")
    coronal = _save(tmp_path, "coronal", 1)
    both = attach_views(_save(tmp_path, "both", 0, orientation="SAL"), [(coronal, CORONAL, 0.4)])
    return load_model(axial), load_model(coronal), load_model(both)


def test_the_average_is_the_two_networks_run_by_hand(pair):
    axial, coronal, both = pair
    assert [v.spec.name for v, _, _ in both.views] == ["coronal"] and both.spec.views[0]["axes"] == [2, 0, 1]
    scan = _scan(np.eye(3))  # stored S, A, R: the model (SAL) reverses the columns
    alone = predict(axial, scan, CFG).probabilities
    flipped = np.ascontiguousarray(scan.data[:, :, ::-1])  # the model's frame: S, A, L
    view_in = Volume(np.ascontiguousarray(np.transpose(flipped, CORONAL)), (3.9, 2.5, 3.9), modality="CT")
    view = np.transpose(predict(coronal, view_in, CFG).probabilities, (0, 2, 3, 1))[:, :, :, ::-1]
    res = predict(both, scan, CFG)
    assert np.allclose(res.probabilities, 0.6 * alone + 0.4 * view, atol=1e-5)
    assert np.allclose(res.probabilities.sum(0), 1.0, atol=1e-5)
    assert np.array_equal(res.labels, res.probabilities.argmax(0).astype(res.labels.dtype))
    assert res.provenance["views"] == [both.views[0][0].model_id]
    assert not np.allclose(res.probabilities, alone, atol=1e-3)  # the view counts


def test_any_storage_gives_the_same_labels(pair):
    _, _, both = pair
    scan = _scan(SAL)
    ref = predict(both, scan, CFG).probabilities
    # the same patient stored with its rows reversed and its slice and column axes swapped
    data = np.transpose(np.flip(scan.data, 1), (2, 1, 0))
    d = np.array(scan.direction, float)
    d[:, 1] *= -1
    moved = Volume(np.ascontiguousarray(data), (3.9, 3.9, 2.5), direction=d[:, [2, 1, 0]], modality="CT")
    out = predict(both, moved, CFG).probabilities
    back = np.flip(np.transpose(out, (0, 3, 2, 1)), 2)
    assert np.allclose(back, ref, atol=1e-5)


def test_the_preview_and_a_2d_image_run_the_model_alone(pair):
    axial, _, both = pair
    scan = _scan(SAL)
    whole_alone = predict(axial, scan, CFG).probabilities
    prev = predict_slice(both, scan, 5, CFG)
    assert np.allclose(prev.probabilities, whole_alone[:, 5], atol=1e-5)
    img = Volume(scan.data[5], (3.9, 3.9), modality="CT")
    assert np.allclose(predict(both, img, CFG).probabilities, predict(axial, img, CFG).probabilities, atol=1e-6)


def test_bad_views_are_refused(tmp_path, pair):
    axial, coronal, both = pair
    spec = both.spec
    for bad, match in (([{"folder": "c", "axes": [0, 0, 1], "weight": 0.5}], "permutation"),
                       ([{"folder": "../c", "axes": [2, 0, 1], "weight": 0.5}], "plain folder"),
                       ([{"folder": "c", "axes": [2, 0, 1], "weight": 1.0}], "weight"),
                       ([{"folder": "c", "axes": [2, 0, 1], "weight": 0.6}] * 2, "sum"),
                       ([{"folder": "c", "axes": [2, 0, 1]}], "exactly")):
        with pytest.raises(ValueError, match=match):
            dataclasses.replace(spec, views=bad)
        config = {**spec.to_json_dict(), "views": bad}
        with pytest.raises(ModelError, match=match):
            check_config(config, tmp_path / "config.json")
    with pytest.raises(ValueError, match="2D models only"):
        ModelSpec(arch=UNetConfig(spatial_dims=3, channels=(4, 8)), label_names={0: "b", 1: "f"},
                  patch_size=(16, 16, 16), views=[{"folder": "c", "axes": [2, 0, 1], "weight": 0.5}])
    # a model with views is not saved as one network (a fine-tune saves the model alone)
    with pytest.raises(ModelError, match="views"):
        save_model(tmp_path / "again", both.network, both.spec)
    # the view's folder missing, an oriented view, a view with other labels
    folder = both.folder
    view_dir = folder / "coronal"
    cfg = json.loads((view_dir / "config.json").read_text())
    (view_dir / "config.json").rename(view_dir / "config.moved")
    with pytest.raises(ModelError, match="missing"):
        load_model(folder)
    (view_dir / "config.moved").rename(view_dir / "config.json")
    assert load_model(folder).views
    with pytest.raises(ModelError, match="orientation"):
        attach_views(_save(tmp_path, "m2", 0), [(_save(tmp_path, "o2", 1, orientation="SAL"), CORONAL, 0.5)])
    with pytest.raises(ModelError, match="labels"):
        attach_views(_save(tmp_path, "m3", 0),
                     [(_save(tmp_path, "l3", 1, labels={0: "background", 1: "a", 2: "b"}), CORONAL, 0.5)])
    assert json.loads((tmp_path / "m2" / "config.json").read_text()).get("views") is None  # left as it was
    with pytest.raises(ModelError, match="already"):
        attach_views(folder, [(coronal.folder, CORONAL, 0.2)])
    assert cfg["name"] == "coronal"


def test_a_view_sees_its_own_training_scale(tmp_path):
    from napari_attnseg.inference.predictor import inplane_factors
    from napari_attnseg.inference.views import view_volume
    from napari_attnseg.volume import SPACING_NOMINAL

    spec = ModelSpec(arch=ARCH, label_names=LABELS, modality="CT", normalization={"preset": "CT"},
                     patch_size=(32, 32), name="cor", inplane_spacing=(2.0, 3.0, 3.75, 4.9))
    view = load_model(save_model(tmp_path / "cor", AttentionUNet(ARCH), spec))
    model = load_model(_save(tmp_path, "ax", 0, orientation="SAL"))
    clinical = Volume(np.zeros((12, 32, 40), np.float32), (2.5, 1.0, 1.0), direction=SAL, modality="CT")
    cut = view_volume(model, clinical, CORONAL)
    assert cut.shape == (40, 12, 32) and cut.spacing == (1.0, 2.5, 1.0)
    # rows along the 2.5 mm slices (trained 2-3 mm): as they are; 1 mm columns to 3.75 mm
    assert inplane_factors(view, cut) == pytest.approx((1.0, 1.0 / 3.75))
    nominal = Volume(clinical.data, (1.0, 1.0, 1.0), direction=SAL, modality="CT", header={SPACING_NOMINAL: True})
    assert inplane_factors(view, view_volume(model, nominal, CORONAL)) == (1.0, 1.0)


def test_an_exported_file_is_the_model_alone_and_says_so(pair, tmp_path, capsys):
    import argparse

    from napari_attnseg.commands import export
    from napari_attnseg.inference.onnx_backend import _spec_json

    _, _, both = pair
    assert "views" not in json.loads(_spec_json(both)) and both.spec.views
    parser = argparse.ArgumentParser()
    export.add_arguments(parser)
    out = tmp_path / "both.pt"
    assert export.run(parser.parse_args([str(both.folder), "-o", str(out)])) == 0 and out.is_file()
    assert "its views (coronal) are not in it" in capsys.readouterr().err
