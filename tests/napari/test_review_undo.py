"""Reviewed slices follow napari's undo/redo in a real viewer (mouse strokes through napari's own
brush binding, Ctrl-Z / Ctrl-Shift-Z through its key bindings), the Unmark button and API, and
the sidecar of saved corrected labels: reviewed slices in the file's axis order, the edited
voxels against the model's prediction, the prediction's provenance nested under ``original``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from napari.utils._test_utils import read_only_mouse_event
from napari.utils.interactions import (mouse_move_callbacks, mouse_press_callbacks,
                                       mouse_release_callbacks)
from qtpy.QtCore import Qt

from napari_attnseg import io
from napari_attnseg._napari.layers import META_KEY, derived_layer_kwargs
from napari_attnseg.io.labeltable import read_label_info
from napari_attnseg.widgets._review import ReviewTracker
from napari_attnseg.widgets._segment_results import watch_edits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from _orientation_cases import save  # noqa: E402

PREDICTION = {"kind": "attnseg prediction", "model_id": "tiny@1:0123abcd", "model_name": "tiny",
              "label_names": {"1": "organ"}}


def stroke(layer, points, label=1, brush=3):
    """A brush stroke through napari's mouse binding (press, drags, release) over data points
    of the shown slice: one undoable history item of several atoms."""
    layer.mode = "paint"
    layer.brush_size = brush
    layer.selected_label = label
    world = [tuple(np.asarray(layer.data_to_world(np.asarray(p, float)))) for p in points]
    kinds = ["mouse_press"] + ["mouse_move"] * (len(world) - 1)
    calls = [mouse_press_callbacks] + [mouse_move_callbacks] * (len(world) - 1)
    for kind, call, pos in zip(kinds, calls, world):
        call(layer, read_only_mouse_event(type=kind, is_dragging=kind != "mouse_press",
                                          position=pos, dims_displayed=[1, 2]))
    mouse_release_callbacks(layer, read_only_mouse_event(type="mouse_release", position=world[-1],
                                                         dims_displayed=[1, 2]))


def key(viewer, qtbot, redo=False):
    """Ctrl-Z (or Ctrl-Shift-Z) pressed on the canvas: napari's own Labels key bindings."""
    canvas = viewer.window._qt_viewer.canvas.native
    mods = Qt.ControlModifier | (Qt.ShiftModifier if redo else Qt.NoModifier)
    qtbot.keyClick(canvas, Qt.Key_Z, mods)
    qtbot.wait(10)


@pytest.fixture
def result(make_napari_viewer):
    """A viewer with a model-like result layer (two slices hold a prediction)."""
    viewer = make_napari_viewer(show=True)
    pred = np.zeros((6, 32, 32), np.uint8)
    pred[1:3, 8:20, 8:20] = 1
    layer = viewer.add_labels(pred.copy(), name="scan [attnseg]", scale=(3.0, 1.0, 1.0),
                              metadata={META_KEY: {"provenance": dict(PREDICTION)}})
    viewer.layers.selection.active = layer
    return viewer, layer, pred


def test_stroke_marks_ctrl_z_unmarks_ctrl_shift_z_marks_again(result, qtbot):
    viewer, layer, pred = result
    tracker = ReviewTracker.for_layer(layer, viewer)
    seen = []
    tracker.connect(lambda t: seen.append(t.reviewed_slices()))
    viewer.dims.set_current_step(0, 4)
    stroke(layer, [(4, 5, 5), (4, 5, 15), (4, 12, 25)])
    changed = int(np.count_nonzero(layer.data != pred))
    assert changed > 20 and np.array_equal(np.flatnonzero((layer.data != pred).any((1, 2))), [4])
    assert tracker.reviewed_slices() == [4] and seen[-1] == [4]
    meta = layer.metadata[META_KEY]
    assert meta["reviewed"] == [4] and meta["edited"] is True
    assert meta["edited_voxels"] == changed and "tiny@1" in meta["edit_baseline"]

    key(viewer, qtbot)  # Ctrl-Z: the stroke is gone, and so is the review it made
    assert np.array_equal(layer.data, pred)
    assert seen[-1] == [] and meta["reviewed"] == [] and meta["edited_voxels"] == 0
    assert tracker.reviewed_slices() == []

    key(viewer, qtbot, redo=True)  # Ctrl-Shift-Z
    assert int(np.count_nonzero(layer.data != pred)) == changed
    assert seen[-1] == [4] and meta["reviewed"] == [4] and meta["edited_voxels"] == changed


