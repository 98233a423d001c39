"""Inference precision on real scans: fp32 against bf16 autocast, side by side in one run.

Run:  python benchmarks/bench_precision.py [--threads 2] [--volumes 4] [--rounds 3]

For each shipped real 3D-scan model (ACDC, CHAOS, OpenKBP) and its first test volumes (the shipped
models' held-out split, ``napari_attnseg.benchmark.splits``), ``predict`` runs in fp32 and in bf16,
alternating, ``--rounds`` times each; prints the median seconds per volume, the ratio bf16/fp32,
the voxel agreement of the labels and the mean Dice difference against the reference masks. It
also says what ``precision="auto"`` (the default) resolves to on this machine. Data from
``ATTNSEG_DATA`` or ``../shared/data``; a dataset that is absent is skipped with a reason.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_attnseg.benchmark.splits import held_out_entries  # noqa: E402

MODELS = {"acdc": "acdc-cardiac-mr-2d", "chaos_mr_t2": "chaos-abdomen-mr-2d",
          "openkbp_ct": "openkbp-headneck-ct-2d"}


def _dice_mean(pred: np.ndarray, gt: np.ndarray, classes: list[int]) -> float:
    scores = []
    for c in classes:
        p, g = pred == c, gt == c
        if p.any() or g.any():
            scores.append(2.0 * np.logical_and(p, g).sum() / (p.sum() + g.sum()))
    return float(np.mean(scores)) if scores else float("nan")


def _cases(folder: Path, n: int) -> list[tuple[Path, Path, dict]]:
    entries = held_out_entries(folder)[:n]
    return [(folder / e["image"], folder / e["label"], {}) for e in entries]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get(
        "ATTNSEG_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--volumes", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--datasets", nargs="*", default=list(MODELS))
    args = ap.parse_args(argv)

    import torch

    from napari_attnseg.inference.device import cpu_has_native_bf16, resolve_precision
    from napari_attnseg.inference.predictor import PredictConfig, predict
    from napari_attnseg.io import read_volume
    from napari_attnseg.model.checkpoint import load_model
    from napari_attnseg.model.registry import ModelRegistry

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads; native bf16 on this CPU: "
          f"{cpu_has_native_bf16()}; precision 'auto' -> {resolve_precision('auto', 'cpu')}")
    print("| model | volumes | fp32 s/volume | bf16 s/volume | bf16 / fp32 | label agreement |"
          " mean Dice fp32 | mean Dice bf16 |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.datasets:
        folder = Path(args.data) / name
        if not folder.is_dir():
            print(f"skipped {name}: {folder} is absent")
            continue
        model = load_model(ModelRegistry().resolve(MODELS[name]))
        classes = [int(k) for k in model.spec.label_names if int(k) > 0]
        times = {"fp32": [], "bf16": []}
        agree, dice = [], {"fp32": [], "bf16": []}
        for image_path, label_path, kw in _cases(folder, args.volumes):
            image = read_volume(image_path, **kw)
            gt = np.asarray(read_volume(label_path, **kw).data)
            predict(model, image, PredictConfig(precision="fp32"))  # warm: first-call costs out
            labels = {}
            for _ in range(args.rounds):
                for precision in ("fp32", "bf16"):
                    t0 = time.perf_counter()
                    labels[precision] = predict(model, image, PredictConfig(precision=precision)).labels
                    times[precision].append(time.perf_counter() - t0)
            agree.append(float((labels["fp32"] == labels["bf16"]).mean()))
            for precision in dice:
                dice[precision].append(_dice_mean(labels[precision], gt, classes))
        f32, b16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
        print(f"| {MODELS[name]} | {len(agree)} | {f32:.2f} | {b16:.2f} | {b16 / f32:.2f} | "
              f"{100 * min(agree):.2f} % (min) | {np.nanmean(dice['fp32']):.4f} | "
              f"{np.nanmean(dice['bf16']):.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
