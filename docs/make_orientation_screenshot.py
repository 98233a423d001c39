"""Regenerate docs/real_scans.png: real scans from ../shared/data opened through the plugin's
reader, shown by the radiological convention with the orientation letters.

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" \\
        .venv/bin/python docs/make_orientation_screenshot.py [--data ../shared/data] [--out docs]

Panels, left to right: the spleen CT (stored RAS) axial with its manual spleen mask; the T2
spinal cord (stored PSR: it aborted napari before) axial, then sagittal, with its cord mask.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _settle(ms: int = 400) -> None:
    from qtpy.QtCore import QEventLoop, QTimer
    from qtpy.QtWidgets import QApplication

    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec_()
    QApplication.processEvents()


def _panel(viewer, image: Path, mask: Path, order: tuple[int, ...], title: str,
           contrast: tuple[float, float] | None = None) -> np.ndarray:
    """One canvas screenshot: the scan, its mask as a contour, the slice through the mask."""
    viewer.layers.clear()
    img = viewer.open(str(image), plugin="napari-attnseg")[0]
    img.colormap = "gray"
    if contrast is not None:
        img.contrast_limits = contrast
    lab = viewer.open(str(mask), plugin="napari-attnseg")[0]
    lab.contour = 1
    lab.opacity = 0.9
    viewer.dims.order = order
    centre = np.argwhere(np.asarray(lab.data) > 0).mean(0)  # the mask's centre (layer index)
    world = lab.data_to_world(centre)
    viewer.dims.set_point(order[0], world[order[0]])
    overlay = viewer.canvas.overlays["text"]
    overlay.text, overlay.visible, overlay.font_size = title, True, 11
    overlay.position, overlay.color = "top_left", "white"
    viewer.reset_view()
    _settle()
    return viewer.screenshot(canvas_only=True, flash=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore")
    import napari
    from imageio.v3 import imwrite

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1000, 640)
    d = args.data
    panels = [
        _panel(viewer, d / "ct_spleen/image.nii.gz", d / "ct_spleen/spleen_mask.nii.gz",
               (0, 1, 2), "spleen CT (RAS): axial", contrast=(-160.0, 240.0)),
        _panel(viewer, d / "mri_spinalcord/t2.nii.gz", d / "mri_spinalcord/t2_cord_mask.nii.gz",
               (0, 1, 2), "T2 cord (PSR): axial"),
        _panel(viewer, d / "mri_spinalcord/t2.nii.gz", d / "mri_spinalcord/t2_cord_mask.nii.gz",
               (2, 0, 1), "T2 cord (PSR): sagittal"),
    ]
    h = min(p.shape[0] for p in panels)
    gap = np.full((h, 6, 4), 255, np.uint8)
    row = [panels[0][:h]]
    for p in panels[1:]:
        row += [gap, p[:h]]
    args.out.mkdir(parents=True, exist_ok=True)
    imwrite(args.out / "real_scans.png", np.concatenate(row, axis=1)[..., :3])
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
