"""ONNX Runtime vs the fused PyTorch path, side by side in one run.

Run:  python benchmarks/bench_onnx.py [--model ct-phantom-2d] [--threads 1] [--rounds 5]
                                      [--scan sample_data/ct_phantom.nii.gz] [--out /tmp/bench_onnx.md]

Measures (medians over rounds, the two backends interleaved round by round so that machine load
drifts hit both alike, each warmed up first):
  * one forward pass of a batch-1 slice at 128x128 (the sample CT), 256x256 and 512x512: PyTorch
    with batch-norm folded, channels-last, inference mode (``fuse_for_inference``) vs ONNX
    Runtime (all graph optimizations, the same thread count);
  * the whole sample scan end to end through ``predict`` (normalization, windows, blending,
    labels) with each backend, and their voxel agreement.
Prints each pair and the ratio PyTorch / ONNX Runtime (> 1: ONNX Runtime faster) and writes a
Markdown table with the command, the machine (CPU model, threads, load average) to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_attnseg.inference.onnx_backend import export_onnx, load_onnx_file  # noqa: E402
from napari_attnseg.inference.predictor import predict  # noqa: E402
from napari_attnseg.io import read_volume  # noqa: E402
from napari_attnseg.model.checkpoint import load_model  # noqa: E402
from napari_attnseg.model.registry import ModelRegistry  # noqa: E402


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown CPU"


def interleaved(fns: dict[str, callable], rounds: int, warm: int = 2) -> dict[str, float]:
    """Median seconds of each function, called in turn once per round (after ``warm`` calls)."""
    for fn in fns.values():
        for _ in range(warm):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="ct-phantom-2d")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--scan", default=str(ROOT / "sample_data" / "ct_phantom.nii.gz"))
    ap.add_argument("--out", default="/tmp/bench_onnx.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(ModelRegistry().resolve(args.model))
    model.network.fuse_for_inference()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model, Path(tmp) / "m.onnx")
        ort_model = load_onnx_file(onnx_path, threads=args.threads)
        rows = []
        for side in (128, 256, 512):
            x = torch.randn(1, 1, side, side)

            def run_torch(x=x):
                with torch.inference_mode():
                    model.network(x)

            def run_ort(x=x):
                ort_model.network(x)

            med = interleaved({"torch": run_torch, "ort": run_ort}, args.rounds)
            rows.append((f"forward 1x1x{side}x{side}", med["torch"], med["ort"], ""))
            print(f"{rows[-1][0]}: torch {med['torch'] * 1e3:.1f} ms, onnxruntime "
                  f"{med['ort'] * 1e3:.1f} ms, ratio {med['torch'] / med['ort']:.2f}")
        vol = read_volume(args.scan)
        results = {}

        def e2e(name, m):
            def fn():
                results[name] = predict(m, vol)
            return fn

        med = interleaved({"torch": e2e("torch", model), "ort": e2e("ort", ort_model)},
                          max(3, args.rounds // 2), warm=1)
        agree = float(np.mean(results["torch"].labels == results["ort"].labels))
        label = f"predict {Path(args.scan).name} {'x'.join(map(str, vol.shape))}"
        rows.append((label, med["torch"], med["ort"], f"{agree * 100:.3f} % voxels agree"))
        print(f"{label}: torch {med['torch']:.3f} s, onnxruntime {med['ort']:.3f} s, ratio "
              f"{med['torch'] / med['ort']:.2f}; {agree * 100:.3f} % voxel agreement")
    cmd = "python benchmarks/bench_onnx.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    import onnxruntime

    lines = [f"### ONNX Runtime vs fused PyTorch ({args.model}, {args.threads} thread(s))", "",
             f"Command: `{cmd.strip()}`  ",
             f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, load average {load} "
             f"(1/5/15 min) at the end; torch {torch.__version__}, onnxruntime "
             f"{onnxruntime.__version__}", "",
             "| what | PyTorch (fused) | ONNX Runtime | ratio torch/ORT | note |",
             "|---|---|---|---|---|"]
    for what, t, o, note in rows:
        unit, k = ("ms", 1e3) if t < 1 else ("s", 1.0)
        lines.append(f"| {what} | {t * k:.1f} {unit} | {o * k:.1f} {unit} | {t / o:.2f} | {note} |")
    lines += ["", "Medians over interleaved rounds (both warmed up first). Ratio > 1: ONNX "
              "Runtime faster."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
