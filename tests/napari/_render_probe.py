"""Draw scans in a real napari window and find a bright marker in the screenshots.

Run as a subprocess by ``test_orientation_display.py``: the test session's Qt is headless
(``offscreen``) and draws nothing, and a scan napari cannot slice aborts the whole process
(exit 134), which a subprocess reports instead of killing the test run. Needs an X display
(``xvfb-run``, or the one pytest-xvfb starts).

``python _render_probe.py SPEC.json RESULT.json [PNG_DIR]``; SPEC is a list of cases::

    {"name": ..., "path": ..., "marker": [S, A, R] (a bright voxel block already in the file)
     or null (one is put right-anterior-superior of the centre, from the file's own affine),
     "views": ["axial", "coronal", "sagittal", "3d"] or ["2d"] (a 2D image),
     "conventions": ["radiological", "neurological"]}

RESULT maps ``name/convention/view`` to ``{"dx", "dy", "rx", "ry", "pixels", "letters"}``: the
marker's centroid relative to the canvas centre (fractions of the canvas; dx > 0 is right,
dy > 0 down) and to the image's centre (halves of the image's size on screen), or
``{"error": ...}``.
"""

from __future__ import annotations

import faulthandler
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

#: dims order per view (napari world axes 0 = S, 1 = A, 2 = R; the last two are displayed).
ORDERS = {"axial": (0, 1, 2), "coronal": (1, 0, 2), "sagittal": (2, 0, 1), "3d": (0, 1, 2),
          "2d": (0, 1)}


def _settle(ms: int = 100) -> None:
    from qtpy.QtCore import QEventLoop, QTimer
    from qtpy.QtWidgets import QApplication

    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec_()
    QApplication.processEvents()


def _marked_volume(path: str):
    """The file's volume with a marker block right-anterior-superior of its centre (from the
    volume's own affine) and the marker's world point (S, A, R)."""
    from napari_attnseg import io

    vol = io.read_volume(path)
    n = vol.ndim
    shape = np.array(vol.shape)
    corners = np.array(np.meshgrid(*[[0, s - 1] for s in shape], indexing="ij")).reshape(n, -1).T
    world = (vol.affine @ np.c_[corners, np.ones(len(corners))].T)[:n].T
    lo, hi = world.min(0), world.max(0)
    if n == 2:  # an image, no patient frame: near the first row and column (top left as stored)
        idx = np.round((shape - 1) * 0.2).astype(int)
        point = (vol.affine @ np.r_[idx, 1.0])[:n]
    else:
        point = (lo + hi) / 2 + 0.3 * (hi - lo)
        idx = np.round(np.linalg.solve(vol.affine, np.r_[point, 1.0])[:n]).astype(int)
        idx = np.clip(idx, 0, shape - 1)
        point = (vol.affine @ np.r_[idx, 1.0])[:n]
    radius = [max(1, int(round(0.03 * s))) for s in shape]
    data = np.asarray(vol.data, dtype=np.float32).copy()
    peak = float(np.nanmax(np.abs(data))) * 2 + 1000.0
    data[tuple(slice(max(0, i - r), i + r + 1) for i, r in zip(idx, radius))] = peak
    return vol.with_data(data), point.tolist(), peak


def _open(viewer, case: dict):
    """Open through the plugin reader; the marker added from the file's affine when asked."""
    from napari_attnseg._napari.display import ensure_display
    from napari_attnseg._napari.layers import layer_data_tuple

    try:
        layers = viewer.open(case["path"], plugin="napari-attnseg")
        how = "reader"
    except Exception as exc:  # noqa: BLE001 - e.g. a format the manifest does not list
        layers, how = [], f"layer adapter (the reader refused: {type(exc).__name__}: {exc})"
    _settle(100)  # drawn once as read
    if case.get("marker") is not None and layers:
        return layers[0], case["marker"], float(np.nanmax(layers[0].data)), how
    viewer.layers.clear()
    vol, point, peak = _marked_volume(case["path"])
    data, kwargs, _ = layer_data_tuple(vol, name=Path(case["path"]).name, layer_type="image")
    layer = viewer.add_image(data, **kwargs)
    ensure_display(viewer)
    return layer, point, peak, how + ", marker placed from the file's affine"


def _slider_point(layer, point, axis: int) -> list[float]:
    """The dims point at which napari shows the data plane through ``point`` when world axis
    ``axis`` is the one sliced: napari slices an oblique layer at the data index that the
    sliced world coordinate alone gives (it drops the out-of-slice rotation), so the slider
    position of a plane differs from its true world position there (equal for axis-aligned)."""
    idx = np.asarray(layer.world_to_data(point), dtype=float)
    sub = layer._data_to_world.inverse.set_slice([axis])
    out = list(point)
    out[axis] = float((idx[axis] - sub.translate[0]) / sub.linear_matrix[0, 0])
    return out


