"""The baselines widget: each method through the worker body, seeds from Points (world → data
index) and Labels layers, geometry copied to the output, a real-thread run, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from napari_attnseg.baselines import otsu, region_growing
from napari_attnseg.widgets.baselines import BaselinesWidget


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
    w.method_combo.setCurrentText("Otsu")
    w.make_runner().run_sync()
    layer = viewer.layers["ct [otsu]"]
    np.testing.assert_array_equal(layer.data, otsu(img))
    np.testing.assert_allclose(layer.scale, (2.0, 0.5, 0.5))
    np.testing.assert_allclose(layer.translate, (10.0, 0.0, -4.0))
    assert layer.metadata["attnseg"]["provenance"]["baseline"] == "otsu"
    w.make_runner().run_sync()  # re-run in place
    assert [ly.name for ly in viewer.layers].count("ct [otsu]") == 1


def test_region_growing_seed_from_points_world_coords(setup):
    viewer, w, img = setup
    # a point given in world coordinates on a Points layer with its own (identity) transform
    world = np.array([10.0 + 5 * 2.0, 10 * 0.5, -4.0 + 10 * 0.5])  # voxel (5, 10, 10)
    viewer.add_points([world], name="seed")
    w.image_combo.setCurrentText("ct")
    w.seed_combo.setCurrentText("seed")
    w.method_combo.setCurrentText("Region growing")
    w.tolerance_spin.setValue(30.0)
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
    w.image_combo.setCurrentText("ct")
    w.seed_combo.setCurrentText("seeds")
    w.method_combo.setCurrentText("Region growing")
    w.tolerance_spin.setValue(30.0)
    w.make_runner().run_sync()
    out = viewer.layers["ct [region growing]"].data
    assert out[5, 10, 10] == 1 and out[5, 24, 24] == 1
    w.seed_combo.setCurrentText("(none)")
    w.method_combo.setCurrentText("Chan-Vese")
    w.iterations_spin.setValue(10)
    w.make_runner().run_sync()
    cv = viewer.layers["ct [chan-vese]"].data
    assert cv.dtype == np.uint8 and cv[5, 10, 10] == 1 and cv[0, 0, 0] == 0


def test_refusals(setup):
    viewer, w, img = setup
    w.method_combo.setCurrentText("Region growing")
    assert w.make_runner() is None and "seed" in w.message.text()
    viewer.add_labels(np.ones((12, 32, 32), np.uint8), name="offgrid", scale=(1.0, 0.5, 0.5))
    w.seed_combo.setCurrentText("offgrid")
    assert w.make_runner() is None and "not on the grid" in w.message.text()
    viewer.add_points(np.zeros((0, 3)), name="nopoints")
    w.seed_combo.setCurrentText("nopoints")
    assert w.make_runner() is None and "no point" in w.message.text()


def test_real_thread_run(setup, qtbot):
    viewer, w, img = setup
    w.method_combo.setCurrentText("Geodesic")
    w.iterations_spin.setValue(20)
    w.run()
    qtbot.waitUntil(lambda: "ct [geodesic]" in viewer.layers and not w.runner.running,
                    timeout=30000)
    assert w.runner.error is None
    assert viewer.layers["ct [geodesic]"].data.shape == img.shape
