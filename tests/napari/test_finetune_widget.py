"""Fine-tune widget: uncertainty + next slice, a synchronous fine-tune with a tiny model, and one
real-thread run stopped mid-way (previous model stays active, user labels untouched), with a
QTimer probe of the longest event-loop stall."""

from __future__ import annotations

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_attnseg.model.registry import ModelRegistry  # noqa: E402
from napari_attnseg.widgets.finetune import FinetuneWidget  # noqa: E402

Z, Y, X = 8, 64, 64


def _phantom(seed=0):
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[:Z, :Y, :X]
    r = 10 + 4 * np.sin(zz / 2.0)
    blob = ((yy - 32) ** 2 + (xx - 30) ** 2) < r ** 2
    img = (blob * 200.0 + rng.normal(0, 30, (Z, Y, X))).astype(np.float32)
    return img, blob.astype(np.uint8)


@pytest.fixture
def tiny_registry(make_tiny_registry):
    return make_tiny_registry({0: "background", 1: "blob"}, "CT", (64, 64))


@pytest.fixture
def scene(make_napari_viewer, tiny_registry):
    viewer = make_napari_viewer()
    img, gt = _phantom()
    viewer.add_image(img, name="img", scale=(2.0, 0.5, 0.5), translate=(5.0, 0.0, 0.0))
    labels = viewer.add_labels(np.zeros_like(gt), name="img corrected", scale=(2.0, 0.5, 0.5),
                               translate=(5.0, 0.0, 0.0))
    widget = FinetuneWidget(viewer)
    widget.image_combo.setCurrentText("img")
    widget.labels_combo.setCurrentText("img corrected")
    return viewer, widget, labels, gt


def _correct(labels, gt, slices):
    """Paint the ground truth into ``slices`` the way napari edits do (history + paint event)."""
    for z in slices:
        idx = np.nonzero(gt[z])
        labels.data_setitem((np.full(idx[0].size, z), *idx), 1)


def test_widget_layout_and_model_default(scene):
    viewer, w, labels, gt = scene
    assert w.model_combo.currentData() == "tiny@1"
    assert "(active)" in w.model_combo.currentText()
    assert w.tracker is not None and w.tracker.layer is labels
    assert w.reviewed_label.text() == "Reviewed slices: 0 of 8"
    viewer.dims.set_current_step(0, 2)
    w.mark_button.click()
    _correct(labels, gt, [5])
    assert w.tracker.reviewed_slices() == [2, 5]
    assert w.reviewed_label.text() == "Reviewed slices: 2 of 8"
    assert w.reviewed_list.count() == 2
    w.add_pair_button.click()
    w.add_pair_button.click()  # no duplicate
    assert w.pairs == [("img", "img corrected")] and w.pairs_list.count() == 1
    w.budget_combo.setCurrentText("seconds")
    assert w.seconds_spin.isVisibleTo(w) and not w.epochs_spin.isVisibleTo(w)


def test_uncertainty_from_probabilities_and_next_slice(scene):
    viewer, w, labels, gt = scene
    rng = np.random.default_rng(0)
    fg = np.clip(gt.astype(np.float32) * 0.98 + 0.01, 0, 1)
    noisy = [1, 4, 6]  # slices with p ~ 0.5 (maximally uncertain), most uncertain first
    for k, z in enumerate(noisy):
        fg[z] = 0.5 + 0.05 * k * rng.random((Y, X))
    viewer.add_image(fg, name="img [attnseg] probabilities", scale=(2.0, 0.5, 0.5),
                     translate=(5.0, 0.0, 0.0))
    w.tracker.mark(4)
    w.compute_uncertainty()
    layer = viewer.layers["img [attnseg] uncertainty"]
    assert layer.colormap.name == "inferno"
    np.testing.assert_allclose(layer.scale, viewer.layers["img"].scale)
    np.testing.assert_allclose(layer.translate, viewer.layers["img"].translate)
    p = fg.astype(np.float64)
    ref = -(p * np.log(p) + (1 - p) * np.log(1 - p)) / np.log(2)
    np.testing.assert_allclose(layer.data, ref, atol=1e-5)
    order = [i for i, _ in w.ranked]
    assert 4 not in order and order[:2] == [1, 6]
    assert w.uncertainty_list.count() == len(order)
    viewer.dims.set_current_step(0, 0)
    assert w.next_slice() == 1 and w.tracker.current_slice() == 1
    assert w.next_slice() == 6 and w.tracker.current_slice() == 6
    # marking the shown slice reviewed removes it from the ranking
    w.mark_button.click()
    assert 6 not in [i for i, _ in w.ranked]


def test_uncertainty_by_flip_prediction(scene):
    viewer, w, labels, gt = scene
    w.compute_uncertainty(sync=True)
    u = viewer.layers["img [attnseg] uncertainty"].data
    assert u.shape == (Z, Y, X) and u.dtype == np.float32
    assert 0.0 <= u.min() and u.max() <= 1.0
    assert len(w.ranked) == Z


