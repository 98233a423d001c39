"""Issue 11 (found in the README's widget screenshots): in every magicgui-built dock the fields
of the pickers and of the typed options start at one x once the dock is shown (magicgui sizes
its labels before napari's style sheet sets their font; ``_form.align_labels`` redoes it)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_attnseg.widgets.baselines import BaselinesWidget
from napari_attnseg.widgets.compare import CompareWidget
from napari_attnseg.widgets.refine import RefineWidget


@pytest.mark.parametrize("cls", [RefineWidget, BaselinesWidget, CompareWidget])
def test_fields_start_at_one_x(make_napari_viewer, qtbot, cls):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((4, 32, 32), dtype=np.float32), name="scan")
    viewer.add_labels(np.zeros((4, 32, 32), np.uint8), name="scan [attnseg]")
    w = cls(viewer)
    viewer.window.add_dock_widget(w)
    qtbot.waitExposed(w.native)
    xs = []
    for part in (w.pickers, w.form):
        for x in part:
            if type(x).__name__ in ("CheckBox", "PushButton", "Label") or not x.label:
                continue
            xs.append(x.native.mapTo(w.native, x.native.rect().topLeft()).x())
    assert len(xs) >= 3 and max(xs) - min(xs) <= 6, xs  # (the two sub-forms' margins differ)
