"""Random-walker pseudo-labels of ACDC's scribbles at several confidence thresholds: Dice against
the expert masks on the labelled voxels, and the share of the expert foreground (and of all
voxels) that gets a label. Every 12th case of the training folder (11 volumes); the masks are
only used to measure. The walk is the one ``attnseg pseudolabel`` runs (one walk per slice,
thresholded at each level).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pseudolabel_threshold.py [TRAIN_FOLDER]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from napari_attnseg.interactive.pseudolabels import PseudoLabelParams, _walk
from napari_attnseg.io import read_volume

THRESHOLDS = (0.0, 0.4, 0.5, 0.6, 0.7, 0.8)
IGNORE, OUT = 4, 255


def main() -> int:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/attnseg_real/acdc_train")
    cases = sorted(p.name for p in (folder / "imagesTr").glob("*.nii.gz"))[::12]
    params = PseudoLabelParams()
    dice = {t: [] for t in THRESHOLDS}
    fg_cov = {t: [] for t in THRESHOLDS}
    all_cov = {t: [] for t in THRESHOLDS}
    for name in cases:
        img = read_volume(folder / "imagesTr" / name).data
        lab = np.asarray(read_volume(folder / "labelsTr" / name).data)
        scr = np.asarray(read_volume(folder / "scribblesTr" / name).data)
        out = {t: np.full(lab.shape, OUT, np.uint8) for t in THRESHOLDS}
        for z in range(img.shape[0]):
            walk = _walk(np.asarray(img[z]), scr[z], IGNORE, params, (1.0, 1.0))
            if walk is None:
                continue
            present, prob = walk
            best, conf = present[prob.argmax(axis=0)], prob.max(axis=0)
            for t in THRESHOLDS:
                out[t][z][conf >= t] = best[conf >= t]
        for t in THRESHOLDS:
            o = out[t]
            keep = o != OUT
            dice[t].append(np.mean([2 * ((o == c) & (lab == c) & keep).sum()
                                    / (((o == c) & keep).sum() + ((lab == c) & keep).sum()) for c in (1, 2, 3)]))
            fg_cov[t].append(keep[lab > 0].mean())
            all_cov[t].append(keep.mean())
    print(f"{len(cases)} volumes")
    for t in THRESHOLDS:
        print(f"{t}: Dice on labelled {np.mean(dice[t]):.3f}, foreground labelled {np.mean(fg_cov[t]):.3f}, "
              f"all labelled {np.mean(all_cov[t]):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
