"""The baselines widget: each method through the worker body, seeds from Points (world → data
index) and Labels layers, geometry copied to the output, a real-thread run, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from napari_attnseg.baselines import otsu, region_growing
from napari_attnseg.widgets.baselines import NO_SEED, BaselineParams, BaselinesWidget


def _image():
    img = np.zeros((12, 32, 32), np.float32)
    img[3:9, 6:16, 6:16] = 100.0  # object A
    img[3:9, 20:28, 20:28] = 100.0  # object B (not connected to A)
    img += np.random.default_rng(0).normal(0, 3, img.shape).astype(np.float32)
    return img


@pytest.fixture
def setup(make_napari_viewer):
    viewer = make_napari_viewer()
    img = _image()
    viewer.add_image(img, name="ct", scale=(2.0, 0.5, 0.5), translate=(10.0, 0.0, -4.0))
    w = BaselinesWidget(viewer)
    return viewer, w, img


def test_otsu_output_layer_on_image_grid(setup):
    viewer, w, img = setup
    w.form.method.value = "Otsu"
    w.make_runner().run_sync()
    layer = viewer.layers["ct [otsu]"]
    np.testing.assert_array_equal(layer.data, otsu(img))
    np.testing.assert_allclose(layer.scale, (2.0, 0.5, 0.5))
    np.testing.assert_allclose(layer.translate, (10.0, 0.0, -4.0))
    assert layer.metadata["attnseg"]["provenance"]["baseline"] == "otsu"
    assert layer.metadata["attnseg"]["role"] == "baseline"
    w.make_runner().run_sync()  # re-run in place
    assert [ly.name for ly in viewer.layers].count("ct [otsu]") == 1


def test_region_growing_seed_from_points_world_coords(setup):
    viewer, w, img = setup
    # a point given in world coordinates on a Points layer with its own (identity) transform
    world = np.array([10.0 + 5 * 2.0, 10 * 0.5, -4.0 + 10 * 0.5])  # voxel (5, 10, 10)
    viewer.add_points([world], name="seed")
    w.image.value = viewer.layers["ct"]
    w.seed.value = viewer.layers["seed"]
    w.form.method.value = "Region growing"
    w.form.tolerance.value = 30.0
    cfg = w.snapshot()
    assert cfg.seed == (5, 10, 10)
    w.make_runner().run_sync()
    out = viewer.layers["ct [region growing]"].data
    np.testing.assert_array_equal(out, region_growing(img, (5, 10, 10), 30.0))
    assert out[5, 10, 10] == 1 and out[5, 24, 24] == 0  # object B not reached


def test_seed_labels_layer_and_active_contours(setup):
    viewer, w, img = setup
    seeds = np.zeros(img.shape, np.uint8)
    seeds[5, 10, 10] = 1
    seeds[5, 24, 24] = 1
    viewer.add_labels(seeds, name="seeds", scale=(2.0, 0.5, 0.5), translate=(10.0, 0.0, -4.0))
    w.image.value = viewer.layers["ct"]
    w.seed.value = viewer.layers["seeds"]
    w.form.method.value = "Region growing"
    w.form.tolerance.value = 30.0
    w.make_runner().run_sync()
    out = viewer.layers["ct [region growing]"].data
    assert out[5, 10, 10] == 1 and out[5, 24, 24] == 1
    w.seed.value = NO_SEED
    w.form.method.value = "Chan-Vese"
    w.form.iterations.value = 10
    w.make_runner().run_sync()
    cv = viewer.layers["ct [chan-vese]"].data
    assert cv.dtype == np.uint8 and cv[5, 10, 10] == 1 and cv[0, 0, 0] == 0


def test_refusals(setup):
    viewer, w, img = setup
    assert w.run_button.enabled and w.info.value == ""
    w.form.method.value = "Region growing"
    assert not w.run_button.enabled and "seed" in w.info.value  # said before Run is pressed
    assert w.make_runner() is None and "seed" in w.message.text()
    viewer.add_labels(np.ones((12, 32, 32), np.uint8), name="offgrid", scale=(1.0, 0.5, 0.5))
    w.seed.value = viewer.layers["offgrid"]
    assert w.make_runner() is None and "not on the grid" in w.message.text()
    viewer.add_points(np.zeros((0, 3)), name="nopoints")
    w.seed.value = viewer.layers["nopoints"]
    assert w.make_runner() is None and "no point" in w.message.text()


def test_real_thread_run(setup, qtbot):
    viewer, w, img = setup
    w.form.method.value = "Geodesic"
    w.form.iterations.value = 20
    w.run()
    qtbot.waitUntil(lambda: "ct [geodesic]" in viewer.layers and not w.runner.running,
                    timeout=30000)
    assert w.runner.error is None
    assert viewer.layers["ct [geodesic]"].data.shape == img.shape


def test_form_from_params_reset_and_qt_handles(setup):
    viewer, w, img = setup
    assert list(w.form.method.choices) == ["Otsu", "Region growing", "Chan-Vese", "Geodesic"]
    assert (w.form.iterations.min, w.form.iterations.max) == (1, 10000)
    assert w.settings() == BaselineParams()
    w.method_combo.setCurrentText("Geodesic")  # the Qt handles scripts use drive the form
    w.iterations_spin.setValue(7)
    w.tolerance_spin.setValue(12.5)
    assert w.settings() == BaselineParams(method="Geodesic", tolerance=12.5, iterations=7)
    w.reset_button.changed.emit(True)
    assert w.settings() == BaselineParams(method="Otsu", tolerance=0.0, iterations=100,
                                          smoothing=1)
    assert w.snapshot().tolerance is None  # 0 = auto
    viewer.layers.remove("ct")
    assert w.image.value is None and not w.run_button.enabled and "Image" in w.info.value
