"""The 2D models on scans at another scanner's pixel size, with and without the pixel-size range
they declare (``ModelSpec.inplane_spacing``), side by side in one run.

Run:  python benchmarks/bench_scanner_resolution.py [--threads 2] [--volumes 4] [--json F]

Clinical scanners write other in-plane pixel sizes than the training data: a head-and-neck CT at
~1.0-1.2 mm (OpenKBP was resampled to 2.7-5.1 mm), an abdominal MR at 0.7-1.9 mm (CHAOS: 1.25 mm),
a cine at 0.7-2 mm (ACDC: 1.37-1.68 mm). Each held-out test volume (the shipped models' split) is
resampled in-plane to such a pixel size (linear; its reference mask by nearest neighbour) with a
real geometry, then segmented by the model as it is stored and by the same weights with a
declared range (``--range`` overrides). Prints mean Dice over classes present, per arm, and the
seconds. ACDC's files carry no voxel size: the benchmark gives them 1.5 mm, its typical size.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_precision import _cases, _dice_mean as _dice  # noqa: E402  (the same folder)
from napari_attnseg.benchmark.splits import case_of, split_subjects, subject_of  # noqa: E402

#: dataset -> (model, the range the new versions declare, simulated pixel sizes in mm)
CASES = {
    "acdc": ("acdc-cardiac-mr-2d@3", (1.37, 1.68), (0.75, 2.2)),
    "chaos_mr_t2": ("chaos-abdomen-mr-2d@2", (1.25, 1.25), (0.75, 1.9)),
    "openkbp_ct": ("openkbp-headneck-ct-2d@3", None, (1.2,)),  # range: the training patients'
}
ACDC_TRUE_MM = 1.5


def training_range(folder: Path) -> tuple[float, float]:
    """The 5th and 95th percentiles of the in-plane pixel sizes of a dataset's training
    subjects (NIfTI pixdim): where the model has seen many pixels, not one outlier."""
    import nibabel as nib

    train, _ = split_subjects(folder)
    meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    sizes = [float(z) for e in meta["training"] if subject_of(case_of(e)) in set(train)
             for z in nib.load(folder / e["image"]).header.get_zooms()[:2]]
    lo, hi = np.percentile(sizes, [5, 95])
    return round(float(lo), 2), round(float(hi), 2)


def _at_pixel(volume, labels, mm: float):
    """``volume`` and ``labels`` resampled in-plane (axes 1, 2) to ``mm`` pixels."""
    from scipy import ndimage

    from napari_attnseg.volume import SPACING_NOMINAL

    factors = [1.0] + [float(s) / mm for s in volume.spacing[1:]]
    data = ndimage.zoom(np.asarray(volume.data, np.float32), factors, order=1)
    gt = ndimage.zoom(np.asarray(labels.data), factors, order=0)
    spacing = (volume.spacing[0], mm, mm)
    header = {k: v for k, v in dict(volume.header).items() if k != SPACING_NOMINAL}
    return dataclasses.replace(volume, data=data, spacing=spacing, header=header), gt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("ATTNSEG_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--volumes", type=int, default=4)
    ap.add_argument("--datasets", nargs="*", default=list(CASES))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import torch

    from napari_attnseg.inference.predictor import PredictConfig, inplane_factors, predict
    from napari_attnseg.io import read_volume
    from napari_attnseg.model.checkpoint import load_model
    from napari_attnseg.model.registry import ModelRegistry
    from napari_attnseg.volume import SPACING_NOMINAL

    torch.set_num_threads(args.threads)
    rows = []
    print("| dataset | pixel (mm) | volumes | as stored: mean Dice | with the range | range (mm) | s/volume stored / range |")
    print("|---|---|---|---|---|---|---|")
    for ds in args.datasets:
        folder = Path(args.data) / ds
        if not folder.is_dir():
            print(f"skipped {ds}: {folder} is absent")
            continue
        ref, rng, pixels = CASES[ds]
        rng = rng or training_range(folder)
        stored = load_model(ModelRegistry().resolve(ref))
        ranged = dataclasses.replace(stored, spec=dataclasses.replace(stored.spec, inplane_spacing=rng))
        entries = _cases(folder, args.volumes)
        cfg = PredictConfig()
        for mm in (None,) + tuple(pixels):
            scores = {"stored": [], "range": []}
            secs = {"stored": [], "range": []}
            for image_path, label_path, _ in entries:
                image, labels = read_volume(image_path), read_volume(label_path)
                if ds == "acdc":  # a real pixel size for ACDC's nominal 1 mm
                    header = {k: v for k, v in dict(image.header).items() if k != SPACING_NOMINAL}
                    image = dataclasses.replace(image, spacing=(image.spacing[0], ACDC_TRUE_MM, ACDC_TRUE_MM),
                                                header=header)
                gt = np.asarray(labels.data)
                if mm is not None:
                    image, gt = _at_pixel(image, labels, mm)
                classes = [int(c) for c in np.unique(gt) if c > 0]
                for arm, model in (("stored", stored), ("range", ranged)):
                    t0 = time.perf_counter()
                    pred = predict(model, image, cfg).labels
                    secs[arm].append(time.perf_counter() - t0)
                    scores[arm].append(_dice(pred, gt, classes))
            f = inplane_factors(ranged, image)
            row = {"dataset": ds, "model": ref, "pixel_mm": mm, "range_mm": list(rng),
                   "volumes": len(entries), "factor_last": list(f),
                   **{f"dice_{a}": float(np.mean(v)) for a, v in scores.items()},
                   **{f"per_volume_{a}": v for a, v in scores.items()},
                   **{f"seconds_{a}": float(np.mean(v)) for a, v in secs.items()}}
            rows.append(row)
            label = "as published" if mm is None else f"{mm:g}"
            print(f"| {ds} | {label} | {len(entries)} | {row['dice_stored']:.3f} | {row['dice_range']:.3f} | "
                  f"{rng[0]:.2f}-{rng[1]:.2f} | {row['seconds_stored']:.2f} / {row['seconds_range']:.2f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
