"""The Segment widget's info line never stays "planning...": after a threaded run, a preview
(threaded and synchronous), a model change and an image change it ends showing the plan of the
current image and model, in a real viewer with the sample phantom."""

from __future__ import annotations

import time

import numpy as np
import torch

from napari_attnseg._napari.layers import layer_data_tuple
from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
from napari_attnseg.model.checkpoint import ModelSpec, save_model
from napari_attnseg.sample import ct_phantom
from napari_attnseg.widgets.segment import SegmentWidget


def _tiny_model(tmp_path, name="tiny", classes=2):
    torch.manual_seed(0)
    cfg = UNetConfig(spatial_dims=2, in_channels=1, out_channels=classes, channels=(4, 8, 16))
    spec = ModelSpec(arch=cfg, label_names={i: f"c{i}" for i in range(classes)}, modality="CT",
                     patch_size=(32, 32), name=name, version="1")
    return save_model(tmp_path / name, AttentionUNet(cfg), spec)


def _phantom(viewer, name="phantom", slices=12):
    """A small CT phantom (HU) as the plugin's reader would add it."""
    image, _ = ct_phantom(0, shape=(slices, 48, 48))
    data, kwargs, _ = layer_data_tuple(image, name=name, layer_type="image")
    return viewer.add_image(data, **kwargs)


def _settled(widget, qtbot, timeout=60000) -> str:
    """The info line once nothing is pending any more (and stays so for a moment)."""
    deadline = time.monotonic() + timeout / 1000
    while time.monotonic() < deadline:
        qtbot.waitUntil(lambda: not widget.info_pending, timeout=timeout)
        qtbot.wait(200)  # deferred layer adds and their refresh
        if not widget.info_pending and widget._pending_layers == 0:
            return widget.info_label.text()
    raise AssertionError("the info line never settled")


def _expected_windows(widget) -> str:
    """The window count of a 2D model in "slice" windows: one per slice (independent of the
    widget: the image's slice count)."""
    return f"{widget.image_layer().data.shape[0]} windows"


def test_info_line_ends_with_the_plan_after_runs_and_changes(make_napari_viewer, qtbot,
                                                             tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    viewer = make_napari_viewer()
    _phantom(viewer)
    w = SegmentWidget(viewer)
    qtbot.addWidget(w)
    w.set_model_folder(_tiny_model(tmp_path))
    w.window_combo.setCurrentText("slice")
    text = _settled(w, qtbot)
    assert _expected_windows(w) in text and "planning" not in text

    runner = w.segment_volume()  # threaded whole-volume run
    assert runner is not None
    qtbot.waitUntil(lambda: not runner.running, timeout=60000)
    assert "phantom [attnseg]" in viewer.layers
    text = _settled(w, qtbot)
    assert _expected_windows(w) in text and "planning" not in text, text

    w.preview_slice()  # threaded: the labels layer exists, the probabilities too
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60000)
    text = _settled(w, qtbot)
    assert _expected_windows(w) in text and "planning" not in text, text

    w._last_preview_s = 0.001  # a fast preview now runs on the GUI thread
    w.preview_slice()
    text = _settled(w, qtbot)
    assert _expected_windows(w) in text and "planning" not in text, text

    w.set_model_folder(_tiny_model(tmp_path, name="other", classes=3))  # model change
    text = _settled(w, qtbot)
    assert _expected_windows(w) in text and "planning" not in text, text

    _phantom(viewer, name="second", slices=9)  # image change (a new layer, then chosen)
    w.image_combo.setCurrentText("second")
    text = _settled(w, qtbot)
    assert "9 windows" in text and "planning" not in text, text


def test_info_line_ends_with_the_plan_when_changes_come_during_a_run(make_napari_viewer,
                                                                     qtbot, tmp_path):
    """Changes made while a run holds the compute thread are planned once it is free."""
    viewer = make_napari_viewer()
    _phantom(viewer)
    w = SegmentWidget(viewer)
    qtbot.addWidget(w)
    w.set_model_folder(_tiny_model(tmp_path))
    w.window_combo.setCurrentText("slice")
    _settled(w, qtbot)
    runner = w.segment_volume()
    for value in (0.25, 0.3, 0.35):  # each restarts the debounce while the run goes on
        w.overlap_spin.setValue(value)
        qtbot.wait(50)
    qtbot.waitUntil(lambda: not runner.running, timeout=60000)
    text = _settled(w, qtbot)
    assert _expected_windows(w) in text and "planning" not in text, text


def test_a_finished_run_shows_the_plan_at_once(make_napari_viewer, qtbot, tmp_path):
    """Nothing the plan depends on changes when a run writes its layers: the info line shows
    the plan as soon as the run returns (a script taking a screenshot then sees it), and a
    change of the inputs still plans again."""
    viewer = make_napari_viewer()
    _phantom(viewer)
    w = SegmentWidget(viewer)
    qtbot.addWidget(w)
    w.set_model_folder(_tiny_model(tmp_path))
    w.window_combo.setCurrentText("slice")
    planned = _settled(w, qtbot)
    assert _expected_windows(w) in planned
    w.make_runner().run_sync()  # adds the labels and probability layers (inserted events)
    assert "phantom [attnseg]" in viewer.layers
    assert not w.info_pending and w.info_label.text() == planned
    w.make_runner(slice_index=3).run_sync()
    assert not w.info_pending and w.info_label.text() == planned
    w.window_combo.setCurrentText("patch")  # a real change: planned again
    text = _settled(w, qtbot)
    assert text != planned and "windows" in text and "planning" not in text


