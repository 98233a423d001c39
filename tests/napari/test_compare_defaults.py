"""Compare: the ground-truth picker never defaults to a method's own output, follows a real
ground truth when one appears, keeps the user's choice; the error overlay never becomes the
active layer (the brush would paint on it)."""

from __future__ import annotations

import numpy as np

from napari_attnseg._napari.layers import volume_to_layer_kwargs
from napari_attnseg.volume import Volume
from napari_attnseg.widgets.compare import ERRORS_SUFFIX, CompareWidget, is_method_output


def _labels(viewer, name, data, provenance=None):
    vol = Volume(data, (2.0, 0.5, 0.5), is_labels=True)
    return viewer.add_labels(data, **volume_to_layer_kwargs(vol, name=name,
                                                            provenance=provenance))


def test_ground_truth_is_never_a_model_output_and_the_overlay_is_not_active(make_napari_viewer,
                                                                            qtbot):
    viewer = make_napari_viewer()
    gt = np.zeros((4, 16, 16), np.uint8)
    gt[1:3, 4:10, 4:10] = 1
    pred = np.roll(gt, 2, axis=2)
    _labels(viewer, "scan [attnseg]", pred, {"kind": "attnseg prediction", "model_id": "m@1:x"})
    _labels(viewer, "scan [otsu]", pred, {"baseline": "otsu"})
    w = CompareWidget(viewer)
    qtbot.addWidget(w.native)
    assert is_method_output(viewer.layers["scan [attnseg]"])
    assert w.gt_combo.currentText() == ""  # only outputs: no default ground truth
    truth = _labels(viewer, "scan mask", gt)
    assert w.gt_combo.currentText() == "scan mask"  # a real ground truth appears: chosen
    _labels(viewer, "scan [attnseg] (new)", pred, {"model_id": "m@2:y"})
    assert w.gt_combo.currentText() == "scan mask"  # still
    # a user's explicit choice is kept, even an output
    idx = w.gt_combo.findText("scan [otsu]")
    w.gt_combo.setCurrentIndex(idx)
    w.gt_combo.activated.emit(idx)
    _labels(viewer, "other mask", gt)
    assert w.gt_combo.currentText() == "scan [otsu]"
    # the error overlay does not take the active layer
    w.gt_combo.setCurrentText("scan mask")
    w.set_candidates(["scan [attnseg]"])
    pred_layer = viewer.layers["scan [attnseg]"]
    viewer.layers.selection.active = pred_layer
    w.make_runner().run_sync()
    assert "scan mask" + ERRORS_SUFFIX in viewer.layers
    assert viewer.layers.selection.active is pred_layer
    assert not truth.metadata["attnseg"].get("role")


def test_head_circumference_is_checked_for_a_fetal_head_image_only(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    head = np.zeros((60, 80), np.uint8)
    head[20:40, 20:60] = 1
    vol = Volume(head, (0.1, 0.1), is_labels=True,
                 header={"format": "image", "anatomy": "fetal head"})
    viewer.add_labels(head, **volume_to_layer_kwargs(vol, name="000_HC_mask"))
    w = CompareWidget(viewer)
    qtbot.addWidget(w.native)
    assert w.gt_combo.currentText() == "000_HC_mask"
    assert w.hc_check.isEnabled() and w.hc_check.isChecked()  # HC18's CSV said fetal head
    _labels(viewer, "ct mask", np.zeros((4, 16, 16), np.uint8))
    w.gt_combo.setCurrentText("ct mask")
    assert not w.hc_check.isEnabled() and not w.hc_check.isChecked()  # 3D: not offered
    w.gt_combo.setCurrentText("000_HC_mask")
    w.hc_check.click()  # the user's choice is kept from now on
    _labels(viewer, "other", np.zeros((4, 16, 16), np.uint8))
    assert not w.hc_check.isChecked()


def test_docked_form_is_built_from_compare_params_and_tracks_the_viewer(make_napari_viewer):
    """As napari docks it: the ground truth follows layer insertions and removals (none when
    only outputs are left), the form reads back as CompareParams into the job's config."""
    from napari_attnseg.widgets._compare_form import HC_TOOLTIP, CompareParams

    viewer = make_napari_viewer()
    w = CompareWidget(viewer)
    viewer.window.add_dock_widget(w, name="Compare")
    gt = np.zeros((4, 16, 16), np.uint8)
    gt[1:3, 4:10, 4:10] = 1
    _labels(viewer, "scan [attnseg]", gt, {"kind": "attnseg prediction", "model_id": "m@1:x"})
    assert w.ground_truth.value is None
    truth = _labels(viewer, "scan mask", gt)
    assert w.ground_truth.value is truth
    assert w.checked_candidates() == [] and w.candidates_list.count() == 1  # the prediction
    viewer.layers.remove(truth)
    assert w.ground_truth.value is None and w.gt_combo.currentText() == ""
    assert w.make_runner() is None and "ground-truth" in w.message.text()
    truth = _labels(viewer, "scan mask", gt)
    assert w.settings() == CompareParams()
    w.form.tolerance_mm.value = 2.5
    w.form.surface.value = False
    w.set_candidates(["scan [attnseg]"])
    cfg = w.snapshot()
    assert cfg.gt_name == "scan mask" and cfg.tolerance_mm == 2.5 and not cfg.surface
    assert [name for name, _ in cfg.candidates] == ["scan [attnseg]"]
    assert cfg.hc_label is None  # HC: 2D only
    assert w.form.hc.tooltip.startswith(HC_TOOLTIP)  # the whole tooltip, then why it is off
    assert not w.form.hc.enabled