def test_undo_unmarks_only_what_the_edit_marked(result):
    viewer, layer, pred = result
    tracker = ReviewTracker.for_layer(layer, viewer)
    layer.paint((2, 10, 10), 2)      # marks 2
    layer.paint((2, 20, 20), 2)      # 2 was reviewed already
    layer.fill((5, 0, 0), 3)         # marks 5
    assert tracker.reviewed_slices() == [2, 5]
    # napari emits paint before writing outside a stroke: the count comes from the atoms
    assert tracker.edited_voxels == int(np.count_nonzero(layer.data != pred)) > 32 * 32
    layer.data_setitem((np.array([3, 3]), np.array([1, 2]), np.array([1, 1])), 4)  # marks 3
    assert tracker.reviewed_slices() == [2, 3, 5]
    assert tracker.edited_voxels == int(np.count_nonzero(layer.data != pred))
    layer.undo()
    assert tracker.reviewed_slices() == [2, 5]
    layer.undo()
    assert tracker.reviewed_slices() == [2]
    layer.undo()
    assert tracker.reviewed_slices() == [2], "the first stroke on slice 2 still stands"
    layer.undo()
    assert tracker.reviewed_slices() == [] and np.array_equal(layer.data, pred)
    assert tracker.edited_voxels == 0
    for _ in range(4):
        layer.redo()
    assert tracker.reviewed_slices() == [2, 3, 5]
    assert tracker.edited_voxels == int(np.count_nonzero(layer.data != pred))
    # an undone edit whose redo a new edit discards stays unmarked for good
    layer.undo()
    layer.paint((0, 3, 3), 1)
    layer.redo()  # nothing to redo
    assert tracker.reviewed_slices() == [0, 2, 5]
    # undo on a hidden layer emits no event: reading the set follows it anyway
    layer.visible = False
    layer.undo()
    assert tracker.reviewed_slices() == [2, 5]


def test_2d_layer_undo_and_redo(make_napari_viewer):
    viewer = make_napari_viewer()
    layer = viewer.add_labels(np.zeros((24, 24), np.uint8))
    tracker = ReviewTracker.for_layer(layer, viewer)
    layer.paint((5, 5), 2)
    assert tracker.reviewed_slices() == [0] and tracker.edited_voxels == int((layer.data > 0).sum())
    layer.undo()
    assert tracker.reviewed_slices() == [] and tracker.edited_voxels == 0
    layer.redo()
    assert tracker.reviewed_slices() == [0] and tracker.edited_voxels > 0


def test_unmark_by_hand_wins_over_undo_and_redo(result, qtbot):
    viewer, layer, pred = result
    tracker = ReviewTracker.for_layer(layer, viewer)
    layer.paint((4, 10, 10), 1)
    viewer.dims.set_current_step(0, 4)
    assert tracker.unmark_current() == 4 and tracker.reviewed_slices() == []
    layer.undo()
    layer.redo()
    assert tracker.reviewed_slices() == [], "the user unmarked it; redo does not mark it again"
    # a slice marked by hand while its edit is undone stays marked when the edit is undone again
    layer.paint((1, 3, 3), 2)
    layer.undo()
    tracker.mark(1)
    layer.redo()
    layer.undo()
    assert tracker.reviewed_slices() == [1]


def test_finetune_unmark_button(result):
    pytest.importorskip("torch")
    from napari_attnseg.widgets.finetune import FinetuneWidget

    viewer, layer, pred = result
    viewer.add_image(np.zeros(layer.data.shape, np.float32), name="scan", scale=(3.0, 1.0, 1.0))
    w = FinetuneWidget(viewer)
    w.labels_combo.setCurrentText(layer.name)
    assert w.tracker is not None and w.tracker.layer is layer
    assert w.unmark_button.isEnabled() and w.unmark_button.text() == "Unmark slice"
    layer.paint((3, 10, 10), 1)
    layer.paint((5, 10, 10), 1)
    assert w.reviewed_list.count() == 2
    viewer.dims.set_current_step(0, 3)
    w.unmark_button.click()
    assert w.tracker.reviewed_slices() == [5] and w.reviewed_list.count() == 1
    assert w.reviewed_label.text().startswith("Reviewed slices: 1 of 6")
    layer.undo()  # the edit on slice 5
    assert w.reviewed_list.count() == 0 and w.reviewed_label.text().startswith("Reviewed slices: 0")


