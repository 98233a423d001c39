"""The 2.5D OpenKBP model at other slice spacings: its neighbouring-slice channels were trained
at 2.5 mm; a scanner may write 1.25 or 5 mm slices.

Run:  python benchmarks/bench_slice_spacing.py [--threads 2] [--volumes 4]

The first held-out test patients resampled along z (linear; the masks by nearest neighbour) to
1.25 and 5 mm slices, segmented by the default ``openkbp-headneck-ct-2d``; mean Dice over the
organs in the reference, then patients. Data from ``ATTNSEG_DATA`` or ``../shared/data``
(skipped with a reason when absent).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_precision import _cases, _dice_mean  # noqa: E402  (the same folder)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("ATTNSEG_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--volumes", type=int, default=4)
    args = ap.parse_args(argv)
    folder = Path(args.data) / "openkbp_ct"
    if not folder.is_dir():
        print(f"skipped: {folder} is absent")
        return 0
    import torch
    from scipy import ndimage

    from napari_attnseg.inference.predictor import PredictConfig, predict
    from napari_attnseg.io import read_volume
    from napari_attnseg.model.checkpoint import load_model
    from napari_attnseg.model.registry import ModelRegistry

    torch.set_num_threads(args.threads)
    model = load_model(ModelRegistry().resolve("openkbp-headneck-ct-2d"))
    print(f"{model.model_id}, {args.volumes} held-out patients")
    for zoom in (1.0, 2.0, 0.5):
        scores, spacings = [], []
        for image_path, label_path, _ in _cases(folder, args.volumes):
            image, labels = read_volume(image_path), read_volume(label_path)
            data = ndimage.zoom(np.asarray(image.data, np.float32), (zoom, 1, 1), order=1)
            gt = ndimage.zoom(np.asarray(labels.data), (zoom, 1, 1), order=0)
            volume = dataclasses.replace(image, data=data,
                                         spacing=(image.spacing[0] / zoom,) + tuple(image.spacing[1:]))
            spacings.append(volume.spacing[0])
            classes = [int(c) for c in np.unique(gt) if c > 0]
            scores.append(_dice_mean(predict(model, volume, PredictConfig()).labels, gt, classes))
        what = {1.0: "as published", 2.0: "half", 0.5: "double"}[zoom]
        print(f"slice spacing {what} ({min(spacings):g}-{max(spacings):g} mm): mean Dice "
              f"{np.mean(scores):.3f} ({', '.join(f'{s:.3f}' for s in scores)})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
