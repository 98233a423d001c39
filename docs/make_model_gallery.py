"""docs/real_models.png: the shipped models on held-out real scans, as napari shows them.

    xvfb-run -a .venv/bin/python docs/make_model_gallery.py [--data ../shared/data]

One panel per model, left to right: acdc-cardiac-mr-2d on ACDC patient003 (end-diastole, a test
patient), openkbp-headneck-ct-2d on OpenKBP patient 009 (test), chaos-abdomen-mr-2d on CHAOS case 13 (test),
hc18-ultrasound-2d v2 on HC18
image 015_HC (a test subject); each 3D scan at the axial slice showing the most structures, CT
in a soft-tissue window (-160..240 HU). Each prediction goes through the package's own path (read_volume
-> predict -> the layer adapter with the model's label names and colours) in a real viewer with
the radiological display; the panels are the viewer's canvas screenshots, tiled side by side.
The scans are read from ../shared/data and never copied into the repository (only this PNG is).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASES = (  # (model, scan relative to the data folder, pixel size for 2D or None, slice fraction)
    ("acdc-cardiac-mr-2d", "acdc/imagesTr/patient003_frame01.nii.gz", None, 0.5),
    ("openkbp-headneck-ct-2d", "openkbp_ct/imagesTr/openkbp_009.nii.gz", None, 0.45),
    ("chaos-abdomen-mr-2d", "chaos_mr_t2/imagesTr/chaos_13.nii.gz", None, 0.5),
    ("hc18-ultrasound-2d", "hc18/images/015_HC.png", "csv", None),
)


def _pixel_size(data: Path, name: str) -> float:
    import csv

    with open(data / "hc18" / "pixel_size_and_hc.csv", newline="", encoding="utf-8") as fh:
        return {r["filename"]: float(r["pixel size(mm)"] if "pixel size(mm)" in r else r["pixel_size_mm"])
                for r in csv.DictReader(fh)}[name]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("ATTNSEG_DATA", ROOT.parent / "shared" / "data")))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "real_models.png")
    args = ap.parse_args(argv)

    import imageio.v3 as iio
    import napari
    from skimage.transform import resize

    from napari_attnseg._napari.display import ensure_display, settle_display
    from napari_attnseg._napari.layers import layer_data_tuple
    from napari_attnseg.inference.predictor import predict
    from napari_attnseg.io import read_volume
    from napari_attnseg.model.checkpoint import load_model
    from napari_attnseg.model.registry import ModelRegistry
    from napari_attnseg.volume import Volume

    panels = []
    for name, rel, px, frac in CASES:
        path = args.data / rel
        if not path.is_file():
            print(f"skipped {name}: {path} is absent")
            continue
        kw = {"pixel_size_mm": _pixel_size(args.data, path.name)} if px == "csv" else {}
        image = read_volume(path, **kw)
        model = load_model(ModelRegistry().resolve(name))
        pred = predict(model, image)
        labels = Volume(pred.labels, image.spacing, image.origin, image.direction, is_labels=True,
                        source=str(path))
        viewer = napari.Viewer(show=True)
        viewer.window.resize(640, 640)
        data, kwargs, kind = layer_data_tuple(image, name=path.name)
        viewer.add_image(data, **kwargs)
        ensure_display(viewer)
        ldata, lkw, _ = layer_data_tuple(labels, name=f"{path.name} [attnseg]",
                                         provenance={"label_names": {str(k): v for k, v in
                                                                     model.spec.label_names.items()}})
        layer = viewer.add_labels(ldata, **lkw)
        layer.opacity = 0.55
        if image.modality == "CT":  # a soft-tissue window, as a CT viewer opens it
            viewer.layers[path.name].contrast_limits = (-160, 240)
        if frac is not None and np.ndim(data) == 3:
            # the slice showing the most structures (ties: the one nearest the fraction)
            lab = np.asarray(ldata)
            counts = [len(set(np.unique(s).tolist()) - {0}) for s in lab]
            best = max(counts)
            cand = [z for z, c in enumerate(counts) if c == best]
            z = min(cand, key=lambda k: abs(k - frac * (lab.shape[0] - 1)))
            viewer.dims.set_current_step(0, z)
        settle_display(viewer)
        viewer.reset_view()
        if image.modality == "CT":  # OpenKBP's 512 mm field of view: zoom to the head
            ys, xs = np.nonzero(np.asarray(ldata)[viewer.dims.current_step[0]])
            centre = layer.data_to_world((viewer.dims.current_step[0], ys.mean(), xs.mean()))
            viewer.camera.center = tuple(centre[1:])
            viewer.camera.zoom *= 2.2
        for _ in range(5):
            viewer.window._qt_window.repaint()
            napari.qt.get_qapp().processEvents()
        shot = viewer.screenshot(canvas_only=True, flash=False)
        panels.append(resize(shot, (512, 512), order=1, preserve_range=True,
                             anti_aliasing=True).astype(np.uint8))
        print(f"{name}: {path.name}, labels {sorted(set(np.unique(pred.labels).tolist()) - {0})}")
        viewer.close()
    if not panels:
        return 1
    gap = np.full((512, 8, panels[0].shape[2]), 255, np.uint8)
    row = panels[0]
    for p in panels[1:]:
        row = np.concatenate([row, gap, p], axis=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(str(args.out), row)
    print(f"wrote {args.out} {row.shape}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
