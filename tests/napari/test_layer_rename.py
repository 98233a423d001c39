"""Renaming a layer in the viewer: every widget's pickers show the new name and keep the chosen
layer, whether the widget is docked (napari calls ``reset_choices``) or made by a script
(:func:`napari_attnseg.widgets._layers.follow_layers`)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_attnseg.widgets.baselines import BaselinesWidget
from napari_attnseg.widgets.compare import CompareWidget
from napari_attnseg.widgets.finetune import FinetuneWidget
from napari_attnseg.widgets.refine import RefineWidget
from napari_attnseg.widgets.scribble import ScribbleWidget
from napari_attnseg.widgets.segment import SegmentWidget


def _items(combo) -> list[str]:
    return [combo.itemText(i) for i in range(combo.count())]


def _viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    viewer.add_image(rng.normal(size=(4, 24, 24)).astype(np.float32), name="ct")
    viewer.add_image(rng.normal(size=(4, 24, 24)).astype(np.float32), name="mr")
    viewer.add_labels(np.zeros((4, 24, 24), np.uint8), name="truth")
    return viewer


@pytest.mark.parametrize("docked", [False, True])
def test_segment_picker_follows_a_rename_and_keeps_the_modality_set(make_napari_viewer, qtbot,
                                                                    docked):
    viewer = _viewer(make_napari_viewer)
    w = SegmentWidget(viewer)
    if docked:
        viewer.window.add_dock_widget(w)
    else:
        qtbot.addWidget(w)
    w.image_combo.setCurrentText("mr")
    w.set_modality("US")
    viewer.layers["mr"].name = "patient 7 cine"
    assert _items(w.image_combo) == ["ct", "patient 7 cine"]
    assert w.image_combo.currentText() == "patient 7 cine"
    assert w.image_layer() is viewer.layers["patient 7 cine"]
    assert w.image_facts().modality == "US"  # the choice made here went with the layer
    viewer.layers["ct"].name = "ct renamed"  # another layer: the choice stays
    assert w.image_layer() is viewer.layers["patient 7 cine"]
    assert _items(w.image_combo) == ["ct renamed", "patient 7 cine"]


@pytest.mark.parametrize("make, combo", [
    (RefineWidget, lambda w: w.image_combo),
    (BaselinesWidget, lambda w: w.image_combo),
    (ScribbleWidget, lambda w: w.image_combo.native),
    (FinetuneWidget, lambda w: w.image_combo),
])
def test_image_pickers_show_the_new_name(make_napari_viewer, qtbot, make, combo):
    viewer = _viewer(make_napari_viewer)
    w = make(viewer)
    qtbot.addWidget(getattr(w, "native", w))
    combo(w).setCurrentText("mr")
    changes = []
    picker = w.image_combo if make is ScribbleWidget else w.image
    picker.changed.connect(changes.append)
    viewer.layers["mr"].name = "mr t2"
    assert "mr t2" in _items(combo(w)) and "mr" not in _items(combo(w))
    assert combo(w).currentText() == "mr t2"
    assert changes == []  # the same layer: no "changed" (Refine would re-apply a CRF preset)
    viewer.layers.remove("mr t2")  # gone: the picker moves on and says so
    assert [ly.name for ly in changes] == ["ct"]


def test_compare_truth_picker_shows_the_new_name(make_napari_viewer, qtbot):
    viewer = _viewer(make_napari_viewer)
    w = CompareWidget(viewer)
    qtbot.addWidget(w.native)
    assert w.gt_combo.currentText() == "truth"
    viewer.layers["truth"].name = "expert mask"
    assert _items(w.gt_combo) == ["expert mask"]
    assert w.ground_truth.value is viewer.layers["expert mask"]


def test_finetune_pairs_follow_their_layers_renames(make_napari_viewer, qtbot):
    viewer = _viewer(make_napari_viewer)
    w = FinetuneWidget(viewer)
    qtbot.addWidget(w)
    w.image_combo.setCurrentText("mr")
    w.labels_combo.setCurrentText("truth")
    w.add_pair_button.click()
    assert w.pairs == [("mr", "truth")]
    viewer.layers["truth"].name = "mr corrected"
    viewer.layers["mr"].name = "mr t2"
    assert w.pairs == [("mr t2", "mr corrected")]
    assert w.pairs_list.item(0).text() == "mr t2  ←  mr corrected"
    viewer.layers.remove("mr t2")  # gone: the pair keeps its name and the widget says so
    assert w.pairs == [("mr t2", "mr corrected")]
    assert any("mr t2" in p for p in w.problems())
