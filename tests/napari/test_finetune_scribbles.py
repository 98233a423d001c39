"""Fine-tune on scribbles in a real viewer (issue 13, "Learn from sparse labels"): the scribbles
layer of "Correct with scribbles" is a training target of its own mode; its strokes, drawn here
programmatically on a CT phantom, are what the fine-tune job receives (unscribbled voxels carry
no loss), the scribbled slices are the reviewed ones, the info line counts the strokes, Run is
disabled with the reason while nothing can train, and a validation that cannot be judged
states a caveat and activates nothing."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

torch = pytest.importorskip("torch")

from napari_attnseg.model.registry import ModelRegistry  # noqa: E402
from napari_attnseg.sample.phantoms import ct_phantom  # noqa: E402
from napari_attnseg.widgets._finetune_scribble import core_caveat  # noqa: E402
from napari_attnseg.widgets.finetune import FinetuneWidget  # noqa: E402
from napari_attnseg.widgets.scribble import ScribbleWidget  # noqa: E402

SHAPE, SPACING = (8, 64, 64), (5.0, 3.0, 3.0)  # organ on slices 1..6, lesion on 2..4
BG = 255  # the scribbles layer's background-stroke value
FAST = dict(epochs=1, steps_per_epoch=3, batch_size=2, patch_size=(32, 32), seed=0)


@pytest.fixture
def tiny_registry(make_tiny_registry, request):
    """A 2D model (a 3D one with ``indirect`` parametrisation ``3``: the partial-CE path, which
    2D models no longer take: they run the scribble fine-tune core, test_finetune_scribble_core.py)."""
    dims = getattr(request, "param", 2)
    return make_tiny_registry({0: "background", 1: "organ", 2: "lesion"}, "CT",
                              (64, 64) if dims == 2 else (8, 32, 32), spatial_dims=dims)


@pytest.fixture
def scene(make_napari_viewer, qtbot, tiny_registry):
    viewer = make_napari_viewer()
    image, gt = ct_phantom(seed=0, shape=SHAPE, spacing=SPACING)
    viewer.add_image(image.data.astype(np.float32), name="ct", scale=SPACING)
    viewer.add_labels(np.zeros(SHAPE, np.uint8), name="ct corrected", scale=SPACING)
    errors = viewer.add_labels(np.zeros(SHAPE, np.uint8), name="ct errors", scale=SPACING)
    errors.metadata["attnseg"] = {"role": "errors"}  # Compare's overlay: no training target
    sw = ScribbleWidget(viewer)  # makes "ct [scribbles]" as the user's button does
    sw.image_combo.value = viewer.layers["ct"]
    sw.form.update_on_stroke.value = False  # strokes only: no correction of a result layer
    scr = sw.scribbles_layer(create=True)
    fw = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(fw)
    fw.labels_combo.setCurrentText(scr.name)
    return viewer, fw, scr, np.asarray(gt.data)


def _stroke(mask2d, n=12):
    """Up to ``n`` pixels of a horizontal stroke through the middle row of ``mask2d``, eroded so
    the stroke stays inside."""
    inner = ndi.binary_erosion(mask2d, iterations=1) if ndi.binary_erosion(mask2d).any() else mask2d
    rows = np.flatnonzero(inner.any(axis=1))
    r = rows[len(rows) // 2]
    cols = np.flatnonzero(inner[r])[:n]
    return np.full(cols.size, r), cols


def _draw(layer, z, rows, cols, value):
    """A stroke as napari's brush records it (undo history + paint event)."""
    layer.data_setitem((np.full(rows.size, z), rows, cols), value)


def _settle(qtbot):
    """Let the widget count the strokes (it does so on the next turn of the event loop)."""
    qtbot.wait(20)


def _scribble(scr, gt):
    """Organ strokes on 2, 3, 4, a lesion stroke on 3, background strokes on 2, 4 and 6 (slice 6
    background only). Returns the expected layer values, computed here independently."""
    expected = np.zeros(SHAPE, np.uint8)
    strokes = [(z, gt[z] == 1, 1) for z in (2, 3, 4)] + [(3, gt[3] == 2, 2)]
    for z in (2, 4, 6):
        bg = np.zeros(SHAPE[1:], bool)
        bg[3, 4:20] = True
        strokes.append((z, bg & (gt[z] == 0), BG))
    for z, region, value in strokes:
        rows, cols = _stroke(region)
        _draw(scr, z, rows, cols, value)
        expected[z, rows, cols] = value
    return expected


def test_picker_lists_targets_by_role_and_states_the_mode(scene):
    viewer, w, scr, gt = scene
    items = [w.labels_combo.itemText(i) for i in range(w.labels_combo.count())]
    assert items == ["ct corrected", "ct [scribbles]"], items
    assert w.mode == "scribbles" and w.mode_label.text().startswith("Mode: scribbles")
    assert w.image_combo.currentText() == "ct"
    assert not w.mark_button.isEnabled(), "scribbled slices are reviewed by themselves"
    w.labels_combo.setCurrentText("ct corrected")
    assert w.mode == "corrected labels" and w.mode_label.text().startswith("Mode: corrected labels")
    assert w.mark_button.isEnabled()


