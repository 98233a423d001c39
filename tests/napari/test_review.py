"""ReviewTracker: edits mark slices reviewed, by hand or shortcut, persisted in layer metadata."""

from __future__ import annotations

import numpy as np
import pytest

from napari_attnseg.widgets._review import ReviewTracker


@pytest.fixture
def labels_layer(make_napari_viewer):
    viewer = make_napari_viewer()
    layer = viewer.add_labels(np.zeros((6, 32, 32), np.uint8), name="seg", scale=(3.0, 1.0, 1.0))
    return viewer, layer


def test_paint_marks_edited_slice(labels_layer):
    viewer, layer = labels_layer
    tracker = ReviewTracker.for_layer(layer, viewer)
    assert tracker.reviewed_slices() == [] and not tracker.edited
    seen = []
    tracker.connect(lambda t: seen.append(t.reviewed_slices()))
    layer.brush_size = 3
    layer.paint((4, 10, 10), 1)
    assert layer.data[4].any() and not layer.data[:4].any()
    assert tracker.reviewed_slices() == [4]
    assert layer.metadata["attnseg"]["reviewed"] == [4]
    assert layer.metadata["attnseg"]["edited"] is True
    np.testing.assert_array_equal(tracker.reviewed_mask(), [0, 0, 0, 0, 1, 0])
    # fill on another slice and a data_setitem edit also count
    layer.fill((1, 0, 0), 2)
    layer.data_setitem((np.array([2, 2]), np.array([3, 4]), np.array([5, 5])), 1)
    assert tracker.reviewed_slices() == [1, 2, 4]
    assert seen[-1] == [1, 2, 4]
    # same tracker returned again; a new tracker reads the persisted set back
    assert ReviewTracker.for_layer(layer) is tracker
    tracker.detach()
    again = ReviewTracker.for_layer(layer, viewer)
    assert again is not tracker and again.reviewed_slices() == [1, 2, 4]


def test_mark_unmark_current_and_shortcut(labels_layer):
    viewer, layer = labels_layer
    tracker = ReviewTracker.for_layer(layer, viewer)
    tracker.mark(0, 5)
    tracker.unmark(0)
    assert tracker.reviewed_slices() == [5]
    with pytest.raises(ValueError, match="outside"):
        tracker.mark(6)
    viewer.dims.set_current_step(0, 3)
    assert tracker.current_slice() == 3
    assert tracker.mark_current() == 3
    assert layer.metadata["attnseg"]["reviewed"] == [3, 5]
    # marking by hand is not an edit
    assert tracker.edited is False
    # the Shift-R shortcut is bound on the layer's own keymap and marks the shown slice
    viewer.dims.set_current_step(0, 1)
    bound = [f for k, f in layer.keymap.items() if "R" in str(k) and "Shift" in str(k)]
    assert len(bound) == 1
    bound[0](layer)
    assert tracker.reviewed_slices() == [1, 3, 5]
    tracker.clear()
    assert tracker.reviewed_slices() == [] and layer.metadata["attnseg"]["reviewed"] == []


def test_2d_layer_is_one_slice(make_napari_viewer):
    viewer = make_napari_viewer()
    layer = viewer.add_labels(np.zeros((16, 16), np.uint8))
    tracker = ReviewTracker.for_layer(layer, viewer)
    assert tracker.n_slices == 1
    layer.paint((5, 5), 1)
    assert tracker.reviewed_slices() == [0] and tracker.edited
