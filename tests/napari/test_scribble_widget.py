"""Scribble widget on a real viewer: strokes drawn with the labels layer's own paint method
correct the slice (Dice rises), undo restores it, painted voxels are kept without consent,
neighbouring slices / the volume / fill between slices, and the manifest entry."""

from __future__ import annotations

import numpy as np
import pytest

from napari_attnseg._napari.layers import META_KEY, volume_to_layer_kwargs
from napari_attnseg.interactive.simulate import next_scribble, slice_dice
from napari_attnseg.volume import Volume
from napari_attnseg.widgets.scribble import (
    BACKGROUND_VALUE, FROM_LABELS, SUFFIX, ScribbleWidget, to_core_scribbles,
)

pytest.importorskip("pydensecrf.densecrf")

SHAPE = (7, 96, 96)


def _disk(cy, cx, r):
    yy, xx = np.ogrid[: SHAPE[1], : SHAPE[2]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _scene(viewer, seed=0):
    """Ring (1) around a disk (2); the 'model' calls the right half of the disk ring and adds
    a false ring blob in the background, on every slice."""
    rng = np.random.default_rng(seed)
    gt2 = np.zeros(SHAPE[1:], np.uint8)
    gt2[_disk(48, 40, 26)] = 1
    gt2[_disk(48, 40, 13)] = 2
    wrong2 = gt2.copy()
    wrong2[(gt2 == 2) & (np.arange(SHAPE[2])[None, :] > 40)] = 1
    wrong2[_disk(48, 80, 9) & (gt2 == 0)] = 1
    gt = np.stack([gt2] * SHAPE[0])
    wrong = np.stack([wrong2] * SHAPE[0])
    img = (0.1 + 0.45 * (gt == 1) + 0.9 * (gt == 2) + 0.04 * rng.standard_normal(SHAPE)).astype(np.float32)
    vol = Volume(img, spacing=(5.0, 1.0, 1.0), origin=(3.0, -4.0, 7.0), modality="MR")
    viewer.add_image(vol.data, **volume_to_layer_kwargs(vol, name="scan"))
    kw = volume_to_layer_kwargs(vol.with_data(wrong, is_labels=True), name="scan [attnseg]")
    result = viewer.add_labels(wrong.copy(), **kw)
    viewer.add_labels(gt, name="truth", scale=vol.spacing, translate=vol.origin)
    return gt, wrong, result


@pytest.fixture
def setup(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    gt, wrong, result = _scene(viewer)
    w = ScribbleWidget(viewer)
    viewer.window.add_dock_widget(w)
    return viewer, w, gt, wrong, result


def _stroke(layer, z, points, label):
    """One brush stroke, as napari's mouse drag makes it: paint calls in one history block
    (one ``paint`` event at the end)."""
    layer.selected_label = label
    with layer.block_history():
        for y, x in points:
            layer.paint((z, y, x), label, refresh=False)
    layer.refresh()


def _simulated_stroke(layer, z, result, gt):
    s = next_scribble(np.asarray(result.data[z]), gt[z])
    pts = np.argwhere(s.mask)
    value = BACKGROUND_VALUE if s.label == 0 else s.label
    _stroke(layer, z, [tuple(p) for p in pts[:: max(1, len(pts) // 12)]], value)
    return s


def test_strokes_correct_the_slice_and_undo_restores_it(setup, qtbot):
    viewer, w, gt, wrong, result = setup
    assert w.result_combo.value is result and w.image_combo.value is viewer.layers["scan"]
    assert w.probs_combo.value == FROM_LABELS
    scr = w.scribbles_layer(create=True)
    assert scr.name == "scan" + SUFFIX and scr.metadata[META_KEY]["role"] == "scribbles"
    assert scr.data.shape == SHAPE and viewer.layers.selection.active is scr
    np.testing.assert_allclose(scr.scale, result.scale)
    w.class_combo.value = 2
    assert scr.selected_label == 2 and scr.mode == "paint"
    viewer.dims.set_current_step(0, 3)
    before = slice_dice(result.data[3], gt[3])
    # a stroke of class 2 across the missed half of the disk
    _stroke(scr, 3, [(48, x) for x in range(44, 53, 2)], 2)
    qtbot.waitUntil(lambda: not w.busy, timeout=10000)
    after = slice_dice(result.data[3], gt[3])
    assert after > before + 0.05, (before, after)
    drawn = to_core_scribbles(scr.data[3]) != 255
    assert (result.data[3][drawn] == 2).all()
    np.testing.assert_array_equal(result.data[[0, 1, 2, 4, 5, 6]], wrong[[0, 1, 2, 4, 5, 6]])
    assert 3 in result.metadata[META_KEY]["reviewed"]
    # a second (simulated-user) stroke improves it further, then undo walks back
    after1 = result.data[3].copy()
    _simulated_stroke(scr, 3, result, gt)
    qtbot.waitUntil(lambda: not w.busy, timeout=10000)
    assert slice_dice(result.data[3], gt[3]) > after
    result.undo()
    np.testing.assert_array_equal(result.data[3], after1)
    result.undo()
    np.testing.assert_array_equal(result.data, wrong)


def test_painted_voxels_kept_without_consent(setup, qtbot):
    viewer, w, gt, wrong, result = setup
    scr = w.scribbles_layer(create=True)
    result.brush_size = 3
    result.paint((3, 10, 20), 2)  # the user paints class 2 into the background by hand
    painted = w.painted(result)
    assert painted[3, 10, 20] and painted.sum() >= 5
    _stroke(scr, 3, [(10, x) for x in range(12, 30, 2)], BACKGROUND_VALUE)  # a background stroke over it
    qtbot.waitUntil(lambda: not w.busy, timeout=10000)
    assert (result.data[painted] == 2).all()  # kept
    w.form.overwrite_painted.value = True
    w.correct(3, sync=True)
    assert (result.data[3, 10, 12:30] == 0).all()  # consent given: the stroke wins


def test_apply_to_neighbours_volume_and_undo(setup, qtbot):
    viewer, w, gt, wrong, result = setup
    scr = w.scribbles_layer(create=True)
    viewer.dims.set_current_step(0, 3)
    for _ in range(3):
        if next_scribble(np.asarray(result.data[3]), gt[3]) is None:
            break
        _simulated_stroke(scr, 3, result, gt)
        qtbot.waitUntil(lambda: not w.busy, timeout=10000)
    assert slice_dice(result.data[3], gt[3]) > 0.9
    reviewed = list(result.metadata[META_KEY]["reviewed"])
    snapshot = result.data.copy()
    w.apply_neighbours(sync=True)
    for z in (1, 2, 4, 5):
        assert slice_dice(result.data[z], gt[z]) > slice_dice(wrong[z], gt[z]) + 0.05, z
    np.testing.assert_array_equal(result.data[[0, 6]], wrong[[0, 6]])
    assert list(result.metadata[META_KEY]["reviewed"]) == reviewed  # carried, not reviewed
    result.undo()
    np.testing.assert_array_equal(result.data, snapshot)
    # the whole volume, in a real worker thread
    w.apply_volume()
    qtbot.waitUntil(lambda: not w.busy, timeout=20000)
    qtbot.waitUntil(lambda: "volume" in w.info.value, timeout=5000)
    for z in (0, 6):
        assert slice_dice(result.data[z], gt[z]) > slice_dice(wrong[z], gt[z]) + 0.05, z


def test_fill_between_reviewed_slices(setup, qtbot):
    from napari_attnseg.widgets._review import ReviewTracker

    viewer, w, gt, wrong, result = setup
    w.scribbles_layer(create=True)
    data = np.zeros(SHAPE, np.uint8)
    data[1] = gt[1]
    data[5] = gt[5]
    result.data = data
    ReviewTracker.for_layer(result, viewer).mark(1, 5)
    w.fill_between(sync=True)
    for z in (2, 3, 4):
        assert slice_dice(result.data[z], gt[z]) > 0.95, z
    assert not result.data[[0, 6]].any()
    assert result.metadata[META_KEY]["reviewed"] == [1, 5]
    result.undo()
    assert not result.data[2:5].any()


def test_manifest_opens_the_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    _scene(viewer)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-attnseg", "Correct with scribbles")
    assert isinstance(widget, ScribbleWidget)
    assert widget.result_combo.value is viewer.layers["scan [attnseg]"]


def test_pickers_and_parameters_line_up(setup, qtbot):
    """Issue 11 (found in the README's screenshot): the pickers and the ScribbleConfig fields are
    rows of one container (no nested, indented form), and once shown in the dock every field
    with a label starts at the same x; the fields still read back into a ScribbleConfig."""
    from napari_attnseg.widgets.scribble import ScribbleConfig

    viewer, w, *_ = setup
    w.native.show()
    qtbot.waitExposed(w.native)
    rows = [x for x in w if type(x).__name__ not in ("PushButton", "Label", "CheckBox")]
    assert {x.name for x in w.form} <= {x.name for x in w}  # the fields are this container's
    xs = {x.native.mapTo(w.native, x.native.rect().topLeft()).x() for x in rows}
    assert len(xs) == 1, xs
    w.form.neighbours.value = 4
    assert w.config() == ScribbleConfig(neighbours=4)
