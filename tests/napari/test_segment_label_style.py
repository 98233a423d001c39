"""Segment results show the model's label names and colours on the canvas: a direct colormap
from the model's label table (its declared colours, else a distinct palette colour per class)
and a features table, so hovering a voxel says its class name; a re-run with another model
updates the layer in place; the shipped models name every class with distinct colours."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from napari_attnseg._napari.layers import volume_to_layer_kwargs
from napari_attnseg.io.labeltable import PALETTE
from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
from napari_attnseg.model.checkpoint import ModelSpec, save_model
from napari_attnseg.volume import Volume
from napari_attnseg.widgets._segment_results import result_style
from napari_attnseg.widgets.segment import SegmentWidget

SHIPPED = Path(__file__).resolve().parents[2] / "napari_attnseg" / "models"


def _model(tmp_path, name, names, colours=None):
    torch.manual_seed(0)
    cfg = UNetConfig(spatial_dims=2, in_channels=1, out_channels=len(names), channels=(4, 8, 16))
    spec = ModelSpec(arch=cfg, label_names=dict(enumerate(names)), modality="CT",
                     patch_size=(32, 32), name=name, version="1")
    folder = save_model(tmp_path / name, AttentionUNet(cfg), spec)
    if colours:  # a model that declares its colours (the config hash dropped: an intended edit)
        path = folder / "config.json"
        config = json.loads(path.read_text())
        config.pop("config_sha256", None)
        config["label_colors"] = colours
        path.write_text(json.dumps(config))
    return folder


def _rgb(layer, value):
    return tuple(int(round(255 * c)) for c in np.asarray(layer.colormap.map(value))[:3])


def _status_name(viewer, layer, value):
    """What napari's status bar says over a voxel of ``value`` (painted there if absent), with
    the viewer on that voxel's slice (napari reads the value from the displayed slice)."""
    hits = np.argwhere(layer.data == value)
    if hits.size == 0:
        layer.data[1, 5, 5] = value
        layer.refresh()
        hits = np.array([[1, 5, 5]])
    world = layer.data_to_world(tuple(hits[0]))
    viewer.dims.set_point(0, world[0])
    return str(layer.get_status(world, world=True))


def test_segment_labels_carry_the_model_names_and_colours(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    vol = Volume(data=rng.normal(0, 300, (4, 32, 40)).astype(np.float32),
                 spacing=(2.5, 0.8, 0.7), modality="CT", source="scan.nii.gz")
    viewer.add_image(vol.data, **volume_to_layer_kwargs(vol, name="scan"))
    w = SegmentWidget(viewer)
    qtbot.addWidget(w)
    w.set_model_folder(_model(tmp_path, "liver", ["background", "liver", "lesion"],
                              colours={"1": "#00ff00"}))
    w.make_runner().run_sync()
    lab = viewer.layers["scan [attnseg]"]
    assert _rgb(lab, 1) == (0, 255, 0)  # the model's own colour
    assert _rgb(lab, 2) == PALETTE[1]  # undeclared: the palette's colour for 2
    assert np.asarray(lab.colormap.map(0))[3] == 0  # background transparent
    assert list(lab.features["name"]) == ["background", "liver", "lesion"]
    assert "liver" in _status_name(viewer, lab, 1) and "lesion" in _status_name(viewer, lab, 2)

    # another model: the same layer, its names and colours now
    w.set_model_folder(_model(tmp_path, "kidney", ["background", "kidney"]))
    w.make_runner().run_sync()
    assert viewer.layers["scan [attnseg]"] is lab
    assert list(lab.features["name"]) == ["background", "kidney"]
    assert _rgb(lab, 1) == PALETTE[0]
    assert "kidney" in _status_name(viewer, lab, 1)
    # a slice preview keeps them
    w.make_runner(slice_index=1).run_sync()
    assert list(lab.features["name"]) == ["background", "kidney"] and _rgb(lab, 1) == PALETTE[0]


def test_shipped_models_name_every_class_with_distinct_colours():
    configs = sorted(SHIPPED.glob("*/*/config.json"))
    assert configs, "no shipped model"
    for path in configs:
        config = json.loads(path.read_text())
        names = {int(k): v for k, v in config["label_names"].items()}
        style = result_style({"label_names": config["label_names"],
                              "model_folder": str(path.parent)})
        got = dict(zip(style["features"]["index"], style["features"]["name"]))
        assert got == names, path
        colours = [style["colormap"][v] for v in names if v > 0]
        assert len(set(colours)) == len(colours), (path, colours)  # one colour per class
        assert style["colormap"][0] == "transparent"
