"""Benchmark the metrics on a 256³ pair (sphere + perturbed, shifted sphere) against MONAI,
measured side by side in the same run; prints medians (ms), ratios and value agreement.

    python benchmarks/bench_metrics.py [--size 256] [--repeats 5]

Ratios < 1 mean napari-attnseg is faster. MONAI gets one-hot float tensors (B=1, C=1) and
computes each metric in its own call (as a user would); we time ``overlap_metrics`` (all five
overlap metrics) and ``surface_distances`` (HD, HD95, ASSD and directed ones in one pass).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def masks(n: int) -> tuple[np.ndarray, np.ndarray]:
    c = n / 2
    z, y, x = np.ogrid[:n, :n, :n]
    r = 0.27 * n
    a = (z - c) ** 2 + (y - c) ** 2 + (x - c) ** 2 < r ** 2
    bump = 1.0 + 0.05 * np.sin(z / 9.0) * np.cos(x / 7.0) + 0.03 * np.sin(y / 5.0)
    b = (z - c + 3) ** 2 + (y - c - 2) ** 2 + (x - c) ** 2 < (r * 1.02 * bump) ** 2
    return a, b


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from napari_attnseg.metrics import overlap_metrics, surface_distances

    a, b = masks(args.size)
    au, bu = a.astype(np.uint8), b.astype(np.uint8)
    print(f"masks {a.shape}: |pred| = {a.sum()}, |gt| = {b.sum()}")
    t_ov, ov = timed(lambda: overlap_metrics(a, b), args.repeats * 4)
    t_ov8, _ = timed(lambda: overlap_metrics(au, bu), args.repeats * 4)
    print(f"overlap metrics (5 of them): bool {t_ov * 1e3:.2f} ms, uint8 {t_ov8 * 1e3:.2f} ms")
    try:
        import torch
        from monai.metrics import (
            compute_average_surface_distance,
            compute_dice,
            compute_hausdorff_distance,
        )
    except ImportError:
        monai = False
        print("MONAI not installed: no reference timings")
    else:
        monai = True
        torch.set_num_threads(max(1, torch.get_num_threads()))
        A = torch.from_numpy(a)[None, None].float()
        B = torch.from_numpy(b)[None, None].float()
        t_md, md = timed(lambda: compute_dice(A, B), args.repeats)
        print(f"MONAI compute_dice {t_md * 1e3:.1f} ms; ratio ours/MONAI {t_ov / t_md:.3f}; "
              f"|Δdice| {abs(ov['dice'] - float(md)):.2e}")
    # surface metrics: every method and spacing timed in turn within each repeat (interleaved,
    # so that load from other processes affects all of them alike); medians reported
    spacings = ((1.0, 1.0, 1.0), (3.0, 0.8, 0.8))
    times: dict[tuple, list[float]] = {}
    values: dict[tuple, object] = {}

    def run(key, fn):
        t0 = time.perf_counter()
        values[key] = fn()
        times.setdefault(key, []).append(time.perf_counter() - t0)

    for _ in range(args.repeats):
        for sp in spacings:
            run(("ours", sp), lambda: surface_distances(a, b, sp))
            if monai:
                kw = dict(include_background=True, spacing=list(sp))
                run(("hd95", sp), lambda: compute_hausdorff_distance(A, B, percentile=95, **kw))
                run(("assd", sp),
                    lambda: compute_average_surface_distance(A, B, symmetric=True, **kw))
    med = {k: statistics.median(v) for k, v in times.items()}
    for sp in spacings:
        s = values[("ours", sp)]
        t_s = med[("ours", sp)]
        line = f"spacing {sp}: ours HD95+ASSD+HD {t_s * 1e3:.0f} ms"
        if monai:
            t_h, t_a = med[("hd95", sp)], med[("assd", sp)]
            h, m = float(values[("hd95", sp)]), float(values[("assd", sp)])
            line += (f"; MONAI HD95 {t_h * 1e3:.0f} ms + ASSD {t_a * 1e3:.0f} ms; ratio ours/"
                     f"(HD95+ASSD) {t_s / (t_h + t_a):.3f}, ours/HD95 alone {t_s / t_h:.3f}; "
                     f"|Δhd95| {abs(s['hd95'] - h):.1e} mm, |Δassd| {abs(s['assd'] - m):.1e} mm")
        print(line, f"(hd95 {s['hd95']:.4f}, assd {s['assd']:.4f} mm)")
    iso, aniso = spacings
    print(f"anisotropic / isotropic time (ours): {med[('ours', aniso)] / med[('ours', iso)]:.3f}")
    if monai:
        r_iso = med[("ours", iso)] / (med[("hd95", iso)] + med[("assd", iso)])
        r_an = med[("ours", aniso)] / (med[("hd95", aniso)] + med[("assd", aniso)])
        print(f"ratio vs MONAI, anisotropic / isotropic: {r_an / r_iso:.3f}")

if __name__ == "__main__":
    main()