def test_segment_result_is_tracked_from_its_first_stroke(result):
    viewer, layer, pred = result
    watch_edits(layer)  # what the Segment widget does with a new result layer
    layer.paint((2, 10, 10), 0)  # erase part of the prediction
    assert layer.metadata[META_KEY]["reviewed"] == [2]
    assert layer.metadata[META_KEY]["edited_voxels"] == int(np.count_nonzero(layer.data != pred))
    layer.undo()
    assert ReviewTracker.for_layer(layer).reviewed_slices() == []


def test_saved_corrected_labels_sidecar(tmp_path, make_napari_viewer):
    """A scan stored PSR (layer axis 0 = S is the file's j axis): the sidecar's slices index
    the saved file's axes, its voxel count matches the file against the prediction."""
    src = tmp_path / "psr.nii.gz"
    data_ijk, _, _ = save(src, "PSR")
    viewer = make_napari_viewer(show=True)
    (img,) = viewer.open(str(src), plugin="napari-attnseg")
    pred = (np.asarray(img.data) >= 5000.0).astype(np.uint8)
    layer = viewer.add_labels(pred.copy(), **derived_layer_kwargs(img, "psr [attnseg]",
                                                                  provenance=PREDICTION))
    watch_edits(layer)
    # an unedited prediction keeps the prediction's sidecar
    layer.save(str(tmp_path / "pred.nii.gz"), plugin="napari-attnseg")
    plain = json.loads((tmp_path / "pred.json").read_text())
    assert plain["provenance"]["kind"] == "attnseg prediction" and "correction" not in plain["provenance"]

    z = int(np.flatnonzero(pred.any((1, 2)))[0]) - 1  # a slice next to the organ
    viewer.dims.set_current_step(0, z)
    stroke(layer, [(z, 10, 10), (z, 10, 20), (z, 16, 25)], brush=4)
    layer.paint((z + 1, 0, 0), 1)  # an edit on a second slice, then undone
    layer.undo()
    ReviewTracker.for_layer(layer).mark(z + 3)  # a slice the user found right as it was
    out = tmp_path / "saved" / "corrected.nii.gz"
    out.parent.mkdir()
    layer.save(str(out), plugin="napari-attnseg")

    side = json.loads(out.with_name("corrected.json").read_text())
    prov = side["provenance"]
    assert prov["kind"] == "attnseg corrected labels" and prov["edited_by_user"] is True
    corr = prov["correction"]
    assert corr["reviewed_slices"] == [z, z + 3]
    assert corr["slice_axis"] == 1 and corr["nifti_voxel_axis"] == "j"
    assert corr["n_slices"] == pred.shape[0]
    assert prov["original"]["kind"] == "attnseg prediction"
    assert prov["original"]["model_id"] == PREDICTION["model_id"]
    assert "model_id" not in prov and prov["model_name"] == "tiny"
    # the file against the prediction: what changed is on slice z of the sidecar's axis only
    saved_ijk = np.asarray(nib.load(str(out)).dataobj)
    diff = saved_ijk != (data_ijk >= 5000.0)
    assert np.array_equal(np.flatnonzero(diff.any(axis=(0, 2))), [z])  # NIfTI j
    back = io.read_volume(out).data  # what napari-attnseg reads: (z, y, x) = (k, j, i)
    orig = np.asarray(io.read_volume(tmp_path / "pred.nii.gz").data)
    others = tuple(a for a in range(3) if a != corr["slice_axis"])
    assert np.array_equal(np.flatnonzero((np.asarray(back) != orig).any(axis=others)), [z])
    assert corr["edited_voxels"] == int(diff.sum()) > 20
    assert "tiny@1" in corr["compared_with"]
    # the readers still find the names in the sidecar
    assert read_label_info(out)["label_names"] == {"1": "organ"}
