"""Random-walker pseudo-labels of ACDC's scribbles at several confidence thresholds: Dice against
the expert masks on the labelled voxels, and the share of the expert foreground (and of all
voxels) that gets a label. Every 12th case of the training folder (11 volumes); the masks are
only used to measure.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pseudolabel_threshold.py [TRAIN_FOLDER]
"""
import sys
import numpy as np, nibabel as nib, warnings
from pathlib import Path
from skimage.segmentation import random_walker
from napari_attnseg.interactive.pseudolabels import _normalize
warnings.simplefilter('ignore')
D = Path(sys.argv[1] if len(sys.argv) > 1 else '/tmp/attnseg_real/acdc_train')
cases = sorted(p.name for p in (D/'imagesTr').glob('*.nii.gz'))[::12]
T = (0.0, 0.4, 0.5, 0.6, 0.7, 0.8)
acc = {t: [[], [], []] for t in T}
unscrib = []
for name in cases:
    img = nib.load(D/'imagesTr'/name).get_fdata().astype(np.float32)
    lab = np.asarray(nib.load(D/'labelsTr'/name).dataobj).astype(np.uint8)
    scr = np.asarray(nib.load(D/'scribblesTr'/name).dataobj).astype(np.uint8)
    fgtot = (lab > 0).sum(); fg_in_unwalked = 0
    per = {t: [np.zeros_like(lab) + 255] for t in T}
    for z in range(img.shape[2]):
        s = scr[..., z]
        present = np.unique(s[s != 4])
        if present.size < 2:
            fg_in_unwalked += (lab[..., z] > 0).sum(); continue
        m = np.zeros(s.shape, np.int32)
        for k, c in enumerate(present, 1): m[s == c] = k
        p = random_walker(_normalize(img[..., z]), m, beta=130, mode='cg_j', tol=1e-3, return_full_prob=True)
        best = present[p.argmax(0)]; conf = p.max(0)
        for t in T:
            o = per[t][0][..., z]; o[conf >= t] = best[conf >= t]
    unscrib.append(fg_in_unwalked / fgtot)
    for t in T:
        o = per[t][0]; keep = o != 255
        d = np.mean([2*((o==c)&(lab==c)&keep).sum()/(((o==c)&keep).sum()+((lab==c)&keep).sum()) for c in (1,2,3)])
        acc[t][0].append(d); acc[t][1].append(keep[lab > 0].mean()); acc[t][2].append(keep.mean())
print(len(cases), 'fg in slices the walk skips', np.mean(unscrib).round(3))
for t in T: print(t, 'dice', np.mean(acc[t][0]).round(3), 'fg cov', np.mean(acc[t][1]).round(3), 'all cov', np.mean(acc[t][2]).round(3))
