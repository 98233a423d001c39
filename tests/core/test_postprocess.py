"""Post-processing and the head-circumference measurement, against independent computations."""

import math

import numpy as np
import pytest

from napari_attnseg.inference.postprocess import (
    Ellipse, apply_postprocess, ellipse_circumference, ellipse_mask, fill_holes, fit_ellipse,
    head_circumference, largest_component,
)


def _perimeter_numeric(a, b, n=200_000):
    t = np.linspace(0, 2 * np.pi, n + 1)
    return float(np.sum(np.hypot(np.diff(a * np.cos(t)), np.diff(b * np.sin(t)))))


@pytest.mark.parametrize("a,b", [(30, 30), (40, 25), (50, 10)])
def test_ramanujan_matches_numeric_perimeter(a, b):
    assert ellipse_circumference(a, b) == pytest.approx(_perimeter_numeric(a, b), rel=1e-6)
    assert ellipse_circumference(a, a) == pytest.approx(2 * math.pi * a)


def test_fit_recovers_a_drawn_ellipse_and_its_circumference_in_mm():
    true = Ellipse(yc=70.0, xc=90.0, a=55.0, b=38.0, theta=0.6)
    mask = ellipse_mask(true, (150, 190))
    fit = fit_ellipse(mask)
    assert fit is not None
    assert (fit.yc, fit.xc) == pytest.approx((70.0, 90.0), abs=0.1)
    assert sorted((fit.a, fit.b)) == pytest.approx([38.0, 55.0], abs=0.3)
    hc, _ = head_circumference(mask, 0.2)
    assert hc == pytest.approx(0.2 * _perimeter_numeric(55.0, 38.0), rel=0.01)


def test_anisotropic_pixels_measure_in_mm():
    circle = Ellipse(50.0, 50.0, 30.0, 30.0, 0.0)
    # 0.5 mm rows, 1 mm columns: in mm it is an ellipse with semi-axes 15 (y) and 30 (x)
    assert circle.circumference((0.5, 1.0)) == pytest.approx(_perimeter_numeric(30.0, 15.0), rel=1e-5)


def test_head_circumference_keeps_one_filled_head():
    mask = ellipse_mask(Ellipse(60, 60, 40, 30, 0.0), (120, 160))
    mask[55:65, 55:65] = False  # a hole
    mask[5:10, 140:150] = True  # a speck elsewhere
    hc, ell = head_circumference(mask, 1.0)
    assert ell is not None and hc == pytest.approx(_perimeter_numeric(40, 30), rel=0.02)
    assert math.isnan(head_circumference(np.zeros((20, 20), bool))[0])


def test_largest_component_and_fill_holes():
    m = np.zeros((20, 20), bool)
    m[2:5, 2:5] = True
    m[8:18, 8:18] = True
    m[12, 12] = False
    out = fill_holes(largest_component(m))
    assert not out[2:5, 2:5].any() and out[8:18, 8:18].all()


def test_apply_postprocess_touches_only_its_class_and_slices_3d():
    lab = np.zeros((2, 40, 40), np.uint8)
    lab[:, 5:30, 5:30] = 1
    lab[:, 35:38, 35:38] = 1  # speck of class 1
    lab[:, 0:2, 0:2] = 2  # another class, kept
    out = apply_postprocess(lab, ["largest_component"])
    assert (out[:, 35:38, 35:38] == 0).all() and (out[:, 0:2, 0:2] == 2).all()
    assert (out[:, 5:30, 5:30] == 1).all()
    assert (lab[:, 35:38, 35:38] == 1).all()  # input untouched
    with pytest.raises(ValueError, match="unknown post-processing"):
        apply_postprocess(lab, ["bogus"])


