"""Refine widget: worker body run synchronously, one real-thread run, geometry, in-place re-run."""

from __future__ import annotations

import numpy as np
import pytest

from napari_attnseg._napari.layers import META_KEY, volume_to_layer_kwargs
from napari_attnseg.volume import Volume
from napari_attnseg.widgets.refine import PREVIEW_SUFFIX, SUFFIX, RefineWidget, \
    labels_to_probabilities

pytest.importorskip("pydensecrf.densecrf")


def _scene(viewer, shape=(6, 40, 40), seed=0):
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    gt = ((y - 20) ** 2 + (x - 20) ** 2 <= 100).astype(np.uint8)
    img = gt * 100.0 + rng.normal(0, 40, shape)
    fg = np.clip(0.5 + 0.3 * (2 * gt - 1) + rng.normal(0, 0.3, shape), 0.01, 0.99)
    vol = Volume(img.astype(np.float32), spacing=(3.0, 0.8, 0.8), origin=(10.0, -5.0, 2.0),
                 modality="MR")
    viewer.add_image(vol.data, **volume_to_layer_kwargs(vol, name="scan"))
    probs = np.stack([1 - fg, fg]).astype(np.float32)
    viewer.add_image(probs, name="scan [attnseg] probabilities", scale=(1.0,) + vol.spacing,
                     translate=(0.0,) + vol.origin)
    viewer.add_labels((fg > 0.5).astype(np.uint8), name="scan [attnseg]", scale=vol.spacing,
                      translate=vol.origin)
    viewer.add_labels(gt, name="truth", scale=vol.spacing, translate=vol.origin)
    return gt, fg


