"""``attnseg-demo``: open napari with a sample scan, its ground truth and the plugin's widgets docked.

    attnseg-demo                      # CT phantom from sample_data/ (or generated), widgets docked
    attnseg-demo --segment            # also run the default model once the window is up
    attnseg-demo --screenshot out.png --quit   # headless check: save a screenshot and exit
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

WIDGETS = [
    ("Load scan", "napari_attnseg.widgets.load", "LoadWidget"),
    ("Segment", "napari_attnseg.widgets.segment", "SegmentWidget"),
    ("Refine (dense CRF)", "napari_attnseg.widgets.refine", "RefineWidget"),
    ("Compare with ground truth", "napari_attnseg.widgets.compare", "CompareWidget"),
    ("Fine-tune on corrections", "napari_attnseg.widgets.finetune", "FinetuneWidget"),
]

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"


def _open_sample(viewer, name: str) -> None:
    from ._napari.layers import layer_data_tuple
    from .io import read_volume

    image_path = SAMPLE_DIR / f"{name}.nii.gz"
    labels_path = SAMPLE_DIR / f"{name}_labels.nii.gz"
    if image_path.exists() and labels_path.exists():
        image = read_volume(image_path)
        labels = read_volume(labels_path)
        labels = labels.with_data(labels.data.astype("uint8"), is_labels=True)
        tuples = [layer_data_tuple(image, name=name),
                  layer_data_tuple(labels, name=f"{name} ground truth", layer_type="labels")]
    else:  # installed without the repository's sample_data/: generate the same phantom
        from ._napari import sample_data

        tuples = getattr(sample_data, name)()
    for data, kwargs, kind in tuples:
        getattr(viewer, f"add_{kind}")(data, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="attnseg-demo", description=__doc__.split("\n")[0])
    parser.add_argument("--sample", default="ct_phantom", choices=["ct_phantom", "mr_phantom"])
    parser.add_argument("--segment", action="store_true", help="run the default model at start")
    parser.add_argument("--screenshot", type=Path, help="save a screenshot of the window here")
    parser.add_argument("--quit", action="store_true", help="close after the screenshot")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    import importlib

    import napari
    from qtpy.QtCore import QTimer

    viewer = napari.Viewer(title="napari-attnseg demo")
    _open_sample(viewer, args.sample)
    docked = {}
    for title, module, cls in WIDGETS:
        widget = getattr(importlib.import_module(module), cls)(viewer)
        docked[cls] = widget
        viewer.window.add_dock_widget(widget, name=title, area="right", tabify=True)
    viewer.dims.current_step = (viewer.dims.nsteps[0] // 2,) + tuple(viewer.dims.current_step[1:])

    seg = docked.get("SegmentWidget")
    done = {"ok": not args.segment}

    def start_segment():
        if seg is not None and hasattr(seg, "run_volume"):
            runner = seg.run_volume()
            if runner is not None and hasattr(runner, "worker") and runner.worker is not None:
                runner.worker.finished.connect(lambda: done.update(ok=True))
                return
        done["ok"] = True

    def finish():
        if not done["ok"]:
            QTimer.singleShot(500, finish)
            return
        if args.screenshot:
            viewer.screenshot(str(args.screenshot), canvas_only=False)
            logger.info("screenshot saved to %s", args.screenshot)
        if args.quit:
            viewer.close()

    if args.segment:
        QTimer.singleShot(300, start_segment)
    if args.screenshot or args.quit:
        QTimer.singleShot(1500, finish)
    napari.run()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