def test_largest_component_3d_keeps_one_object_per_class_across_slices():
    """An organ drawn on slices 1-3 and an island on slice 5 (a per-slice step keeps it: it is
    the largest piece of its slice); a diagonal (corner-touching) neighbour slice stays part of
    the organ; other classes keep their own largest object; scipy's 26-connected labelling on
    the truth decides independently which voxels must stay."""
    from scipy import ndimage as ndi

    from napari_attnseg.inference.predictor import postprocessed

    lab = np.zeros((7, 30, 30), np.uint8)
    lab[1:4, 5:15, 5:15] = 1
    lab[4, 15:17, 15:17] = 1  # touches the organ only at a corner: 26-connected to it
    lab[5:7, 25:28, 25:28] = 1  # island on other slices
    lab[2, 20:25, 0:5] = 2
    lab[6, 0:2, 0:2] = 2  # smaller island of class 2
    out = postprocessed(lab, ("largest_component_3d",), 3)
    for c in (1, 2):
        comp, n = ndi.label(lab == c, structure=np.ones((3, 3, 3)))
        keep = comp == np.argmax(np.bincount(comp.ravel())[1:]) + 1
        np.testing.assert_array_equal(out == c, keep)
    assert (out[4, 15:17, 15:17] == 1).all()
    per_slice = postprocessed(lab, ("largest_component",), 3)
    assert (per_slice[5:7, 25:28, 25:28] == 1).all()  # what the 3D step is for
    # combined with a per-slice step, and on a 2D map (the same as the 2D step)
    both = postprocessed(lab, ("largest_component_3d", "fill_holes"), 3)
    np.testing.assert_array_equal(both, out)
    np.testing.assert_array_equal(apply_postprocess(lab[2], ["largest_component_3d"]),
                                  apply_postprocess(lab[2], ["largest_component"]))


# --------------------------------------------------------------------------- the model's "postprocess"
def _tiny(tmp_path, steps, classes=3):
    import torch

    from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
    from napari_attnseg.model.checkpoint import ModelSpec, save_model

    torch.manual_seed(0)
    cfg = UNetConfig(spatial_dims=2, out_channels=classes, channels=(4, 8, 16))
    spec = ModelSpec(arch=cfg, label_names={i: f"c{i}" for i in range(classes)}, modality="CT",
                     patch_size=(32, 32), name="pp", version="1", postprocess=tuple(steps))
    return save_model(tmp_path / "pp", AttentionUNet(cfg), spec)


def _components(mask):
    from scipy import ndimage as ndi

    return ndi.label(mask)[1]


def test_postprocessed_keeps_one_component_per_class_on_the_slicing_axis():
    from napari_attnseg.inference.predictor import postprocessed

    lab = np.zeros((6, 5, 40), np.uint8)  # slices along axis 1 (a 2D model's axis here)
    lab[:, :, 2:6] = 1
    lab[:, :, 10:20] = 1   # the larger blob of class 1 in every axis-1 slice
    lab[:, :, 25:28] = 2
    lab[:, :, 30:38] = 2
    out = postprocessed(lab, ("largest_component",), 3, axis=1)
    for j in range(lab.shape[1]):
        for c in (1, 2):
            assert _components(out[:, j] == c) == 1
    assert not out[:, :, 2:6].any() and (out[:, :, 10:20] == 1).all()
    assert not out[:, :, 25:28].any() and (out[:, :, 30:38] == 2).all()


def test_model_config_postprocess_is_checked_saved_and_applied(tmp_path):
    import json

    from napari_attnseg.errors import ModelError
    from napari_attnseg.inference.predictor import predict
    from napari_attnseg.model.checkpoint import load_model
    from napari_attnseg.model.config_check import CONFIG_HASH_KEY, config_hash

    folder = _tiny(tmp_path, ["largest_component", "fill_holes"])
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["postprocess"] == ["largest_component", "fill_holes"]
    model = load_model(folder)
    assert model.spec.postprocess == ("largest_component", "fill_holes")
    rng = np.random.default_rng(0)
    image = rng.normal(size=(3, 48, 48)).astype(np.float32) * 100  # noise: fragmented argmax
    raw = load_model(_tiny(tmp_path / "raw", []))
    raw_labels = predict(raw, image).labels
    pred = predict(model, image)
    assert pred.provenance["postprocess"] == ["largest_component", "fill_holes"]
    assert "postprocess" not in predict(raw, image).provenance
    for z in range(3):
        for c in (1, 2):
            if (pred.labels[z] == c).any():
                assert _components(pred.labels[z] == c) == 1
    assert any(_components(raw_labels[z] == c) > 1 for z in range(3) for c in (1, 2))
    # an unknown step in config.json is refused with its name, even with a valid hash
    cfg["postprocess"] = ["largest_component", "erode"]
    cfg.pop(CONFIG_HASH_KEY, None)
    cfg[CONFIG_HASH_KEY] = config_hash(cfg)
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="erode"):
        load_model(folder)
