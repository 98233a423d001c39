"""Dense-CRF benchmark: our ``refine`` against a direct pydensecrf call on the same arrays and
parameters, measured side by side in the same run (median of ``--repeat`` runs).

Prints: time ratios ours/direct for 256², 512², a 3D volume, a per-slice (2D mode) stack using
both cores; boundary band vs full volume (speed and Dice); 512² preview time; peak bytes per
voxel (RSS high-water mark in a fresh subprocess, which sees C++ allocations).

    python benchmarks/bench_crf.py [--repeat 3] [--small]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np

from napari_attnseg.crf import CRFParams, refine
from napari_attnseg.crf.dense_crf import normalize_intensity, shutdown_pool

P = CRFParams(sxy_gaussian_mm=3, gaussian_weight=3, sxy_bilateral_mm=20, srgb_bilateral=13,
              bilateral_weight=5, iterations=5, workers=1)


def direct(probs, norm, spacing, prm):
    """pydensecrf as its README uses it (utils features, lattice build included)."""
    import pydensecrf.densecrf as d
    from pydensecrf import utils as u

    shape = probs.shape[1:]
    crf = d.DenseCRF(int(np.prod(shape)), probs.shape[0])
    crf.setUnaryEnergy(u.unary_from_softmax(probs))
    crf.addPairwiseEnergy(u.create_pairwise_gaussian(
        [prm.sxy_gaussian_mm / s for s in spacing], shape), compat=prm.gaussian_weight)
    crf.addPairwiseEnergy(u.create_pairwise_bilateral(
        [prm.sxy_bilateral_mm / s for s in spacing], prm.srgb_bilateral, norm),
        compat=prm.bilateral_weight)
    return np.array(crf.inference(prm.iterations)).reshape(probs.shape)


def scene(shape, radius_frac=0.3, seed=0):
    rng = np.random.default_rng(seed)
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    r2 = sum(((g - s / 2) / (radius_frac * max(shape))) ** 2 for g, s in zip(grids, shape))
    gt = r2 <= 1
    img = (gt * 100.0 + rng.normal(0, 40, shape)).astype(np.float32)
    fg = np.clip(0.5 + 0.3 * (2 * gt - 1) + rng.normal(0, 0.3, shape), 0.01, 0.99)
    return gt, img, fg.astype(np.float32)


def dice(a, b):
    a, b = a.astype(bool), b.astype(bool)
    return 2 * np.count_nonzero(a & b) / max(a.sum() + b.sum(), 1)


def timeit(fn, repeat):
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def compare(label, shape, spacing, prm, repeat, per_slice=False):
    gt, img, fg = scene(shape)
    probs = np.stack([1 - fg, fg])
    norm = normalize_intensity(img)
    if per_slice:
        def ref():
            return np.stack([direct(probs[:, z], norm[z], spacing[1:], prm)
                             for z in range(shape[0])], axis=1)
    else:
        def ref():
            return direct(probs, norm, spacing, prm)
    refine(fg, img, spacing, prm)  # warm-up (process pool start-up paid once)
    t_o, t_r = [], []
    for _ in range(repeat):  # interleaved, so machine load hits both alike
        t = time.perf_counter()
        ours = refine(fg, img, spacing, prm)
        t_o.append(time.perf_counter() - t)
        t = time.perf_counter()
        q = ref()
        t_r.append(time.perf_counter() - t)
    t_ours, t_ref = statistics.median(t_o), statistics.median(t_r)
    same = np.array_equal(ours.probabilities, q.astype(np.float32))
    print(f"{label:<34} direct {t_ref:7.3f} s  ours {t_ours:7.3f} s  ratio {t_ours / t_ref:5.2f}"
          f"  identical={same}  ({ours.params.mode}, workers={prm.workers})")


def band_scene(shape, radius_frac=0.12, seed=1):
    """A small object in a large volume; a network that errs only near the boundary: logit =
    signed distance (voxels) / 1.5 + noise, so voxels far from the boundary are confident."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    gt, _, _ = scene(shape, radius_frac, seed)
    img = (gt * 100.0 + rng.normal(0, 15, shape)).astype(np.float32)
    sd = ndimage.distance_transform_edt(gt) - ndimage.distance_transform_edt(~gt)
    logit = sd / 1.5 + rng.normal(0, 1.0, shape)
    fg = (1 / (1 + np.exp(-logit))).astype(np.float32)
    return gt, img, fg


