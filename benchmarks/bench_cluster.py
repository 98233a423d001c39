"""A folder segmented serially vs over a local Dask cluster, side by side in one run.

Run:  python benchmarks/bench_cluster.py [--cases 4] [--slices 16] [--workers 2] [--rounds 1]
                                         [--model ct-phantom-2d]

Writes ``--cases`` CT phantoms (``--slices`` x 128 x 128) to a temporary folder, then times whole
``attnseg predict IN_DIR -o OUT_DIR`` commands, each a fresh process (imports, model loading and,
for the cluster, starting it included): serially with ``--threads 1`` and with ``--scheduler
local --workers N`` (one PyTorch thread per worker), the two in turn each round. Prints the
median wall times, the ratio serial / cluster (> 1: the cluster is faster), the machine's CPU
count and load, and checks that both runs wrote the same labels.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_attnseg.io import read_volume, write_volume  # noqa: E402
from napari_attnseg.sample.phantoms import phantom_dataset  # noqa: E402


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=4)
    ap.add_argument("--slices", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--model", default="ct-phantom-2d")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_cluster_") as tmp:
        tmp = Path(tmp)
        src = tmp / "in"
        src.mkdir()
        for k, (image, _) in enumerate(phantom_dataset("ct", opts.cases, seed=3,
                                                       shape=(opts.slices, 128, 128))):
            write_volume(image, src / f"case_{k}.nii.gz")
        cli = [sys.executable, "-m", "napari_attnseg.cli", "predict", str(src), "--model",
               opts.model, "-q", "--overwrite", "--threads", "1"]
        runs = {"serial": [], "cluster": []}
        extra = {"serial": [], "cluster": ["--scheduler", "local", "--workers",
                                           str(opts.workers)]}
        for r in range(opts.rounds):
            order = ("serial", "cluster") if r % 2 == 0 else ("cluster", "serial")
            for kind in order:
                runs[kind].append(timed(cli + ["-o", str(tmp / kind)] + extra[kind]))
        for k in range(opts.cases):
            a = read_volume(tmp / "serial" / f"case_{k}.nii.gz").data
            b = read_volume(tmp / "cluster" / f"case_{k}.nii.gz").data
            if not np.array_equal(a, b):
                sys.exit(f"case_{k}: the cluster's labels differ from the serial run's")
    serial, cluster = (statistics.median(runs[k]) for k in ("serial", "cluster"))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{opts.cases} cases of {opts.slices}x128x128, {opts.model}, {os.cpu_count()} CPUs, "
          f"load {load:.2f}, median of {opts.rounds}: serial (--threads 1) {serial:.1f} s, "
          f"--scheduler local --workers {opts.workers} {cluster:.1f} s, "
          f"ratio serial/cluster {serial / cluster:.2f} (labels identical)")


if __name__ == "__main__":
    main()
