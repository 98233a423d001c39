"""How good are the pseudo-labels that ``attnseg pseudolabel`` made from scribbles? Scores a folder
of them against the dataset's expert masks (used here only to measure, never to make or select
anything): per case, the share of voxels labelled and the mean Dice over the foreground classes
on the labelled voxels; also per class.

    .venv/bin/python benchmarks/bench_pseudolabels.py /tmp/attnseg_real/acdc_train \\
        /tmp/attnseg_real/acdc_pseudo [--ignore 255] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path, help="Decathlon folder with labelsTr/ (the expert masks)")
    parser.add_argument("pseudo", type=Path, help="folder of pseudo-label files")
    parser.add_argument("--ignore", type=int, default=255)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from napari_attnseg.benchmark.stats import bootstrap_ci
    from napari_attnseg.io import read_volume

    meta = json.loads((args.dataset / "dataset.json").read_text())
    classes = sorted(int(k) for k in meta["labels"] if int(k) > 0)
    rows = []
    for path in sorted(args.pseudo.glob("*.nii.gz")):
        pl = np.asarray(read_volume(path).data)
        gt = np.asarray(read_volume(args.dataset / "labelsTr" / path.name).data)
        keep = pl != args.ignore
        per = {}
        for c in classes:
            a, b = (pl == c) & keep, (gt == c) & keep
            s = a.sum() + b.sum()
            per[c] = float("nan") if s == 0 else float(2 * (a & b).sum() / s)
        fg = (gt > 0)
        rows.append({"case": path.name, "labelled": float(keep.mean()),
                     "foreground_labelled": float(keep[fg].mean()) if fg.any() else float("nan"),
                     "dice": float(np.nanmean(list(per.values()))), **{f"dice_{c}": per[c] for c in classes}})
    dice = np.array([r["dice"] for r in rows])
    _, lo, hi = bootstrap_ci(dice)
    print(f"{len(rows)} cases: mean Dice on labelled voxels {dice.mean():.3f} [{lo:.3f}, {hi:.3f}]; "
          f"labelled {np.mean([r['labelled'] for r in rows]):.3f} of all voxels, "
          f"{np.nanmean([r['foreground_labelled'] for r in rows]):.3f} of the expert foreground")
    for c in classes:
        print(f"  class {c} ({meta['labels'][str(c)]}): {np.nanmean([r[f'dice_{c}'] for r in rows]):.3f}")
    if args.json:
        args.json.write_text(json.dumps({"cases": rows, "mean_dice": float(dice.mean()), "ci": [lo, hi]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
