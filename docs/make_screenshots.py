"""Regenerate docs/screenshot.png and docs/widgets/*.png by running the loop in a real window.

    ATTNSEG_MODELS=/path/to/registry QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" \\
        .venv/bin/python docs/make_screenshots.py [--model NAME] [--out docs]

Runs the whole loop on the CT phantom (segment -> CRF -> compare -> Otsu baseline -> brush
correction of a few slices -> a short fine-tune) through the widgets' public methods, then saves
the main window and one picture per dock widget. A trained model gives meaningful pictures; any
model in the registry works.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

WIDGET_FILES = {
    "LoadWidget": "load.png", "SegmentWidget": "segment.png", "RefineWidget": "refine.png",
    "CompareWidget": "compare.png", "BaselinesWidget": "baselines.png",
    "FinetuneWidget": "finetune.png",
}


def _settle(app, ms: int = 300) -> None:
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec_()
    app.processEvents()


def _save_widget(widget, path: Path, width: int = 420) -> None:
    """The widget as a small PNG (its dock's content, at most ``width`` px wide)."""
    from qtpy.QtCore import Qt

    pix = getattr(widget, "native", widget).grab()  # a QWidget or a magicgui Container
    if pix.width() > width:
        pix = pix.scaledToWidth(width, Qt.SmoothTransformation)
    path.parent.mkdir(parents=True, exist_ok=True)
    pix.save(str(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="registry model or folder (default: the registry default)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--finetune-seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    import warnings

    warnings.filterwarnings("ignore", message=".*PyQt5 backend is deprecated.*")
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_attnseg import demo

    viewer = napari.Viewer(title="napari-attnseg")
    viewer.window.resize(1400, 860)
    app = QApplication.instance()
    w = demo.build(viewer, "ct_phantom", model=args.model)
    image, gt = viewer.layers["ct_phantom"], viewer.layers["ct_phantom ground truth"]
    _settle(app)

    # the Load widget listing the DICOM sample's series (not opened: the phantom is already in)
    dicom = demo.SAMPLE_DIR / "ct_dicom"
    if dicom.is_dir():
        w["LoadWidget"].set_path(dicom)

    # segment (whole volume, same runner as the button, run synchronously here)
    seg = w["SegmentWidget"]
    seg.make_runner().run_sync()
    demo._style_results(viewer, "ct_phantom")
    pred = viewer.layers["ct_phantom [attnseg]"]

    # refine with the CRF, from the probabilities
    refine = w["RefineWidget"]
    refine.source_combo.setCurrentText("ct_phantom [attnseg] probabilities")
    refine.image_combo.setCurrentText("ct_phantom")
    refine.refine_volume(sync=True)
    viewer.layers["ct_phantom [attnseg+crf]"].visible = False

    # compare both with the ground truth
    compare = w["CompareWidget"]
    compare.gt_combo.setCurrentText(gt.name)
    compare.set_candidates(["ct_phantom [attnseg]", "ct_phantom [attnseg+crf]"])
    compare.make_runner().run_sync()

    # a traditional baseline for reference
    base = w["BaselinesWidget"]
    base.image_combo.setCurrentText("ct_phantom")
    base.method_combo.setCurrentText("Otsu")
    runner = base.make_runner()
    if runner is not None:
        runner.run_sync()
    for ly in viewer.layers:
        if "otsu" in ly.name:
            ly.visible = False

    # brush correction: the ground truth painted into three slices, then a short fine-tune
    z0 = demo.go_to_structure(viewer, gt)
    truth = np.asarray(gt.data)
    for z in (z0 - 6, z0 - 3, z0 + 5):  # not the shown slice: the picture shows the model
        for value in np.unique(truth[z]):
            idx = np.nonzero(truth[z] == value)
            pred.data_setitem((np.full(idx[0].size, z), *idx), int(value))
    tune = w["FinetuneWidget"]
    tune.image_combo.setCurrentText("ct_phantom")
    tune.labels_combo.setCurrentText(pred.name)
    tune.budget_combo.setCurrentText("seconds")
    tune.seconds_spin.setValue(int(args.finetune_seconds))
    tune.train_overrides = {"steps_per_epoch": 5, "batch_size": 4, "patch_size": (96, 96)}
    runner = tune.make_runner()
    if runner is not None:
        runner.run_sync()
        tune._on_finished()
    tune.compute_uncertainty(sync=False)
    viewer.layers.selection.active = pred
    _settle(app, 500)
    for name in ("ct_phantom [attnseg] uncertainty", "ct_phantom [attnseg] probabilities",
                 "ct_phantom ground truth [attnseg errors]"):
        if name in viewer.layers:
            viewer.layers[name].visible = False

    out = args.out
    for cls, fname in WIDGET_FILES.items():
        if cls in w:
            demo.show_tab(w[cls])
            _settle(app, 200)
            _save_widget(w[cls], out / "widgets" / fname)
    demo.show_tab(compare)
    demo.dismiss_notifications(viewer)
    viewer.reset_view()
    _settle(app, 500)
    viewer.screenshot(str(out / "screenshot.png"), canvas_only=False)
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
