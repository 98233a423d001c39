"""The Fine-tune widget with scribbles and a 2D model runs the scribble fine-tune core (issue 13):
real strokes on a small scan in a real viewer, the Scribble widget correcting the result layer;
the corrected slices are the targets, an accepted result is saved as a new (inactive) version
with the core's provenance, Cancel stops the run and saves nothing."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_attnseg.interactive import IGNORE, enforce_scribbles  # noqa: E402
from napari_attnseg.model.checkpoint import read_spec  # noqa: E402
from napari_attnseg.model.registry import ModelRegistry  # noqa: E402
from napari_attnseg.widgets.finetune import FinetuneWidget  # noqa: E402
from napari_attnseg.widgets.scribble import ScribbleWidget  # noqa: E402

SHAPE = (6, 32, 32)
BG = 255  # the scribbles layer's background-stroke value


def _scan(seed: int = 0):
    """Bright discs moving across the slices, a little noise (as tests/core's scribble scan)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SHAPE[1], :SHAPE[2]]
    gt = np.stack([((yy - 14) ** 2 + (xx - 11 - 2 * k) ** 2 < 49) for k in range(SHAPE[0])])
    img = (gt.astype(np.float32) + rng.normal(0, 0.08, SHAPE)).astype(np.float32)
    return img, gt.astype(np.uint8)


@pytest.fixture
def tiny_registry(make_tiny_registry):
    return make_tiny_registry({0: "background", 1: "disc"}, "MR", (32, 32), normalization={"preset": "MR"})


@pytest.fixture
def scene(make_napari_viewer, qtbot, tiny_registry):
    viewer = make_napari_viewer()
    img, gt = _scan()
    viewer.add_image(img, name="disc")
    result = viewer.add_labels(np.zeros(SHAPE, np.uint8), name="disc [attnseg]")
    sw = ScribbleWidget(viewer)
    sw.image_combo.value = viewer.layers["disc"]
    sw.result_combo.value = result
    scr = sw.scribbles_layer(create=True)
    fw = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(fw)
    fw.labels_combo.setCurrentText(scr.name)
    fw.params.budget.value = "seconds"
    return viewer, fw, sw, scr, result, gt


def _draw(layer, z, rows, cols, value):
    """A stroke as napari's brush records it (undo history + paint event)."""
    layer.data_setitem((np.full(np.size(rows), z), np.asarray(rows), np.asarray(cols)), value)


def _strokes(scr, gt, slices):
    """A line across the disc and a background line at the top of each slice."""
    for z in slices:
        ys, xs = np.nonzero(gt[z])
        cols = np.arange(xs.min() + 1, xs.max())
        _draw(scr, z, np.full(cols.size, int(ys.mean())), cols, 1)
        _draw(scr, z, np.full(30, 2), np.arange(1, 31), BG)


def test_scribbles_with_a_2d_model_run_the_scribble_core(scene, qtbot):
    viewer, w, sw, scr, result, gt = scene
    _strokes(scr, gt, [1, 4])  # each stroke corrects its slice of the result layer at once
    qtbot.wait(20)
    corrected = np.array(result.data)
    assert corrected[[1, 4]].any() and not corrected[[0, 2, 3, 5]].any()
    assert w.train_button.isEnabled(), w.info_label.text()
    assert w.mode_label.text().startswith("Mode: scribbles, 2D model")
    w.params.seconds.value = 30
    w.scribble_overrides = dict(max_seconds=None, max_steps=3, num_threads=1)
    runner = w.make_runner()
    assert runner is not None
    assert w.last_request.corrected_name == "disc [attnseg]"
    out = runner.run_sync()
    assert runner.error is None, runner.error
    res = out.result
    assert res.accepted and res.steps == 3 and res.targets.slices == [1, 4]
    # the targets are exactly what the user saw in the result layer (strokes enforced)
    core = np.where(np.asarray(scr.data) == 0, IGNORE, np.where(np.asarray(scr.data) == BG, 0, scr.data))
    for z in (1, 4):
        np.testing.assert_array_equal(res.targets.labels[z],
                                      enforce_scribbles(corrected[z], core[z].astype(np.uint8), IGNORE))
    # saved with the core's provenance as v2, not active (nothing checked it on held-out slices)
    entry = out.entry
    assert entry is not None and entry.version == "2" and not out.activated
    prov = read_spec(entry.path).provenance
    assert prov["kind"] == "scribble-finetune" and prov["scribbled_slices"] == [1, 4]
    assert prov["steps"] == 3
    assert ModelRegistry().active("tiny").version == "1"
    text = w.result_label.text()
    assert "saved as tiny@2" in text and "Not activated" in text and "disc [attnseg]" in text, text
    assert w.resegment_button.isEnabled()
    w.resegment(sync=True)
    assert "disc [attnseg] (v2)" in viewer.layers  # the corrected result layer is kept


def test_without_a_corrected_layer_the_core_corrects_the_slices(scene, qtbot):
    viewer, w, sw, scr, result, gt = scene
    sw.form.update_on_stroke.value = False  # strokes only: the result layer stays untouched
    _strokes(scr, gt, [1, 4])
    qtbot.wait(20)
    assert not np.asarray(result.data).any()
    w.scribble_overrides = dict(max_seconds=None, max_steps=1, num_threads=1)
    runner = w.make_runner()
    assert w.last_request.corrected is None
    out = runner.run_sync()
    assert out.result.targets.labels[[1, 4]].any()  # corrected from the strokes by the core
    assert "corrected from the strokes" in w.result_label.text()


def test_cancel_stops_the_scribble_finetune(scene, qtbot):
    viewer, w, sw, scr, result, gt = scene
    sw.form.update_on_stroke.value = False
    _strokes(scr, gt, [1, 4])
    qtbot.wait(20)
    w.params.seconds.value = 120
    w.scribble_overrides = dict(num_threads=1)
    seen = []
    w.train()
    runner = w.runner
    runner.on_progress = lambda p: (seen.append(p.stage), w._on_progress(p))
    qtbot.waitUntil(lambda: "train" in seen, timeout=15000)
    w.progress.cancel_button.click()
    qtbot.waitUntil(lambda: not runner.running, timeout=10000)
    assert runner.cancelled and runner.result is None
    assert [e.version for e in ModelRegistry().versions("tiny")] == ["1"]
    assert w.result_label.text().startswith("Cancelled: nothing saved"), w.result_label.text()
    assert w.train_button.isEnabled()


def test_a_gate_rejected_result_saves_nothing_and_activates_nothing(scene, qtbot):
    """The core's gate holds the middle scribbled slice out and rejects a run that made the model
    agree less with its correction. Here the held-out slice's strokes say "no disc here"
    (background across the disc) while the other two say "disc": learning the disc makes the
    model disagree with the held-out slice, so the gate keeps the base. The widget saves no
    version, the active one stays, and the result line says why, in a real viewer."""
    viewer, w, sw, scr, result, gt = scene
    _strokes(scr, gt, [1, 4])
    ys, xs = np.nonzero(gt[3])
    for row in range(ys.min(), ys.max() + 1, 2):  # slice 3: the disc painted as background
        _draw(scr, 3, np.full(xs.max() - xs.min() + 1, row), np.arange(xs.min(), xs.max() + 1), BG)
    qtbot.wait(20)
    assert not np.asarray(result.data)[3].any() and np.asarray(result.data)[[1, 4]].any()
    w.scribble_overrides = dict(max_seconds=None, max_steps=80, num_threads=1, gate=True,
                                gate_fraction=0.5, consistency=0.0, lr=1e-2)
    runner = w.make_runner()
    out = runner.run_sync()
    assert runner.error is None, runner.error
    assert not out.result.accepted and out.entry is None, out.result.note
    assert [e.version for e in ModelRegistry().versions("tiny")] == ["1"]
    assert ModelRegistry().active("tiny").version == "1"
    text = w.result_label.text()
    assert "not adapted" in text and "held-out scribbled slice 3" in text, text
    assert "Nothing saved" in text and "previous version stays active" in text, text
    assert "disc [attnseg] (v2)" not in viewer.layers