def _widget(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    gt, fg = _scene(viewer)
    w = RefineWidget(viewer)
    qtbot.addWidget(w.native)
    return viewer, w, gt, fg


def test_defaults_and_choices(make_napari_viewer, qtbot):
    from napari_attnseg.crf import default_params

    viewer, w, gt, fg = _widget(make_napari_viewer, qtbot)
    assert w.source.value is viewer.layers["scan [attnseg] probabilities"]
    assert w.image.value is viewer.layers["scan"]
    mr = default_params("MR")
    assert w.form.sxy_bilateral_mm.value == pytest.approx(mr.sxy_bilateral_mm)
    assert w.params().srgb_bilateral == pytest.approx(mr.srgb_bilateral)
    assert w.params().srgb_bilateral != pytest.approx(default_params("").srgb_bilateral)


def test_refine_sync_geometry_provenance_and_rerun_in_place(make_napari_viewer, qtbot):
    viewer, w, gt, fg = _widget(make_napari_viewer, qtbot)
    w.form.mode.value = "2d"
    res = w.refine_volume(sync=True)
    out = viewer.layers["scan" + SUFFIX]
    src = viewer.layers["scan"]
    assert out.data.shape == src.data.shape
    np.testing.assert_allclose(out.scale, src.scale)
    np.testing.assert_allclose(out.translate, src.translate)
    np.testing.assert_array_equal(out.data, res.labels)
    prov = out.metadata[META_KEY]["provenance"]["crf"]
    assert prov["params"]["mode"] == "2d" and prov["n_changed"] == res.n_changed
    assert str(res.n_changed) in w.status.text()
    n_layers = len(viewer.layers)
    w.form.iterations.value = 2
    w.refine_volume(sync=True)
    assert len(viewer.layers) == n_layers
    assert viewer.layers["scan" + SUFFIX].metadata[META_KEY]["provenance"]["crf"]["params"][
        "iterations"] == 2


def test_labels_input_and_preview(make_napari_viewer, qtbot):
    viewer, w, gt, fg = _widget(make_napari_viewer, qtbot)
    w.source.value = viewer.layers["scan [attnseg]"]
    viewer.dims.set_current_step(viewer.dims.ndim - 3, 3)  # z (a 4D probs layer adds C)
    w.preview(sync=True)
    prev = viewer.layers["scan" + PREVIEW_SUFFIX]
    assert prev.data.shape == viewer.layers["scan"].data.shape
    assert prev.data[3].any() and not prev.data[0].any() and not prev.data[4].any()
    np.testing.assert_allclose(prev.scale, viewer.layers["scan"].scale)
    p = labels_to_probabilities(np.array([[0, 1], [2, 1]]), 0.8)
    assert p.shape == (3, 2, 2)
    np.testing.assert_allclose(p.sum(0), 1, atol=1e-6)
    assert p[2, 1, 0] == pytest.approx(0.8) and p[0, 1, 0] == pytest.approx(0.1)


def test_autotune_sync_sets_best_parameters(make_napari_viewer, qtbot, monkeypatch):
    import importlib

    at = importlib.import_module("napari_attnseg.crf.autotune")

    viewer, w, gt, fg = _widget(make_napari_viewer, qtbot)
    monkeypatch.setattr(at, "default_grid", lambda base: {"bilateral_weight": [1.0, 8.0]})
    w.form.mode.value = "2d"
    w.ground_truth.value = viewer.layers["truth"]
    res = w.autotune(sync=True)
    assert len(res.trials) == 3
    assert w.form.bilateral_weight.value == pytest.approx(res.best_params.bilateral_weight)
    assert "Auto-tune" in w.status.text()


def test_missing_inputs_are_reported_not_raised(make_napari_viewer, qtbot, monkeypatch):
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    viewer = make_napari_viewer()
    w = RefineWidget(viewer)
    qtbot.addWidget(w.native)
    assert w.refine_volume(sync=True) is None
    assert shown and "Choose" in shown[0]


def test_real_thread_run_does_not_block(make_napari_viewer, qtbot):
    viewer, w, gt, fg = _widget(make_napari_viewer, qtbot)
    w.form.mode.value = "3d"
    worker = w.refine_volume()
    assert worker is not None
    qtbot.waitUntil(lambda: ("scan" + SUFFIX) in viewer.layers, timeout=30000)
    qtbot.waitUntil(lambda: not w.runner.running, timeout=30000)
    out = viewer.layers["scan" + SUFFIX]
    assert out.data.shape == viewer.layers["scan"].data.shape
    assert w.last_result.params.mode == "3d"


def test_new_segmentation_probabilities_are_preselected_and_results_shown_once(
        make_napari_viewer, qtbot):
    viewer, w, gt, fg = _widget(make_napari_viewer, qtbot)
    w.source.value = viewer.layers["truth"]  # the user's earlier choice
    viewer.layers["truth"].name = "truth"  # a refresh keeps the choice
    assert w.source.value is viewer.layers["truth"]
    viewer.add_image(fg.astype(np.float32), name="other [attnseg] probabilities")
    assert w.source.value is viewer.layers["other [attnseg] probabilities"]
    viewer.add_labels(gt, name="more")  # other insertions keep the choice
    assert w.source.value is viewer.layers["other [attnseg] probabilities"]
    # one status line: progress and result messages share it
    assert w.status is w.progress.status
    w.source.value = viewer.layers["scan [attnseg] probabilities"]
    w.form.mode.value = "2d"
    w.refine_volume(sync=True)
    assert w.progress.status.text().startswith("CRF changed")
    texts = [lbl.text() for lbl in w.native.findChildren(type(w.status)) if lbl.text()]
    assert sum("CRF changed" in t for t in texts) == 1


def test_refined_layer_keeps_the_source_label_names(make_napari_viewer, qtbot):
    """The CRF result carries the class names of what it refined, so Compare can name them."""
    from napari_attnseg._napari.layers import layer_label_names

    viewer, w, gt, fg = _widget(make_napari_viewer, qtbot)
    viewer.layers["scan [attnseg] probabilities"].metadata[META_KEY] = {
        "provenance": {"label_names": {"0": "background", "1": "tumour"}}}
    w.source.value = viewer.layers["scan [attnseg] probabilities"]
    w.image.value = viewer.layers["scan"]
    w.form.mode.value = "2d"
    w.refine_volume(sync=True)
    refined = viewer.layers["scan" + SUFFIX]
    assert layer_label_names(refined) == {0: "background", 1: "tumour"}
    w.preview(sync=True)
    assert layer_label_names(viewer.layers["scan" + PREVIEW_SUFFIX])[1] == "tumour"
    # a source without names adds none
    w.source.value = viewer.layers["truth"]
    w.refine_volume(sync=True)
    assert layer_label_names(viewer.layers["scan" + SUFFIX]) == {}


def test_docked_pickers_track_roles_and_ground_truth_never_defaults_to_an_output(
        make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    w = RefineWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.source.value is None and w.image.value is None and w.ground_truth.value is None
    assert not w.refine_button.enabled and not w.autotune_button.enabled
    assert "Choose" in w.info.value
    gt, fg = _scene(viewer)
    assert w.refine_button.enabled and w.preview_button.enabled and w.info.value == ""
    # a prediction with a plain name is known by its role; "scan [attnseg]" by its name
    pred = viewer.add_labels(gt, name="model output",
                             metadata={META_KEY: {"role": "prediction"}})
    assert w.ground_truth.value is viewer.layers["truth"]
    assert pred not in w.ground_truth.choices and viewer.layers["scan [attnseg]"] not in \
        w.ground_truth.choices
    assert w.autotune_button.enabled
    w.form.mode.value = "2d"
    w.refine_volume(sync=True)
    out = viewer.layers["scan" + SUFFIX]
    assert out.metadata[META_KEY]["role"] == "crf"
    assert out not in w.ground_truth.choices and out not in w.source.choices
    viewer.layers.remove("truth")
    assert w.ground_truth.value is None and not w.autotune_button.enabled
    assert w.refine_button.enabled  # refining needs no ground truth
    viewer.layers.remove("scan")
    assert w.image.value is None and not w.refine_button.enabled


def test_form_is_built_from_the_params_dataclass_and_resets_to_the_modality_preset(
        make_napari_viewer, qtbot):
    from napari_attnseg.crf import CRFParams, default_params
    from napari_attnseg.widgets.refine import RefineParams

    # the dataclass defaults are the core defaults; band 0 means "off"
    assert RefineParams().as_core() == CRFParams()
    assert RefineParams(band_mm=2.5).as_core().band_mm == 2.5
    viewer, w, gt, fg = _widget(make_napari_viewer, qtbot)
    assert (w.form.iterations.min, w.form.iterations.max) == (1, 50)
    assert w.form.confidence.min == pytest.approx(0.51)
    assert list(w.form.mode.choices) == ["auto", "2d", "3d"]
    w.form.srgb_bilateral.value = 99.0
    w.form.confidence.value = 0.6
    w.form.workers.value = 5
    w.form.band_mm.value = 4.0
    assert w.params().band_mm == 4.0 and w.params().workers == 5
    w.reset_button.changed.emit(True)
    mr = default_params("MR")
    assert w.form.srgb_bilateral.value == pytest.approx(mr.srgb_bilateral)
    assert w.form.confidence.value == pytest.approx(0.8)
    assert w.params().band_mm is None and w.params().workers == 2
    # a US image: the US preset (2D mode), the labels confidence kept
    w.form.confidence.value = 0.7
    us = viewer.add_image(np.zeros((6, 40, 40), np.float32), name="us",
                          metadata={META_KEY: {"modality": "US"}})
    w.image.value = us
    assert w.params() == default_params("US")
    assert w.form.confidence.value == pytest.approx(0.7)


def test_qt_handles_drive_the_form(make_napari_viewer, qtbot):
    """Scripts and benchmarks set fields through Qt (``setCurrentText``/``setValue``)."""
    viewer, w, gt, fg = _widget(make_napari_viewer, qtbot)
    w.mode_combo.setCurrentText("3d")
    w.iterations_spin.setValue(7)
    w.workers_spin.setValue(3)
    w.source_combo.setCurrentText("scan [attnseg]")
    p = w.params()
    assert (p.mode, p.iterations, p.workers) == ("3d", 7, 3)
    assert w.source.value is viewer.layers["scan [attnseg]"]
    assert w.config().probabilities.shape == (2,) + gt.shape  # labels -> one-hot
