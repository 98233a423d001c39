"""A broken registry entry never breaks the Segment widget's model list: with a corrupt
``active.json`` (the core raises ModelError for that name) the list still shows the models that
load, the broken one is named in the info line and in one notification, and the widget stays
usable; once the file is fixed the next refresh drops the message."""

from __future__ import annotations

import json

import numpy as np
import torch

from napari_attnseg._napari.layers import volume_to_layer_kwargs
from napari_attnseg.errors import ModelError
from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
from napari_attnseg.model.checkpoint import ModelSpec, save_model
from napari_attnseg.model.registry import ModelRegistry, default_root
from napari_attnseg.volume import Volume
from napari_attnseg.widgets.segment import SegmentWidget


def _shipped(tmp_path, names):
    """A shipped-models folder with one CT version of each name."""
    root = tmp_path / "shipped"
    for name in names:
        torch.manual_seed(0)
        cfg = UNetConfig(spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8, 16))
        spec = ModelSpec(arch=cfg, label_names={0: "background", 1: "organ"}, modality="CT",
                         patch_size=(32, 32), name=name, version="1")
        save_model(root / name / "1", AttentionUNet(cfg), spec)
    return root


def _scan(viewer):
    rng = np.random.default_rng(0)
    vol = Volume(data=rng.normal(0, 300, (4, 32, 40)).astype(np.float32),
                 spacing=(2.5, 0.8, 0.7), modality="CT", source="scan.nii.gz")
    return viewer.add_image(vol.data, **volume_to_layer_kwargs(vol, name="scan"))


def test_corrupt_active_json_is_reported_not_raised(make_napari_viewer, qtbot, tmp_path,
                                                    monkeypatch):
    shipped = _shipped(tmp_path, ("a-ct", "b-ct"))
    monkeypatch.setattr("napari_attnseg.model.registry.SHIPPED_ROOT", shipped)
    active = default_root() / "a-ct" / "active.json"  # the user root (a temp dir in tests)
    active.parent.mkdir(parents=True)
    active.write_text("{not json")
    try:  # the core refuses the name, as it should (independent of the widget)
        ModelRegistry().get("a-ct")
        raise AssertionError("a corrupt active.json must raise ModelError")
    except ModelError as exc:
        assert "active.json" in str(exc)
    warnings = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", warnings.append)

    viewer = make_napari_viewer()
    _scan(viewer)
    w = SegmentWidget(viewer)  # must not raise
    qtbot.addWidget(w)
    items = [w.model_combo.itemData(i) for i in range(w.model_combo.count())]
    assert str(shipped / "b-ct" / "1") in items
    assert w.model_folder() == shipped / "b-ct" / "1"  # the name that resolves is chosen
    text = w.info_label.text()
    assert "a-ct" in text and "active.json" in text and "corrupt" in text, text
    assert len(warnings) == 1 and "a-ct" in warnings[0] and "corrupt" in warnings[0]

    w.model_combo.showPopup()  # the list re-reads the registry: no raise, no second message
    w.model_combo.hidePopup()
    w.show()
    assert len(warnings) == 1
    pred = w.make_runner().run_sync()  # still usable
    assert viewer.layers["scan [attnseg]"].data.shape == (4, 32, 40)
    assert pred.labels.shape == (4, 32, 40)

    active.write_text(json.dumps({"version": "1"}))  # fixed: the next refresh says nothing
    w.refresh_models()
    qtbot.waitUntil(lambda: not w.info_pending, timeout=60000)
    assert "skipped" not in w.info_label.text()
    assert w.picker.problems == {}


def test_every_name_broken_still_leaves_a_usable_list(make_napari_viewer, qtbot, tmp_path,
                                                      monkeypatch):
    shipped = _shipped(tmp_path, ("only-ct",))
    monkeypatch.setattr("napari_attnseg.model.registry.SHIPPED_ROOT", shipped)
    active = default_root() / "only-ct" / "active.json"
    active.parent.mkdir(parents=True)
    active.write_text(json.dumps({"version": "7"}))  # names a version that does not exist
    monkeypatch.setattr("napari.utils.notifications.show_warning", lambda *_: None)
    viewer = make_napari_viewer()
    _scan(viewer)
    w = SegmentWidget(viewer)
    qtbot.addWidget(w)
    assert w.model_folder() is None  # nothing chosen automatically
    text = w.info_label.text()
    assert "only-ct" in text and "version 7" in text, text
    idx = w.model_combo.findData(str(shipped / "only-ct" / "1"))
    assert idx > 0  # the complete version folder is still listed and can be picked
    w.model_combo.setCurrentIndex(idx)
    w.model_combo.activated.emit(idx)
    assert w.model_folder() == shipped / "only-ct" / "1"