def _find_marker(img: np.ndarray) -> dict:
    rgb = img[..., :3].astype(float)
    white = (rgb.min(-1) > 200) & (rgb.max(-1) - rgb.min(-1) < 40)  # grey/white: not the letters
    ys, xs = np.nonzero(white)
    if ys.size == 0:
        return {"error": "no marker pixels in the screenshot", "max": float(rgb.max())}
    h, w = white.shape
    return {"dx": float(xs.mean() / w - 0.5), "dy": float(ys.mean() / h - 0.5),
            "pixels": int(ys.size)}


def _relative_to_image(viewer, img: np.ndarray, res: dict) -> dict:
    """The marker's offset from the image's centre in halves of the image's own size on screen
    (``rx``, ``ry`` in -1..1; a thin image, e.g. 10 slices of 1 mm seen from the front, fills
    little of the canvas): napari's reset_view centres the layers' extent, ``camera.zoom``
    gives screen pixels per mm."""
    if "dx" not in res:
        return {}
    ext = np.asarray(viewer.layers.extent.world, dtype=float)
    vertical, horizontal = list(viewer.dims.displayed)[-2:]
    h, w = img.shape[:2]
    half_v = (ext[1, vertical] - ext[0, vertical]) / 2 * viewer.camera.zoom
    half_h = (ext[1, horizontal] - ext[0, horizontal]) / 2 * viewer.camera.zoom
    return {"rx": float(res["dx"] * w / max(half_h, 1e-9)),
            "ry": float(res["dy"] * h / max(half_v, 1e-9))}


def run_case(viewer, case: dict, png_dir: Path | None) -> dict:
    from napari_attnseg._napari.display import current_letters, set_display_convention

    out: dict = {}
    viewer.layers.clear()
    layer, point, peak, how = _open(viewer, case)
    layer.colormap = "gray"
    layer.contrast_limits = (0.9 * peak, peak)  # only the marker is bright
    if hasattr(layer, "rendering"):
        layer.rendering = "mip"
    for convention in case.get("conventions", ["radiological"]):
        if viewer.dims.ndim >= 3:
            set_display_convention(viewer, convention)
        for view in case["views"]:
            key = f"{case['name']}/{convention}/{view}"
            try:
                viewer.dims.ndisplay = 2
                order = ORDERS[view]
                if viewer.dims.ndim == len(order):
                    viewer.dims.order = order
                if viewer.dims.ndim >= 3:
                    for axis, value in enumerate(_slider_point(layer, point, order[0])):
                        viewer.dims.set_point(axis, value)
                viewer.dims.ndisplay = 3 if view == "3d" else 2
                viewer.reset_view()
                _settle()
                img = viewer.screenshot(canvas_only=True, flash=False)
                res = _find_marker(img)
                res.update(_relative_to_image(viewer, img, res))
                res["letters"] = current_letters(viewer)
                res["orientation"] = [str(getattr(o, "value", o))
                                      for o in viewer.camera.orientation]
                res["opened_by"] = how
                if png_dir is not None:
                    from imageio.v3 import imwrite

                    png_dir.mkdir(parents=True, exist_ok=True)
                    imwrite(png_dir / (key.replace("/", "_") + ".png"), img)
            except Exception as exc:  # noqa: BLE001 - reported to the test
                res = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
            out[key] = res
    viewer.dims.ndisplay = 2
    return out


def main(argv: list[str]) -> int:
    import warnings

    warnings.filterwarnings("ignore")
    import napari

    spec = json.loads(Path(argv[0]).read_text())
    png_dir = Path(argv[2]) if len(argv) > 2 else None
    viewer = napari.Viewer(show=True)
    viewer.window.resize(900, 700)
    results: dict = {}
    for case in spec:
        faulthandler.dump_traceback_later(390, exit=True)  # a hang: stacks on stderr, exit
        t0 = time.perf_counter()
        try:
            results.update(run_case(viewer, case, png_dir))
        except Exception as exc:  # noqa: BLE001 - reported to the test
            results[case["name"]] = {"error": f"{type(exc).__name__}: {exc}",
                                     "trace": traceback.format_exc()}
        Path(argv[1]).write_text(json.dumps(results, indent=1))
        print(f"{case['name']}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    faulthandler.cancel_dump_traceback_later()
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
