"""Refine and Fine-tune refuse layers that have the image's shape but lie elsewhere (issue 12)."""

import numpy as np
import pytest

from napari_attnseg.errors import AttnsegError


def _layers(viewer, shift_mm):
    img = np.random.default_rng(0).random((4, 32, 32)).astype(np.float32)
    lab = np.zeros((4, 32, 32), np.uint8)
    lab[:, 8:20, 8:20] = 1
    viewer.add_image(img, name="scan", scale=(2.0, 1.0, 1.0))
    viewer.add_labels(lab, name="seg", scale=(2.0, 1.0, 1.0), translate=(0.0, shift_mm, 0.0))


@pytest.mark.parametrize("shift, ok", [(0.0, True), (40.0, False)])
def test_refine_checks_the_grid(make_napari_viewer, shift, ok):
    from napari_attnseg.widgets.refine import RefineWidget

    viewer = make_napari_viewer()
    _layers(viewer, shift)
    w = RefineWidget(viewer)
    w.source_combo.setCurrentText("seg")
    w.image_combo.setCurrentText("scan")
    if ok:
        assert w.config() is not None
    else:
        with pytest.raises(AttnsegError, match="same grid"):
            w.config()
