"""Whole-volume CPU inference time by windows per forward pass (``PredictConfig.batch_size``), side
by side in one process, on real test volumes of the shipped models.

    .venv/bin/python benchmarks/bench_cpu_batch.py [--threads 2] [--rounds 3] [--batches 1 4 8]

For each model: the first test volume of its dataset (``benchmark.splits``), every batch size
run in turn per round (so load drifts hit all alike), median seconds, the ratio to batch 1 and
whether the labels are identical (the default CPU batch: ``PredictConfig.batch_for``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = (("acdc", "acdc-cardiac-mr-2d"), ("chaos_mr_t2", "chaos-abdomen-mr-2d"),
          ("openkbp_ct", "openkbp-headneck-ct-2d"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--models", nargs="+", default=None, help="DATASET=MODEL pairs (default: the shipped ones)")
    args = ap.parse_args()
    import os

    import torch

    from napari_attnseg.benchmark.splits import split_subjects
    from napari_attnseg.inference.predictor import PredictConfig, predict
    from napari_attnseg.io import read_volume
    from napari_attnseg.model.checkpoint import load_model
    from napari_attnseg.model.registry import ModelRegistry

    torch.set_num_threads(args.threads)
    data = Path(args.data or os.environ.get("ATTNSEG_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    pairs = [tuple(p.split("=", 1)) for p in args.models] if args.models else MODELS
    print(f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}")
    print("| model | volume | " + " | ".join(f"batch {b} (s)" for b in args.batches) + " | best / batch 1 | labels equal |")
    print("|---|---|" + "---|" * (len(args.batches) + 2))
    for dataset, ref in pairs:
        folder = data / dataset
        meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
        _, test = split_subjects(folder)
        case = next(e["image"] for e in meta["training"] if any(t in e["image"] for t in test[:1]))
        vol = read_volume(folder / case)
        model = load_model(ModelRegistry().resolve(ref))
        times: dict[int, list[float]] = {b: [] for b in args.batches}
        labels: dict[int, np.ndarray] = {}
        predict(model, vol, PredictConfig(batch_size=args.batches[0]))  # warm-up
        for _ in range(args.rounds):
            for b in args.batches:
                t0 = time.perf_counter()
                res = predict(model, vol, PredictConfig(batch_size=b))
                times[b].append(time.perf_counter() - t0)
                labels[b] = res.labels
        med = {b: statistics.median(t) for b, t in times.items()}
        base = med[args.batches[0]]
        same = all(np.array_equal(labels[b], labels[args.batches[0]]) for b in args.batches)
        print(f"| {ref} | {Path(case).name} {tuple(vol.shape)} | " + " | ".join(f"{med[b]:.3f}" for b in args.batches)
              + f" | {min(med.values()) / base:.2f} | {'yes' if same else 'no'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