def test_info_line_warns_when_a_ct_is_not_in_hounsfield_units(make_napari_viewer, qtbot, tmp_path):
    """Stored values without the rescale intercept (+1024): the CT model would label it wrongly
    without an error, so the info line says so before the user runs it; HU: no warning."""
    viewer = make_napari_viewer()
    _phantom(viewer, name="hu")
    raw = _phantom(viewer, name="raw")
    raw.data = raw.data.astype("int16") + 1024
    w = SegmentWidget(viewer)
    qtbot.addWidget(w)
    w.set_model_folder(_tiny_model(tmp_path))
    w.image_combo.setCurrentText("raw")
    text = _settled(w, qtbot)
    assert text.startswith("Warning: the image is not in Hounsfield units") and "windows" in text
    w.image_combo.setCurrentText("hu")
    assert "Hounsfield" not in _settled(w, qtbot)


def test_info_line_says_when_slices_are_resized_to_the_models_pixel_sizes(make_napari_viewer, qtbot,
                                                                         tmp_path):
    from napari_attnseg._napari.layers import volume_to_layer_kwargs
    from napari_attnseg.volume import Volume

    torch.manual_seed(0)
    cfg = UNetConfig(spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8, 16))
    spec = ModelSpec(arch=cfg, label_names={0: "background", 1: "heart"}, modality="MR",
                     patch_size=(32, 32), name="px", version="1", inplane_spacing=(1.37, 1.68))
    folder = save_model(tmp_path / "px", AttentionUNet(cfg), spec)
    viewer = make_napari_viewer()
    for name, pixel in (("fine", 0.7), ("typical", 1.5)):
        vol = Volume(np.random.default_rng(0).normal(size=(3, 64, 64)).astype(np.float32),
                     (8.0, pixel, pixel), modality="MR")
        viewer.add_image(vol.data, **volume_to_layer_kwargs(vol, name=name))
    w = SegmentWidget(viewer)
    qtbot.addWidget(w)
    w.set_model_folder(folder)
    w.image_combo.setCurrentText("fine")
    assert "0.7 x 0.7 mm pixels, outside the 1.37-1.68 mm" in _settled(w, qtbot)
    w.image_combo.setCurrentText("typical")
    assert "outside" not in _settled(w, qtbot)


def test_info_line_says_why_a_side_labelled_model_does_not_mirror(make_napari_viewer, qtbot, tmp_path,
                                                                  monkeypatch):
    """Mirror TTA asked for on a model whose labels name sides: the info line says it is off and
    why, and never promises "Mirror TTA on"; an unsided model with TTA asked for does mirror."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    viewer = make_napari_viewer()
    _phantom(viewer)
    w = SegmentWidget(viewer)
    qtbot.addWidget(w)
    torch.manual_seed(0)
    cfg = UNetConfig(spatial_dims=2, in_channels=1, out_channels=3, channels=(4, 8, 16))
    spec = ModelSpec(arch=cfg, label_names={0: "background", 1: "right parotid", 2: "left parotid"},
                     modality="CT", patch_size=(32, 32), name="sided", version="1")
    w.set_model_folder(save_model(tmp_path / "sided", AttentionUNet(cfg), spec))
    w.window_combo.setCurrentText("slice")
    w.tta_combo.setCurrentText("on")
    text = _settled(w, qtbot)
    assert "Mirror TTA is off" in text and "labels name sides" in text and "Mirror TTA on" not in text, text
    w.set_model_folder(_tiny_model(tmp_path))
    w.tta_combo.setCurrentText("on")
    text = _settled(w, qtbot)
    assert "Mirror TTA on" in text and "is off" not in text, text


def test_info_line_says_a_model_averages_its_views(tmp_path):
    """A model with a coronal view (ModelSpec.views): the info line names the view and says
    the preview is the model alone."""
    from napari_attnseg.model.checkpoint import load_model
    from napari_attnseg.model.views import attach_views
    from napari_attnseg.volume import Volume
    from napari_attnseg.widgets._segment_model import SegmentOptions, plan_info

    folder = attach_views(_tiny_model(tmp_path, "axial"), [(_tiny_model(tmp_path, "coronal"), (2, 0, 1), 0.5)])
    model = load_model(folder)
    volume = Volume(np.zeros((6, 32, 32), np.float32), (2.5, 1.0, 1.0), modality="CT")
    text, ok = plan_info(model, volume, SegmentOptions())
    assert ok and "Averages 1 more view (coronal) over the whole volume; the slice preview is the model alone." in text
    alone, _ = plan_info(load_model(tmp_path / "coronal"), volume, SegmentOptions())
    assert "view" not in alone