def band_vs_full(shape, repeat):
    gt, img, fg = band_scene(shape)
    full_p = CRFParams(mode="3d", workers=1)  # the package defaults (small kernels)
    band_p = CRFParams(**{**full_p.to_dict(), "band_mm": 3.0})
    t_full, full = timeit(lambda: refine(fg, img, (1, 1, 1), full_p), repeat)
    t_band, band = timeit(lambda: refine(fg, img, (1, 1, 1), band_p), repeat)
    d_full, d_band = dice(full.labels, gt), dice(band.labels, gt)
    print(f"band vs full {shape}: full {t_full:.3f} s Dice {d_full:.4f}; band {t_band:.3f} s "
          f"Dice {d_band:.4f}; speed-up {t_full / t_band:.1f}x, |dDice| {abs(d_full - d_band):.4f}"
          f" (input Dice {dice(fg > 0.5, gt):.4f}; target >= 3x at |dDice| <= 0.005)")


def preview(repeat):
    gt, img, fg = scene((512, 512))
    prm = CRFParams(**{**P.to_dict(), "mode": "2d"})
    t, _ = timeit(lambda: refine(fg, img, (0.7, 0.7), prm), repeat)
    print(f"preview 512x512 slice: {t:.3f} s (target < 0.3 s)")


MEM_CHILD = """
import json, sys, threading, time, numpy as np, psutil
sys.path.insert(0, {root!r})
from benchmarks.bench_crf import scene, direct, P
from napari_attnseg.crf import CRFParams, refine
from napari_attnseg.crf.dense_crf import normalize_intensity
import pydensecrf.densecrf
shape = tuple({shape!r})
gt, img, fg = scene(shape)
probs = np.stack([1 - fg, fg]); norm = normalize_intensity(img)
proc = psutil.Process(); base = proc.memory_info().rss; peak = [base]; stop = [False]
def watch():
    while not stop[0]:
        peak[0] = max(peak[0], proc.memory_info().rss); time.sleep(0.002)
t = threading.Thread(target=watch); t.start()
if {which!r} == "ours":
    refine(fg, img, (1, 1, 1), CRFParams(**{{**P.to_dict(), "mode": "3d"}}))
else:
    direct(probs, norm, (1, 1, 1), P)
stop[0] = True; t.join()
print(json.dumps({{"bpv": (peak[0] - base) / int(np.prod(shape))}}))
"""


def memory(shape):
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    out = {}
    for which in ("direct", "ours"):
        code = MEM_CHILD.format(root=root, shape=list(shape), which=which)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True)
        out[which] = json.loads(r.stdout.strip().splitlines()[-1])["bpv"]
    print(f"peak RSS increase per voxel, 3D {shape}: direct {out['direct']:.0f} B, ours "
          f"{out['ours']:.0f} B (sampled RSS above the inputs; target <= 200 B)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--small", action="store_true", help="smaller 3D sizes")
    a = ap.parse_args()
    r = a.repeat
    vol = (32, 96, 96) if a.small else (64, 128, 128)
    print(f"machine: {len(__import__('os').sched_getaffinity(0))} cores; median of {r} runs")
    compare("2D 256x256", (256, 256), (1, 1), P, r)
    compare("2D 512x512", (512, 512), (1, 1), P, r)
    compare(f"3D {vol}", vol, (1, 1, 1), CRFParams(**{**P.to_dict(), "mode": "3d"}), r)
    stack = (8, 256, 256) if a.small else (16, 256, 256)
    for w in (1, 2):
        compare(f"2D per slice {stack}", stack, (3, 1, 1),
                CRFParams(**{**P.to_dict(), "mode": "2d", "workers": w}), r, per_slice=True)
    band_vs_full((64, 96, 96) if a.small else (96, 96, 96), r)
    preview(r)
    memory(vol)
    shutdown_pool()


if __name__ == "__main__":
    main()
