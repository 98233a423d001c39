"""Regenerate docs/widgets/scribbles.png: scribble correction of a real cardiac MR in a real window.

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" \\
        .venv/bin/python docs/make_scribble_screenshot.py [--case patient0NN_frameNN] [--strokes 3]

Opens a held-out ACDC patient (``../shared/data/acdc`` or ``$ATTNSEG_DATA/acdc``; never used in
training), segments it with the shipped ``acdc-cardiac-mr-2d`` through the Segment widget, goes
to the slice the model gets most wrong (against the expert mask, which stays hidden), and draws
the strokes a simulated user would draw there (``interactive.simulate.next_scribble``: a stroke of
the true class inside the largest error region), each with the scribbles layer's own ``paint``
as napari's brush does, so the widget corrects the slice on each stroke. Prints the slice's Dice
before and after each stroke, then saves the window with the Scribble dock in front.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import numpy as np


def _wait(app, widget, timeout_s: float = 60.0) -> None:
    t0 = time.perf_counter()
    while widget.busy and time.perf_counter() - t0 < timeout_s:
        app.processEvents()
        time.sleep(0.02)
    app.processEvents()


def _settle(app, ms: int = 300) -> None:
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec_()
    app.processEvents()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", default="patient006_frame16", help="an ACDC case of the test split")
    parser.add_argument("--strokes", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "widgets" / "scribbles.png")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    data = Path(os.environ.get("ATTNSEG_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "acdc"
    image_path = data / "imagesTr" / f"{args.case}.nii.gz"
    if not image_path.is_file():
        raise SystemExit(f"{image_path}: not found (set ATTNSEG_DATA to the shared data folder)")

    import warnings

    warnings.filterwarnings("ignore", message=".*PyQt5 backend is deprecated.*")
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_attnseg import demo
    from napari_attnseg.benchmark.splits import split_subjects
    from napari_attnseg.interactive.simulate import next_scribble, slice_dice
    from napari_attnseg.io import read_volume
    from napari_attnseg.widgets.scribble import BACKGROUND_VALUE

    _, test = split_subjects(str(data))
    if args.case.split("_")[0] not in test:
        raise SystemExit(f"{args.case} is a training patient of acdc-cardiac-mr-2d; pick one of {test}")
    viewer = napari.Viewer(title="napari-attnseg")
    viewer.window.resize(1400, 860)
    app = QApplication.instance()
    viewer.open(str(image_path), plugin="napari-attnseg")
    image = viewer.layers[-1]
    image.colormap = "gray"
    truth = np.asarray(read_volume(data / "labelsTr" / f"{args.case}.nii.gz").data).astype(np.uint8)
    widgets = demo.WIDGETS + [("Scribbles", "napari_attnseg.widgets.scribble", "ScribbleWidget")]
    w = demo.dock_widgets(viewer, widgets)
    seg = w["SegmentWidget"]
    seg.image_combo.setCurrentText(image.name)
    demo.select_model(seg, "acdc-cardiac-mr-2d")
    seg.make_runner().run_sync()
    pred = viewer.layers[f"{image.name} [attnseg]"]
    pred.opacity = 0.45
    _settle(app)

    # the slice with the most wrong pixels among those holding all three structures
    labels = np.asarray(pred.data)
    wrong = [(int(((labels[z] != truth[z]) & ((truth[z] > 0) | (labels[z] > 0))).sum()), z)
             for z in range(labels.shape[0]) if set(np.unique(truth[z])) >= {1, 2, 3}]
    z = max(wrong)[1]
    viewer.dims.set_point(0, float(pred.data_to_world((z, 0, 0))[0]))

    sw = w["ScribbleWidget"]
    sw.image_combo.value = image
    sw.result_combo.value = pred
    sw.probs_combo.value = viewer.layers[f"{pred.name} probabilities"]
    layer = sw.scribbles_layer(create=True)
    print(f"{args.case} slice {z}: Dice {slice_dice(np.asarray(pred.data[z]), truth[z]):.3f} before")
    for k in range(args.strokes):
        stroke = next_scribble(np.asarray(pred.data[z]), truth[z])
        if stroke is None:
            break
        value = BACKGROUND_VALUE if stroke.label == 0 else stroke.label
        sw.class_combo.value = value
        points = np.argwhere(stroke.mask)
        with layer.block_history():  # one stroke, as a mouse drag makes it: one paint event
            for y, x in points:
                layer.paint((z, int(y), int(x)), value, refresh=False)
        layer.refresh()
        _wait(app, sw)
        print(f"  stroke {k + 1} (class {stroke.label}, {len(points)} px): "
              f"Dice {slice_dice(np.asarray(pred.data[z]), truth[z]):.3f}")

    # frame the heart: the bounding box of the segmentation on this slice, with a margin
    ys, xs = np.nonzero(np.asarray(pred.data[z]) > 0)
    if ys.size:
        centre = pred.data_to_world((z, (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2))
        viewer.camera.center = tuple(centre)
        extent = max(ys.max() - ys.min(), xs.max() - xs.min()) * float(max(pred.scale[1:])) + 60
        viewer.camera.zoom = 400 / extent
    demo.show_tab(sw)
    viewer.layers.selection.active = layer
    demo.dismiss_notifications(viewer)
    _settle(app, 600)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.out), canvas_only=False)
    print(f"wrote {args.out}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