# --------------------------------------------------------------------------- training
FAST = dict(epochs=1, steps_per_epoch=3, batch_size=2, patch_size=(32, 32), seed=0)


def _ready_for_training(w, labels, gt, slices=(1, 3, 5, 7)):
    _correct(labels, gt, slices)
    assert w.tracker.reviewed_slices() == sorted(slices)
    w.train_overrides = dict(FAST)
    return np.array(labels.data, copy=True)


def test_finetune_sync_result_and_resegment(scene):
    pytest.importorskip("napari_attnseg.training.finetune")
    from napari_attnseg._progress import drain
    from napari_attnseg.inference.predictor import PredictConfig, predict_job
    from napari_attnseg.model.checkpoint import load_model

    viewer, w, labels, gt = scene
    before = _ready_for_training(w, labels, gt)
    runner = w.make_runner()
    assert runner is not None
    result = runner.run_sync()
    assert result is w.last_result
    reg = ModelRegistry()
    assert [e.version for e in reg.versions("tiny")] == ["1", "2"]
    assert result.entry.version == "2" and result.entry.parent
    assert reg.active("tiny").version == ("2" if result.activated else "1")
    text = w.result_label.text()
    assert f"{result.before_dice:.3f}" in text and f"{result.after_dice:.3f}" in text
    assert ("now active" in text) == bool(result.activated)
    assert w.plot.loss, "the plot received the losses"
    np.testing.assert_array_equal(labels.data, before)  # user labels untouched
    # re-segment: reviewed slices keep the corrections, the others get the new prediction
    assert w.resegment_button.isEnabled()
    w.resegment(sync=True)
    out = viewer.layers["img [attnseg]"].data
    vol = w.last_request.pairs[0].image
    pred = drain(predict_job(load_model(result.entry.path), vol, PredictConfig())).labels
    rev = w.tracker.reviewed_mask()
    np.testing.assert_array_equal(out[rev], before[rev])
    np.testing.assert_array_equal(out[~rev], pred[~rev])
    np.testing.assert_array_equal(labels.data, before)
    # when "<image> [attnseg]" is the user's edited layer, a versioned layer is written instead
    viewer.layers["img [attnseg]"].metadata.setdefault("attnseg", {})["edited"] = True
    w.resegment(sync=True)
    assert f"img [attnseg] (v{result.entry.version})" in viewer.layers


def test_finetune_thread_stop_keeps_previous_model(scene, qtbot):
    pytest.importorskip("napari_attnseg.training.finetune")
    from qtpy.QtCore import QTimer

    viewer, w, labels, gt = scene
    before = _ready_for_training(w, labels, gt)
    # no early stopping: the run must still be going when Stop is pressed
    w.train_overrides = dict(FAST, epochs=200, steps_per_epoch=5, early_stopping_patience=10_000)
    gaps = []
    last = [time.perf_counter()]

    def tick():
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    timer.start()
    w.train_button.click()
    assert w.runner is not None and w.runner.worker is not None
    assert not w.train_button.isEnabled()
    qtbot.waitUntil(lambda: len(w.plot.loss) >= 8, timeout=60000)
    last[0] = time.perf_counter()
    gaps.clear()  # measure stalls while training runs, not the start-up
    qtbot.wait(1500)
    stall = max(gaps) - 0.010
    assert w.stop_button.isEnabled()
    w.stop_button.click()
    qtbot.waitUntil(lambda: w.train_button.isEnabled(), timeout=30000)  # finished signal
    timer.stop()
    print(f"\nlongest event-loop stall during training: {stall * 1000:.1f} ms "
          f"({len(gaps)} ticks of 10 ms)")
    assert stall < 1.0
    # Stop kept the best checkpoint as a new version, but the previous model stays active
    result = w.last_result
    assert result is not None and result.train_result.stopped == "stopped"
    assert result.train_result.steps < 200 * 5
    reg = ModelRegistry()
    assert [e.version for e in reg.versions("tiny")] == ["1", "2"]
    assert reg.active("tiny").version == "1"
    assert "Stopped" in w.result_label.text() and "previous version stays active" in w.result_label.text()
    np.testing.assert_array_equal(labels.data, before)
    assert w.train_button.isEnabled() and not w.stop_button.isEnabled()


def test_finetune_cancel_saves_nothing(scene):
    pytest.importorskip("napari_attnseg.training.finetune")
    viewer, w, labels, gt = scene
    before = _ready_for_training(w, labels, gt)
    runner = w.make_runner()
    seen = []
    original = runner.on_progress

    def on_progress(p):
        original(p)
        seen.append(p.stage)
        if seen.count("train") == 2:
            runner.cancel()

    runner.on_progress = on_progress
    from napari_attnseg.widgets._worker import CANCELLED

    assert runner.run_sync() is CANCELLED
    w._on_finished()  # what the thread worker's finished signal does
    reg = ModelRegistry()
    assert [e.version for e in reg.versions("tiny")] == ["1"]
    assert reg.active("tiny").version == "1"
    assert w.result_label.text().startswith("Cancelled: nothing saved")
    np.testing.assert_array_equal(labels.data, before)


