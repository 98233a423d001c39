"""CRF (Refine) and Baselines results draw and name their labels as the Segment result they
derive from: a CRF of a model's probabilities or labels shows the model's label names and
colours (a colour the user gave the Segment result included); a baseline's object (label 1)
takes label 1's name and colour of the image's Segment result; a result refined again from a
layer without names gets napari's own colours back. In a real viewer, after a real Segment run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_attnseg._napari.layers import volume_to_layer_kwargs
from napari_attnseg.io.labeltable import PALETTE
from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
from napari_attnseg.model.checkpoint import ModelSpec, save_model
from napari_attnseg.volume import Volume
from napari_attnseg.widgets.baselines import BaselinesWidget
from napari_attnseg.widgets.refine import SUFFIX, RefineWidget
from napari_attnseg.widgets.segment import SegmentWidget

GREEN = (0, 255, 0)


def _model(tmp_path):
    """A 3-class model (liver, lesion) that declares green for liver only."""
    torch.manual_seed(0)
    cfg = UNetConfig(spatial_dims=2, in_channels=1, out_channels=3, channels=(4, 8, 16))
    spec = ModelSpec(arch=cfg, label_names={0: "background", 1: "liver", 2: "lesion"},
                     modality="CT", patch_size=(32, 32), name="liver", version="1")
    folder = save_model(tmp_path / "liver", AttentionUNet(cfg), spec)
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.pop("config_sha256", None)  # an intended edit
    config["label_colors"] = {"1": "#00ff00"}
    path.write_text(json.dumps(config))
    return folder


def _rgb(layer, value):
    return tuple(int(round(255 * c)) for c in np.asarray(layer.colormap.map(value))[:3])


def _names(layer):
    return list(layer.features["name"]) if "name" in layer.features else []


@pytest.fixture
def segmented(make_napari_viewer, qtbot, tmp_path):
    """A viewer with a CT scan and its Segment result (labels + probabilities)."""
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    data = rng.normal(0, 300, (4, 32, 40)).astype(np.float32)
    data[:, 8:24, 10:30] += 800.0  # a bright object (for the baselines)
    vol = Volume(data=data, spacing=(2.5, 0.8, 0.7), modality="CT", source="scan.nii.gz")
    viewer.add_image(vol.data, **volume_to_layer_kwargs(vol, name="scan"))
    seg = SegmentWidget(viewer)
    qtbot.addWidget(seg)
    seg.set_model_folder(_model(tmp_path))
    seg.make_runner().run_sync()
    seg_labels = viewer.layers["scan [attnseg]"]
    assert _names(seg_labels) == ["background", "liver", "lesion"]  # the model's (premise)
    return viewer, seg_labels, vol


def test_crf_results_carry_the_model_names_and_colours(segmented, qtbot):
    pytest.importorskip("pydensecrf.densecrf")
    viewer, seg_labels, vol = segmented
    w = RefineWidget(viewer)
    qtbot.addWidget(w.native)
    w.form.mode.value = "2d"
    w.form.iterations.value = 1
    # from the Segment result's probabilities: the model's names and colours
    w.source.value = viewer.layers["scan [attnseg] probabilities"]
    w.image.value = viewer.layers["scan"]
    w.refine_volume(sync=True)
    crf = viewer.layers["scan" + SUFFIX]
    assert _names(crf) == ["background", "liver", "lesion"]
    assert _rgb(crf, 1) == GREEN and _rgb(crf, 2) == PALETTE[1]
    assert _rgb(crf, 1) == _rgb(seg_labels, 1) and _rgb(crf, 2) == _rgb(seg_labels, 2)
    assert np.asarray(crf.colormap.map(0))[3] == 0  # background transparent
    # a preview too
    w.preview(sync=True)
    preview = viewer.layers["scan [attnseg+crf preview]"]
    assert _names(preview) == ["background", "liver", "lesion"] and _rgb(preview, 1) == GREEN

    # from the Segment labels, whose lesion colour the user changed: the colours it shows
    colours = dict(seg_labels.colormap.color_dict)
    colours[2] = "#ff00ff"
    seg_labels.colormap = {k: v for k, v in colours.items()}
    w.source.value = seg_labels
    w.refine_volume(sync=True)
    assert viewer.layers["scan" + SUFFIX] is crf  # re-run in place
    assert _rgb(crf, 2) == (255, 0, 255) and _rgb(crf, 1) == GREEN
    assert _names(crf) == ["background", "liver", "lesion"]

    # from a labels layer nobody named: no stale names, napari's own colours again
    plain = viewer.add_labels((np.asarray(seg_labels.data) > 0).astype(np.uint8), name="mine",
                              **{k: v for k, v in volume_to_layer_kwargs(vol).items()
                                 if k in ("scale", "translate")})
    w.source.value = plain
    w.refine_volume(sync=True)
    assert viewer.layers["scan" + SUFFIX] is crf
    assert _names(crf) == []
    assert _rgb(crf, 1) == _rgb(plain, 1) and _rgb(crf, 1) != GREEN


def test_baseline_result_carries_the_name_and_colour_of_the_label_it_produces(segmented,
                                                                               qtbot):
    viewer, seg_labels, vol = segmented
    w = BaselinesWidget(viewer)
    qtbot.addWidget(w.native)
    w.image.value = viewer.layers["scan"]
    w.form.method.value = "Otsu"
    w.make_runner().run_sync()
    out = viewer.layers["scan [otsu]"]
    assert np.asarray(out.data).max() == 1  # a baseline labels its object 1
    assert _names(out) == ["background", "liver"]  # label 1 of the model: not its lesion
    assert _rgb(out, 1) == GREEN == _rgb(seg_labels, 1)
    assert out.metadata["attnseg"]["label_names"] == {"1": "liver"}
    world = out.data_to_world(tuple(np.argwhere(np.asarray(out.data) == 1)[0]))
    viewer.dims.set_point(0, world[0])  # napari reads the value from the displayed slice
    assert "liver" in str(out.get_status(world, world=True))  # hovering names it

    # an image nobody segmented nor named: napari's own colours, no names
    viewer.add_image(np.asarray(viewer.layers["scan"].data), name="other")
    w.image.value = viewer.layers["other"]
    w.make_runner().run_sync()
    other = viewer.layers["other [otsu]"]
    assert _names(other) == [] and other.metadata["attnseg"]["label_names"] == {}
