"""``attnseg-demo``: open napari with a sample scan, its ground truth and the plugin's widgets docked.

    attnseg-demo                      # CT phantom from sample_data/ (or generated), widgets docked
    attnseg-demo --segment            # also run the default model once the window is up
    attnseg-demo --model ct@2         # pick a registry model (name, name@version or a folder)
    attnseg-demo --screenshot out.png --quit   # headless check: save a screenshot and exit

:func:`build` does the setup on an existing viewer (no event loop), so it is testable.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: (dock title, module, class) in the order of the loop; all tabbed in the right dock area.
WIDGETS = [
    ("Load", "napari_attnseg.widgets.load", "LoadWidget"),
    ("Segment", "napari_attnseg.widgets.segment", "SegmentWidget"),
    ("CRF", "napari_attnseg.widgets.refine", "RefineWidget"),
    ("Compare", "napari_attnseg.widgets.compare", "CompareWidget"),
    ("Baselines", "napari_attnseg.widgets.baselines", "BaselinesWidget"),
    ("Fine-tune", "napari_attnseg.widgets.finetune", "FinetuneWidget"),
]
SAMPLES = ("ct_phantom", "mr_phantom")
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"
DOCK_WIDTH = 420  #: px; the forms need about this much to show labels and values in full


def open_sample(viewer: Any, name: str = "ct_phantom") -> list[Any]:
    """Add the sample scan and its ground truth (from ``sample_data/`` when the repository is
    there, else generated); returns the layers [image, ground truth]."""
    from ._napari.layers import layer_data_tuple
    from ._options import choose

    name = choose(name, SAMPLES, "sample")
    image_path = SAMPLE_DIR / f"{name}.nii.gz"
    labels_path = SAMPLE_DIR / f"{name}_labels.nii.gz"
    if image_path.exists() and labels_path.exists():
        from .io import read_volume

        image = read_volume(image_path)
        labels = read_volume(labels_path)
        labels = labels.with_data(labels.data.astype("uint8"), is_labels=True)
        tuples = [layer_data_tuple(image, name=name, layer_type="image"),
                  layer_data_tuple(labels, name=f"{name} ground truth", layer_type="labels")]
    else:  # installed without the repository's sample_data/: generate the same phantom
        from ._napari import sample_data

        tuples = getattr(sample_data, name)()
    layers = [getattr(viewer, f"add_{kind}")(data, **kwargs) for data, kwargs, kind in tuples]
    from ._napari.display import ensure_display

    ensure_display(viewer)  # radiological display and orientation letters
    image_layer, gt_layer = layers
    image_layer.colormap = "gray"
    if name == "ct_phantom":
        image_layer.contrast_limits = (-160.0, 240.0)  # soft-tissue window (HU)
    # the truth as a yellow/cyan outline: the segmentation (filled, red/blue) stays visible
    from napari.utils.colormaps import DirectLabelColormap

    gt_layer.colormap = DirectLabelColormap(
        color_dict={None: "transparent", 0: "transparent", 1: "yellow", 2: "cyan", 3: "lime"})
    gt_layer.contour = 1
    gt_layer.opacity = 1.0
    return layers


def dock_widgets(viewer: Any, widgets: list[tuple[str, str, str]] | None = None,
                 width: int = DOCK_WIDTH) -> dict[str, Any]:
    """Create and dock the widgets, tabbed in the right area; returns {class name: widget}."""
    docked: dict[str, Any] = {}
    first = None
    for title, module, cls in widgets or WIDGETS:
        widget = getattr(importlib.import_module(module), cls)(viewer)
        dock = viewer.window.add_dock_widget(widget, name=title, area="right", tabify=True)
        dock.setMinimumWidth(width)
        docked[cls] = widget
        first = first or dock
    if first is not None:
        first.raise_()
    return docked


def show_tab(widget: Any) -> None:
    """Bring the dock holding ``widget`` to the front of its tab group."""
    from qtpy.QtWidgets import QDockWidget

    parent = getattr(widget, "native", widget).parent()  # a QWidget or a magicgui Container
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parent()
    if parent is not None:
        parent.raise_()


def go_to_structure(viewer: Any, labels_layer: Any) -> int:
    """Show the z slice with the most foreground of ``labels_layer``; returns its index."""
    data = np.asarray(labels_layer.data)
    if data.ndim != 3:
        return 0
    z = int(np.argmax((data > 0).sum(axis=(1, 2))))
    world = labels_layer.data_to_world((z, 0, 0))
    viewer.dims.set_point(viewer.dims.ndim - 3, float(world[0]))
    return z


def select_model(segment_widget: Any, model: str) -> Path:
    """Select ``model`` (registry name, ``name@version`` or folder) in the Segment widget."""
    from .model.registry import ModelRegistry

    folder = Path(model)
    if not (folder / "config.json").is_file():
        folder = ModelRegistry().resolve(model)
    segment_widget.set_model_folder(folder)
    return folder


def build(viewer: Any, sample: str = "ct_phantom", *, model: str | None = None,
          widgets: list[tuple[str, str, str]] | None = None) -> dict[str, Any]:
    """Set up the demo on ``viewer``: sample + ground truth, every widget docked, the slice
    through the structure shown, the Segment tab in front. Returns {class name: widget}."""
    image_layer, gt_layer = open_sample(viewer, sample)
    docked = dock_widgets(viewer, widgets)
    seg = docked.get("SegmentWidget")
    if seg is not None:
        seg.image_combo.setCurrentText(image_layer.name)
        if model:
            select_model(seg, model)
        show_tab(seg)
    compare = docked.get("CompareWidget")
    if compare is not None:
        compare.gt_combo.setCurrentText(gt_layer.name)
    go_to_structure(viewer, gt_layer)
    viewer.layers.selection.active = image_layer
    return docked


def start_segment(docked: dict[str, Any], on_done: Any) -> bool:
    """Start the Segment widget's whole-volume run; ``on_done()`` runs when it ends.
    Returns False (and calls nothing) when it could not start (no model: see the log)."""
    seg = docked.get("SegmentWidget")
    if seg is None:
        return False
    runner = seg.make_runner()
    if runner is None:
        logger.warning("segmentation not started: %s", seg.info_label.text())
        return False
    runner.on_finished = on_done
    runner.start()
    return True


def _style_results(viewer: Any, sample: str) -> None:
    """After a run: the labels half transparent and selected (the brush is one click away)."""
    name = f"{sample} [attnseg]"
    if name in viewer.layers:
        viewer.layers[name].opacity = 0.5
        viewer.layers.selection.active = viewer.layers[name]


def dismiss_notifications(viewer: Any) -> None:
    """Close the notification toasts (they would cover the canvas in a screenshot)."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="attnseg-demo", description=__doc__.split("\n")[0])
    parser.add_argument("--sample", default="ct_phantom", choices=list(SAMPLES))
    parser.add_argument("--model", help="registry model (name or name@version) or model folder")
    parser.add_argument("--segment", action="store_true", help="run the model once the window is up")
    parser.add_argument("--screenshot", type=Path, help="save a screenshot of the window here")
    parser.add_argument("--size", type=int, nargs=2, default=(1400, 860), metavar=("W", "H"),
                        help="window size in pixels (default 1400 860)")
    parser.add_argument("--quit", action="store_true", help="close after the screenshot")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    if args.screenshot:  # keep napari's backend deprecation toast out of the picture
        import warnings

        warnings.filterwarnings("ignore", message=".*PyQt5 backend is deprecated.*")
    import napari
    from qtpy.QtCore import QTimer

    viewer = napari.Viewer(title="napari-attnseg demo")
    viewer.window.resize(*args.size)
    docked = build(viewer, args.sample, model=args.model)
    state = {"segment_done": not args.segment}

    def segmented() -> None:
        _style_results(viewer, args.sample)
        state["segment_done"] = True

    def finish() -> None:
        if not state["segment_done"]:
            QTimer.singleShot(300, finish)
            return
        if args.screenshot:
            dismiss_notifications(viewer)
            viewer.reset_view()
            args.screenshot.parent.mkdir(parents=True, exist_ok=True)
            viewer.screenshot(str(args.screenshot), canvas_only=False)
            logger.info("screenshot saved to %s", args.screenshot)
        if args.quit:
            viewer.close()
            # Qt6: closing a hidden window does not end the event loop; end it explicitly
            from qtpy.QtWidgets import QApplication

            app = QApplication.instance()
            if app is not None:
                QTimer.singleShot(0, app.quit)

    if args.segment:
        QTimer.singleShot(300, lambda: start_segment(docked, segmented) or segmented())
    if args.screenshot or args.quit:
        QTimer.singleShot(1500, finish)
    napari.run()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