def test_run_disabled_with_the_reason_until_scribbles_can_train(scene, qtbot):
    viewer, w, scr, gt = scene
    assert not w.train_button.isEnabled()
    assert "holds no scribbles" in w.info_label.text(), w.info_label.text()
    assert w.reviewed_label.text() == "Reviewed slices: 0 of 8 (slices with a scribble)"
    rows, cols = _stroke(gt[3] == 0)
    _draw(scr, 3, rows, cols, BG)
    _settle(qtbot)
    assert not w.train_button.isEnabled() and "only background strokes" in w.info_label.text()
    rows, cols = _stroke(gt[3] == 1)
    _draw(scr, 3, rows, cols, 1)
    _settle(qtbot)
    assert not w.train_button.isEnabled() and "scribbled on 1 slice only" in w.info_label.text()
    rows, cols = _stroke(gt[4] == 1)
    _draw(scr, 4, rows, cols, 1)
    _settle(qtbot)
    assert w.train_button.isEnabled(), w.info_label.text()
    assert "Cannot train" not in w.info_label.text()
    scr.data = np.zeros(SHAPE, np.uint8)  # cleared (a data event, no paint event)
    _settle(qtbot)
    assert not w.train_button.isEnabled() and "holds no scribbles" in w.info_label.text()


def test_info_line_counts_strokes_per_class(scene, qtbot):
    viewer, w, scr, gt = scene
    expected = _scribble(scr, gt)
    _settle(qtbot)
    text = w.info_label.text()
    for value, name in ((1, "1 (organ)"), (2, "2 (lesion)"), (BG, "background")):
        hit = expected == value
        n_vox, n_sl = int(hit.sum()), int(hit.any(axis=(1, 2)).sum())
        assert f"{name}: {n_vox} voxels on {n_sl} slice{'s' if n_sl != 1 else ''}" in text, text
    assert "Scribbled 4 of 8 slices" in text
    assert w.reviewed_label.text() == "Reviewed slices: 4 of 8 (slices with a scribble)"
    assert [w.reviewed_list.item(i).text() for i in range(w.reviewed_list.count())] == \
        ["slice 2", "slice 3", "slice 4", "slice 6"]
    # a 2D model runs the scribble fine-tune core: its caveat is stated before the run
    assert core_caveat() in text, text


def test_pairs_of_both_kinds_are_refused(scene, qtbot):
    viewer, w, scr, gt = scene
    _scribble(scr, gt)
    _settle(qtbot)
    lab = viewer.layers["ct corrected"]
    idx = np.nonzero(gt[3] == 1)
    lab.data_setitem((np.full(idx[0].size, 3), *idx), 1)
    w.add_pair_button.click()
    w.labels_combo.setCurrentText("ct corrected")
    w.add_pair_button.click()
    assert len(w.pairs) == 2
    assert not w.train_button.isEnabled() and "mix corrected labels and scribbles" in w.info_label.text()


@pytest.mark.parametrize("tiny_registry", [3], indirect=True)
def test_finetune_receives_the_ignore_target_and_activates_nothing(scene, qtbot, monkeypatch):
    pytest.importorskip("napari_attnseg.training.finetune")
    import napari_attnseg.training.finetune as core
    from napari_attnseg.training.dataset import reviewed_slices

    viewer, w, scr, gt = scene
    expected = _scribble(scr, gt)
    _settle(qtbot)
    assert w.train_button.isEnabled(), w.info_label.text()
    drawn = expected != 0
    seen = {}
    real = core.finetune_job

    def spy(base, pairs, config=None, *args, **kwargs):
        seen.update(pairs=list(pairs), config=config)
        return real(base, pairs, config, *args, **kwargs)

    monkeypatch.setattr(core, "finetune_job", spy)
    w.train_overrides = dict(FAST, patch_size=(8, 32, 32))
    runner = w.make_runner()
    assert runner is not None and w.last_request.mode == "scribbles"
    result = runner.run_sync()
    assert runner.error is None, runner.error
    (pair,) = seen["pairs"]
    # the target: strokes train with their class, every other voxel is ignored by the loss
    np.testing.assert_array_equal(np.asarray(pair.reviewed), drawn)
    labels = np.asarray(pair.labels.data)
    want = np.where(expected == BG, 0, expected)
    np.testing.assert_array_equal(labels[drawn], want[drawn])
    assert not labels[~drawn].any()
    assert reviewed_slices(pair) == [2, 3, 4, 6]
    assert seen["config"].dice_weight == 0.0 and seen["config"].pairwise_weight > 0
    # one held-out slice: whatever the Dice did, the base stays active, and the line says why
    assert result.val_slices == 1
    assert ModelRegistry().active("tiny").version == "1"
    text = w.result_label.text()
    assert "Caveat: validated on 1 scribbled slice only" in text, text
    assert "(their strokes only)" in text
    assert (result.entry is None) == ("nothing saved" in text)
    np.testing.assert_array_equal(scr.data, expected)  # the user's strokes untouched
    assert w.train_button.isEnabled()


def test_held_out_rule_matches_the_core():
    core = pytest.importorskip("napari_attnseg.training.finetune")
    from napari_attnseg.widgets._finetune_request import TWO_VAL_FROM, held_out_slices

    assert TWO_VAL_FROM == core.TWO_VAL_FROM
    assert [held_out_slices(n) for n in (2, 3, 4, 5, 10, 20)] == [1, 1, 1, 2, 2, 4]


def test_resegment_keeps_every_stroke():
    from napari_attnseg.widgets._finetune_results import resegmented

    pred = np.ones((2, 4, 4), np.int64)
    user = np.zeros((2, 4, 4), np.uint8)
    user[0, 0, :2] = BG
    user[1, 2, 2] = 2
    out = resegmented(pred, user, None, "scribbles")
    want = np.ones((2, 4, 4), np.uint8)
    want[0, 0, :2] = 0
    want[1, 2, 2] = 2
    np.testing.assert_array_equal(out, want)