def test_train_without_reviewed_slices_says_so(scene, monkeypatch):
    viewer, w, labels, gt = scene
    shown = []
    monkeypatch.setattr("napari_attnseg.widgets.finetune.notify_error",
                        lambda exc, ctx="": shown.append(str(exc)))
    assert w.make_runner() is None
    assert shown and "no slice of 'img corrected' is marked reviewed" in shown[0]


def test_default_learning_rate_is_small(scene):
    viewer, w, labels, gt = scene
    assert w.lr_spin.value() == pytest.approx(1e-4)
    assert w.train_config().lr == pytest.approx(1e-4)


def test_time_budget_progress_shows_seconds_and_ends_full(scene):
    pytest.importorskip("napari_attnseg.training.finetune")
    viewer, w, labels, gt = scene
    _ready_for_training(w, labels, gt)
    w.budget_combo.setCurrentText("seconds")
    w.train_overrides = dict(FAST, max_seconds=30.0)
    runner = w.make_runner()
    texts = []
    original = runner.on_progress

    def on_progress(p):
        original(p)
        texts.append(w.progress.status.text())

    runner.on_progress = on_progress
    runner.run_sync()
    assert texts and all(" s / 30 s" in t and "epoch" not in t for t in texts)
    assert any("loss" in t for t in texts) and any("validation Dice" in t for t in texts)
    assert w.progress.bar.value() == 100


def test_no_improvement_message(scene):
    from types import SimpleNamespace

    viewer, w, labels, gt = scene
    result = SimpleNamespace(entry=None, before_dice=0.9, after_dice=0.9, activated=False, unchanged=True,
                             val_slices=3, train_result=SimpleNamespace(stopped="time_budget"))
    w.show_result(result)
    text = w.result_label.text()
    assert "No improvement within the budget: nothing saved" in text and "worse" not in text
    assert "previous version stays active" in text and "on 3 held-out slices" in text
    assert not w.resegment_button.isEnabled()
    # saved but not activated: the reasons are shown
    result = SimpleNamespace(entry=SimpleNamespace(ref="tiny@2", version="2"), before_dice=0.5, after_dice=0.7,
                             activated=False, unchanged=False, val_slices=1,
                             not_activated_because=("it was validated on a single slice, too few to trust "
                                                    "automatically",),
                             train_result=SimpleNamespace(stopped="epochs"))
    w.show_result(result)
    text = w.result_label.text()
    assert "saved as tiny@2" in text and "Not activated because it was validated on a single slice" in text
    assert "previous version stays active" in text and "v2" in text and w.resegment_button.isEnabled()


def test_loss_plot_import_still_works():
    from napari_attnseg.widgets._plot import LossPlot
    from napari_attnseg.widgets.finetune import LossPlot as Reexported

    assert Reexported is LossPlot


def test_form_is_built_from_finetune_params_and_pickers_track_the_viewer(scene):
    """The training options are a FinetuneParams form (read back into the TrainConfig); the
    layer pickers, docked as napari docks them, follow insertions, renames and removals."""
    from napari_attnseg.widgets._finetune_form import FinetuneParams, settings

    viewer, w, labels, gt = scene
    viewer.window.add_dock_widget(w, name="Fine-tune")
    assert settings(w) == FinetuneParams()
    w.params.budget.value = "seconds"
    w.params.seconds.value = 90
    w.params.lr.value = 3e-4
    w.params.freeze_encoder.value = True
    cfg = w.train_config()
    assert cfg.max_seconds == 90.0 and cfg.lr == pytest.approx(3e-4) and cfg.freeze_encoder
    assert w.lr_spin.minimum() == pytest.approx(1e-5)  # not rounded to 0 by the precision
    # the pickers: a new image is listed (the choice kept), a prediction's is not
    viewer.add_image(np.zeros((Z, Y, X), np.float32), name="second")
    viewer.add_image(np.zeros((Z, Y, X), np.float32), name="img [attnseg] probabilities")
    items = [w.image_combo.itemText(i) for i in range(w.image_combo.count())]
    assert items == ["img", "second"] and w.image.value is viewer.layers["img"]
    labels.name = "img fixed"  # a rename (napari resets the docked widget's choices)
    assert w.labels_combo.currentText() == "img fixed" and w.labels_layer() is labels
    viewer.layers.remove(labels)
    assert w.labels.value is None and w.labels_layer() is None
    assert "Cannot train" in w.info_label.text()
