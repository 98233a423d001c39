"""Segment widget: info line before running, sync and threaded runs, preview, cancel leaves no
layer, geometry + provenance on the outputs, edited layers are kept, event-loop stall probe."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from napari_attnseg._napari.layers import volume_to_layer_kwargs
from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
from napari_attnseg.model.checkpoint import ModelSpec, save_model
from napari_attnseg.volume import Volume
from napari_attnseg.widgets.segment import NO_MODEL_TEXT, SegmentWidget


def _model_folder(tmp_path, classes=2, in_channels=1, name="tiny"):
    torch.manual_seed(0)
    cfg = UNetConfig(spatial_dims=2, in_channels=in_channels, out_channels=classes,
                     channels=(4, 8, 16))
    spec = ModelSpec(arch=cfg, label_names={i: f"c{i}" for i in range(classes)}, modality="CT",
                     patch_size=(32, 32), name=name, version="1")
    return save_model(tmp_path / name, AttentionUNet(cfg), spec)


def _add_scan(viewer, shape=(6, 40, 48), name="scan", modality="CT", anatomy=""):
    rng = np.random.default_rng(0)
    d = np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, 1.0]])
    vol = Volume(data=rng.normal(0, 300, shape).astype(np.float32), spacing=(2.5, 0.8, 0.7),
                 origin=(5.0, 12.0, -3.0), direction=d, modality=modality, source="scan.nii.gz",
                 header={"anatomy": anatomy} if anatomy else {})
    return viewer.add_image(vol.data, **volume_to_layer_kwargs(vol, name=name))


def _info(widget, qtbot) -> str:
    """The info line once its plan (computed off the GUI thread) has arrived."""
    qtbot.waitUntil(lambda: not widget.info_pending, timeout=20000)
    return widget.info_label.text()


@pytest.fixture
def widget(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    _add_scan(viewer)
    w = SegmentWidget(viewer)
    qtbot.addWidget(w)
    w.set_model_folder(_model_folder(tmp_path))
    return w


def test_no_model_message(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    monkeypatch.setattr("napari_attnseg.model.registry.SHIPPED_ROOT", tmp_path / "none")
    viewer = make_napari_viewer()
    _add_scan(viewer)
    w = SegmentWidget(viewer)
    qtbot.addWidget(w)
    assert w.model_folder() is None
    assert w.info_label.text() == NO_MODEL_TEXT


def test_info_shows_windows_and_cpu_before_running(widget, monkeypatch, qtbot):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    widget.update_info()
    # default "auto" window for a 2D model: one whole-slice window per slice
    assert "6 windows" in _info(widget, qtbot)
    widget.window_combo.setCurrentText("patch")
    text = _info(widget, qtbot)
    # 6 slices x 2 x 2 windows (40x48 with 32x32 patches, overlap 0.5)
    assert "24 windows" in text and "Running on CPU: slower" in text and "CPU" in text
    widget.overlap_spin.setValue(0.75)  # steps of 8: 2 x 3 windows per slice
    assert "36 windows" in _info(widget, qtbot)


def test_run_sync_writes_layers_with_geometry_and_provenance(widget, qtbot):
    runner = widget.make_runner()
    pred = runner.run_sync()
    # synchronous (scripts): both layers exist when run_sync returns
    assert "scan [attnseg] probabilities" in widget.viewer.layers
    viewer = widget.viewer
    src = viewer.layers["scan"]
    lab = viewer.layers["scan [attnseg]"]
    prob = viewer.layers["scan [attnseg] probabilities"]
    assert type(lab).__name__ == "Labels" and lab.data.shape == src.data.shape
    assert lab.data.dtype == np.uint8 and prob.data.dtype == np.float32
    np.testing.assert_array_equal(lab.data, pred.labels)
    np.testing.assert_allclose(prob.data, pred.probabilities[1])
    for layer in (lab, prob):
        np.testing.assert_allclose(layer.scale, src.scale)
        np.testing.assert_allclose(layer.translate, src.translate)
        np.testing.assert_allclose(layer.affine.affine_matrix, src.affine.affine_matrix)
        prov = layer.metadata["attnseg"]["provenance"]
        assert prov["model_id"] == pred.provenance["model_id"]
        assert prov["weights_sha256"] and prov["config"]["overlap"] == 0.5
        assert layer.metadata["attnseg"]["source"] == "scan.nii.gz"
    # a re-run updates in place (same layer objects)
    widget.overlap_spin.setValue(0.25)
    widget.make_runner().run_sync()
    assert viewer.layers["scan [attnseg]"] is lab
    assert lab.metadata["attnseg"]["provenance"]["config"]["overlap"] == 0.25
    assert len(viewer.layers) == 3


def test_multiclass_probabilities_show_foreground_and_keep_every_class(widget, tmp_path, qtbot):
    from napari_attnseg.widgets.refine import RefineWidget

    widget.set_model_folder(_model_folder(tmp_path, classes=3, name="three"))
    pred = widget.make_runner().run_sync()
    viewer = widget.viewer
    src = viewer.layers["scan"]
    prob = viewer.layers["scan [attnseg] probabilities"]
    # a 3D layer (no extra channel slider): the probability of any foreground class
    assert prob.data.shape == (6, 40, 48) and viewer.dims.ndim == 3
    np.testing.assert_allclose(prob.data, 1.0 - pred.probabilities[0], atol=1e-6)
    np.testing.assert_allclose(prob.data, pred.probabilities[1:].sum(0), atol=1e-5)
    np.testing.assert_allclose(prob.scale, src.scale)
    full = prob.metadata["attnseg"]["class_probabilities"]
    assert isinstance(full, np.ndarray) and full.shape == (3, 6, 40, 48)
    np.testing.assert_allclose(full, pred.probabilities)
    # the CRF widget refines from every class, not from the foreground
    refine = RefineWidget(viewer)
    refine.source_combo.setCurrentText("scan [attnseg] probabilities")
    refine.image_combo.setCurrentText("scan")
    np.testing.assert_allclose(refine.config().probabilities, pred.probabilities)
    # a slice preview keeps the other slices of the full array
    part = widget.make_runner(slice_index=2).run_sync()
    full2 = viewer.layers["scan [attnseg] probabilities"].metadata["attnseg"]["class_probabilities"]
    np.testing.assert_allclose(full2[:, 2], part.probabilities)
    np.testing.assert_allclose(full2[:, 3], pred.probabilities[:, 3])
    # a two-class run afterwards drops the stale array (the CRF falls back to the layer)
    widget.set_model_folder(_model_folder(tmp_path, classes=2, name="two"))
    pred2 = widget.make_runner().run_sync()
    prob = viewer.layers["scan [attnseg] probabilities"]
    assert prob.metadata["attnseg"]["class_probabilities"] is None
    np.testing.assert_allclose(prob.data, pred2.probabilities[1])
    np.testing.assert_allclose(refine.config().probabilities, pred2.probabilities[1])


def test_model_follows_the_image_modality_until_the_user_picks(make_napari_viewer, qtbot,
                                                               tmp_path, monkeypatch):
    shipped = tmp_path / "shipped"
    for name, modality in (("a-ct", "CT"), ("b-us", "US")):
        folder = _model_folder(tmp_path, name=name)
        cfg = (folder / "config.json")
        import json

        data = json.loads(cfg.read_text())
        data["modality"] = modality
        (shipped / name / "1").mkdir(parents=True)
        (shipped / name / "1" / "config.json").write_text(json.dumps(data))
        (shipped / name / "1" / "weights.pt").write_bytes((folder / "weights.pt").read_bytes())
    monkeypatch.setattr("napari_attnseg.model.registry.SHIPPED_ROOT", shipped)
    viewer = make_napari_viewer()
    ct = _add_scan(viewer, name="ct")
    w = SegmentWidget(viewer)
    qtbot.addWidget(w)
    assert w.model_combo.currentData() == str(shipped / "a-ct" / "1")
    us = _add_scan(viewer, name="us")
    us.metadata["attnseg"]["modality"] = "US"
    w.image_combo.setCurrentText("us")
    assert w.model_combo.currentData() == str(shipped / "b-us" / "1")
    w.image_combo.setCurrentText("ct")
    assert w.model_combo.currentData() == str(shipped / "a-ct" / "1")
    # an explicit choice by the user is kept when the image changes
    idx = w.model_combo.findData(str(shipped / "b-us" / "1"))
    w.model_combo.setCurrentIndex(idx)
    w.model_combo.activated.emit(idx)
    w.image_combo.setCurrentText("us")
    w.image_combo.setCurrentText("ct")
    assert w.model_combo.currentData() == str(shipped / "b-us" / "1")
    assert ct.metadata["attnseg"]["modality"] == "CT"


def test_edited_labels_are_not_overwritten(widget):
    widget.make_runner().run_sync()
    lab = widget.viewer.layers["scan [attnseg]"]
    lab.paint((2, 10, 10), 1, refresh=True)  # a user brush stroke
    assert lab.metadata["attnseg"].get("edited") is True
    before = lab.data.copy()
    widget.make_runner().run_sync()
    assert "scan [attnseg] (new)" in widget.viewer.layers
    np.testing.assert_array_equal(widget.viewer.layers["scan [attnseg]"].data, before)


def test_preview_slice_fills_the_current_slice(widget):
    viewer = widget.viewer
    viewer.dims.set_point(0, viewer.layers["scan"].data_to_world((4, 0, 0))[0])
    assert widget.current_slice_index() == 4
    pred = widget.make_runner(slice_index=4).run_sync()
    lab = viewer.layers["scan [attnseg]"].data
    assert lab.shape == (6, 40, 48)
    np.testing.assert_array_equal(lab[4], pred.labels)
    assert not lab[:4].any() and not lab[5].any()
    assert widget._last_preview_s is not None
    # a fast preview then runs synchronously on the GUI thread
    widget._last_preview_s = 0.01
    out = widget.preview_slice()
    assert out is not None and out.labels.shape == (40, 48)


def test_bad_model_input_is_reported(widget, tmp_path, monkeypatch, qtbot):
    shown = []
    monkeypatch.setattr("napari_attnseg.widgets.segment.notify_error",
                        lambda exc, ctx="": shown.append(str(exc)))
    monkeypatch.setattr("napari_attnseg.widgets._worker.notify_error",
                        lambda exc, ctx="": shown.append(str(exc)))
    widget.set_model_folder(_model_folder(tmp_path, in_channels=2, name="twoch"))
    assert "expects 2 input channels" in _info(widget, qtbot)
    assert widget.make_runner() is None
    assert any("expects 2 input channels" in s for s in shown)
    assert "scan [attnseg]" not in widget.viewer.layers
    broken = _model_folder(tmp_path, name="broken")
    (broken / "weights.pt").write_bytes(b"garbage")
    widget.set_model_folder(broken)
    assert "corrupt" in _info(widget, qtbot)  # the info line found it (model loaded off the GUI)
    assert widget.make_runner() is None
    assert any("corrupt" in s for s in shown)


def test_threaded_run_cancel_leaves_no_layer(widget, qtbot):
    widget.viewer.layers.remove("scan")
    _add_scan(widget.viewer, shape=(60, 64, 64))
    widget.image_combo.setCurrentText("scan")
    runner = widget.make_runner()
    job = runner._factory
    ran = []

    def slowed():  # the same job, 20 ms per batch, so that Cancel lands mid-run
        gen = job()
        try:
            while True:
                p = next(gen)
                if p.stage == "segmenting":
                    ran.append(p.done)
                    time.sleep(0.02)
                yield p
        except StopIteration as stop:
            return stop.value

    runner._factory = slowed
    seen = []
    runner.on_progress = lambda p: seen.append(p)
    runner.start()
    qtbot.waitUntil(lambda: any(p.stage == "segmenting" for p in seen), timeout=20000)
    widget.progress.cancel_button.click()
    at_cancel = len(ran)
    qtbot.waitUntil(lambda: not runner.running, timeout=20000)
    assert runner.cancelled
    total = max(p.total for p in seen if p.stage == "segmenting")
    assert len(ran) <= at_cancel + 1 < total  # stopped within one batch of the click
    assert "scan [attnseg]" not in widget.viewer.layers
    assert "scan [attnseg] probabilities" not in widget.viewer.layers


def test_threaded_run_keeps_event_loop_responsive(widget, qtbot):
    from qtpy.QtCore import QTimer

    widget.viewer.layers.remove("scan")
    _add_scan(widget.viewer, shape=(40, 96, 96))
    widget.image_combo.setCurrentText("scan")
    stamps, result_at = [], []
    show = widget.show_result

    def timed_show(req, pred, *rest, **kw):
        result_at.append(time.perf_counter())
        show(req, pred, *rest, **kw)

    widget.show_result = timed_show
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: stamps.append(time.perf_counter()))
    timer.start()
    worker = widget.segment_volume()
    assert worker is not None
    qtbot.waitUntil(lambda: "scan [attnseg]" in widget.viewer.layers, timeout=60000)
    qtbot.wait(50)
    timer.stop()
    s = np.asarray(stamps)
    gaps = np.diff(s)
    computing = np.diff(s[s < result_at[0]])
    print(f"longest event-loop stall: {computing.max() * 1000:.1f} ms while computing, "
          f"{gaps.max() * 1000:.1f} ms including adding the result layers ({len(s)} ticks)")
    assert computing.max() < 1.0 and gaps.max() < 5.0
    assert widget.viewer.layers["scan [attnseg]"].data.shape == (40, 96, 96)
    # threaded: the new probability layer follows the labels a moment later (two short stalls)
    qtbot.waitUntil(lambda: "scan [attnseg] probabilities" in widget.viewer.layers,
                    timeout=5000)
    assert widget._pending_layers == 0
    assert widget.viewer.layers["scan [attnseg] probabilities"].data.shape == (40, 96, 96)


def test_background_warm_up_primes_the_preview(widget, qtbot, monkeypatch):
    """Choosing a model and an image warms the model up off the GUI thread; the first preview
    then reuses the intensity statistics instead of recomputing them."""
    import threading

    import napari_attnseg.inference.predictor as predictor

    # the warm-up starts once the info line's plan says the model can run
    qtbot.waitUntil(lambda: not widget.info_pending and widget._warm_key is not None
                    and widget._warm_worker is None, timeout=20000)
    assert widget._warm_key[0] == "scan"
    assert len(widget._intensity) == 1
    assert widget._last_preview_s is not None  # timed by the warm-up: a fast first preview is sync
    threads = []
    real = predictor.warm_up
    monkeypatch.setattr(predictor, "warm_up",
                        lambda *a, **k: threads.append(threading.current_thread()) or real(*a, **k))
    widget.window_combo.setCurrentText("patch")  # other window shapes: warmed again, in a worker
    qtbot.waitUntil(lambda: widget._warm_worker is None and bool(threads), timeout=20000)
    assert threads[0] is not threading.main_thread()
    monkeypatch.setattr(predictor, "intensity_for",
                        lambda *a, **k: pytest.fail("statistics recomputed despite the warm-up"))
    pred = widget.make_runner(slice_index=2).run_sync()
    assert pred.labels.shape == (40, 48)


def test_preview_merges_off_the_gui_thread_without_touching_shared_arrays(widget, qtbot,
                                                                          tmp_path):
    """A threaded preview builds the full-size arrays in the worker, as new arrays: a CRF job
    holding the previous result keeps an unchanged snapshot."""
    import threading

    from napari_attnseg.widgets import segment

    widget.set_model_folder(_model_folder(tmp_path, classes=3, name="three"))
    widget.make_runner().run_sync()
    prob = widget.viewer.layers["scan [attnseg] probabilities"]
    held = prob.metadata["attnseg"]["class_probabilities"]
    held_copy, fg_copy = held.copy(), prob.data.copy()
    fg_held = prob.data
    threads = []
    real = segment._PreviewBase.merge

    def merge(self, pred, index):
        threads.append(threading.current_thread())
        return real(self, pred, index)

    segment._PreviewBase.merge = merge
    try:
        widget.overlap_spin.setValue(0.1)
        before = widget.last_prediction
        runner = widget.make_runner(slice_index=3)
        runner.start()
        qtbot.waitUntil(lambda: widget.last_prediction is not before and not runner.running,
                        timeout=20000)
    finally:
        segment._PreviewBase.merge = real
    assert threads and threads[0] is not threading.main_thread()
    np.testing.assert_array_equal(held, held_copy)
    np.testing.assert_array_equal(fg_held, fg_copy)
    new = widget.viewer.layers["scan [attnseg] probabilities"].metadata["attnseg"]["class_probabilities"]
    assert new is not held and new.shape == held.shape
    np.testing.assert_array_equal(new[:, :3], held[:, :3])  # other slices kept
    np.testing.assert_allclose(new[:, 3], widget.last_prediction.probabilities)


def test_model_list_refreshes_and_follows_the_activated_fine_tune(make_napari_viewer, qtbot,
                                                                   tmp_path):
    """Opening the model list re-reads the registry: a fine-tuned version appears, and becomes
    the selection once activated, unless the user picked a model (which is kept)."""
    from napari_attnseg.model.registry import ModelRegistry

    reg = ModelRegistry()
    base = reg.default_model()
    if base is None:
        pytest.skip("no shipped model in this checkout")
    viewer = make_napari_viewer()
    _add_scan(viewer, anatomy="phantom")  # the shipped default is the CT phantom demo model
    w = SegmentWidget(viewer)
    qtbot.addWidget(w)
    assert w.model_folder() == base.path
    tiny = _model_folder(tmp_path)
    from napari_attnseg.model.checkpoint import load_model

    loaded = load_model(tiny)
    import dataclasses  # a fine-tune keeps its parent's anatomy (the phantom demo's)

    spec = dataclasses.replace(loaded.spec, anatomy="phantom")
    tuned = reg.add_version(base.name, loaded.network, spec, parent=base.ref)
    w.model_combo.showPopup()
    w.model_combo.hidePopup()
    assert w.model_combo.findData(str(tuned.path)) >= 0  # listed
    assert w.model_folder() == base.path  # not active yet: the shipped one stays selected
    reg.set_active(base.name, tuned.version)
    w.show()  # showing the widget (its tab chosen again) re-reads the registry too
    assert w.model_folder() == tuned.path
    assert w.model_combo.itemText(w.model_combo.count() - 1) == "Browse folder..."
    # a folder the user picked survives a refresh and stays selected
    w.set_model_folder(tiny)
    w.refresh_models()
    assert w.model_folder() == tiny


def test_options_form_is_built_from_segment_params(widget):
    """The inference options are a SegmentParams form: its defaults, its choices, read back
    (through the Qt handles scripts use) into the options the run and the plan get."""
    from napari_attnseg.widgets._segment_model import SegmentParams

    assert widget.options() == SegmentParams().options()
    assert [widget.device_combo.itemText(i) for i in range(widget.device_combo.count())] == \
        ["auto", "cpu", "cuda"]
    widget.overlap_spin.setValue(0.25)
    widget.window_combo.setCurrentText("patch")
    assert widget.options().tta is None  # "model default"
    widget.tta_combo.setCurrentText("on")
    widget.form.precision.value = "bf16"
    o = widget.options()
    assert (o.overlap, o.window, o.tta, o.precision, o.modality) == (0.25, "patch", True,
                                                                     "bf16", None)
    assert widget.config().overlap == pytest.approx(0.25)


def test_pickers_and_options_line_up_in_one_form(widget, qtbot):
    """Issue 11 (cosmetic, found by using it): the image / modality / model pickers and the
    typed options are rows of one form, so every field starts at the same x."""
    from qtpy.QtWidgets import QFormLayout

    widget.show()
    qtbot.waitExposed(widget)
    form = widget.layout().itemAt(0).layout()
    assert isinstance(form, QFormLayout) and form.rowCount() == 3 + len(list(widget.form))
    fields = [form.itemAt(r, QFormLayout.ItemRole.FieldRole).widget() for r in range(form.rowCount())]
    assert widget.overlap_spin in fields and widget.tta_combo in fields
    assert len({f.mapTo(widget, f.rect().topLeft()).x() for f in fields}) == 1


def test_result_layers_carry_their_role_and_are_found_by_it_when_renamed(widget):
    """Issue 11: the Segment result layers say what they are (``metadata["attnseg"]["role"]``),
    so other widgets find them by role, whatever the user renamed them to."""
    from napari_attnseg._napari.layers import layer_role
    from napari_attnseg.widgets.refine import RefineWidget, is_output, is_probabilities

    widget.make_runner().run_sync()
    viewer = widget.viewer
    lab, prob = viewer.layers["scan [attnseg]"], viewer.layers["scan [attnseg] probabilities"]
    assert layer_role(lab) == "prediction" and layer_role(prob) == "probabilities"
    assert layer_role(viewer.layers["scan"]) == ""
    lab.name, prob.name = "my segmentation", "my map"
    assert is_output(lab) and is_probabilities(prob) and not is_probabilities(viewer.layers["scan"])
    refine = RefineWidget(viewer)
    refine.reset_choices()
    sources = [refine.source_combo.itemText(i) for i in range(refine.source_combo.count())]
    assert "my map" in sources
    widget.make_runner().run_sync()  # a re-run keeps the role
    assert layer_role(viewer.layers["scan [attnseg]"]) == "prediction"
