"""ONNX Runtime vs the fused PyTorch path, end to end, side by side in one run, per shipped model.

Run:  python benchmarks/bench_onnx.py [--models ct-phantom-2d acdc-cardiac-mr-2d ...]
                                      [--threads 2 1] [--rounds 7] [--cli-rounds N]
                                      [--forward] [--out /tmp/bench_onnx.md]

For each model (default: every shipped model whose case is here: ct-phantom-2d on the sample CT;
acdc-cardiac-mr-2d, hc18-ultrasound-2d, openkbp-headneck-ct-2d on one case of ../shared/data)
and each thread count:
  * export: the one-time ONNX export into an empty cache (export, check against PyTorch, atomic
    write), and opening that cache entry again as a new process does (session + check);
  * steady state: ``predict`` of the whole case in this process with ``backend="torch"`` and
    ``backend="onnxruntime"`` (both warmed up; rounds interleaved so load drifts hit both
    alike; medians), and their voxel agreement;
  * per process: ``attnseg predict CASE -o OUT --backend torch`` vs ``--backend auto`` (cache
    filled), wall time of the whole command (interpreter start, imports, model load, session,
    prediction, writing), interleaved, medians; this is what a user of the command waits for;
  * with ``--forward``: one forward pass of a 1x1x256x256 slice in each runtime.
Ratios are PyTorch / ONNX Runtime (> 1: ONNX Runtime faster). Writes a Markdown table with the
command, the machine (CPU model, load average before and after) to ``--out``.
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

from napari_attnseg.inference import backend as be  # noqa: E402
from napari_attnseg.inference.predictor import PredictConfig, predict  # noqa: E402
from napari_attnseg.io import read_volume  # noqa: E402
from napari_attnseg.model.checkpoint import load_model  # noqa: E402
from napari_attnseg.model.registry import ModelRegistry  # noqa: E402

DATA = Path(os.environ.get("ATTNSEG_DATA", ROOT.parent / "shared" / "data"))
#: model -> (case, read_volume keywords, extra CLI arguments)
CASES = {
    "ct-phantom-2d": (ROOT / "sample_data" / "ct_phantom.nii.gz", {}, []),
    "acdc-cardiac-mr-2d": (DATA / "acdc" / "imagesTr" / "patient001_frame01.nii.gz",
                           {"modality": "MR"}, ["--modality", "MR"]),
    "hc18-ultrasound-2d": (DATA / "hc18" / "images" / "000_HC.png",
                           {"modality": "US", "pixel_size_mm": 0.0691},
                           ["--modality", "US", "--spacing", "0.0691"]),
    "openkbp-headneck-ct-2d": (DATA / "openkbp_ct" / "imagesTr" / "openkbp_001.nii.gz",
                               {"modality": "CT"}, ["--modality", "CT"]),
}


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown CPU"


def interleaved(fns: dict, rounds: int, warm: int = 1) -> dict[str, float]:
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


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cli_runner(model: str, case: Path, extra: list[str], threads: int, backend: str, out: Path):
    cmd = [sys.executable, "-m", "napari_attnseg.cli", "predict", str(case), "-o", str(out),
           "--model", model, "--threads", str(threads), "--backend", backend, "-q", *extra]

    def run() -> None:
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT, env=dict(os.environ))
    return run


def bench_model(name: str, threads: int, rounds: int, cli_rounds: int, forward: bool,
                tmp: Path) -> list[tuple]:
    case, read_kw, cli_extra = CASES[name]
    torch.set_num_threads(threads)
    model = load_model(ModelRegistry().resolve(name))
    vol = read_volume(case, **read_kw)
    shape = "x".join(map(str, vol.shape))
    rows = []
    os.environ["ATTNSEG_CACHE"] = str(tmp / f"cache-{name}-{threads}")
    export_s = timed(lambda: be.ort_network(model))
    be._memo.clear()  # as a new process: open the cache entry (session, check)
    open_s = timed(lambda: be.ort_network(model))
    rows.append((name, threads, f"one-time export ({shape} case)", None, export_s, ""))
    rows.append((name, threads, "open the cached export (each new process)", None, open_s, ""))
    print(f"{name} @{threads}: export {export_s:.2f} s, open cached {open_s:.2f} s", flush=True)
    if forward:
        x = torch.randn(1, 1, 256, 256)
        ort_net = be.ort_network(model)

        def fwd_torch():
            with torch.inference_mode():
                model.network(x)

        med = interleaved({"torch": fwd_torch, "ort": lambda: ort_net(x)}, rounds, warm=2)
        rows.append((name, threads, "forward 1x1x256x256", med["torch"], med["ort"], ""))
    results = {}
    cfgs = {"torch": PredictConfig(device="cpu", backend="torch"),
            "ort": PredictConfig(device="cpu", backend="onnxruntime")}

    def e2e(k):
        def fn():
            results[k] = predict(model, vol, cfgs[k])
        return fn

    med = interleaved({k: e2e(k) for k in cfgs}, rounds)
    assert results["ort"].provenance["backend"] == "onnxruntime"
    agree = float(np.mean(results["torch"].labels == results["ort"].labels))
    rows.append((name, threads, f"predict in process, steady ({shape})", med["torch"],
                 med["ort"], f"{agree * 100:.3f} % voxels agree"))
    print(f"{name} @{threads}: steady torch {med['torch']:.3f} s, onnxruntime "
          f"{med['ort']:.3f} s, ratio {med['torch'] / med['ort']:.2f}; {agree * 100:.3f} %",
          flush=True)
    if cli_rounds:
        outs = {b: tmp / f"{name}-{threads}-{b}.nii.gz" for b in ("torch", "auto")}
        fns = {b: cli_runner(name, case, cli_extra, threads, b, outs[b]) for b in outs}
        med = interleaved(fns, cli_rounds, warm=0)
        cli_agree = float(np.mean(read_volume(outs["torch"]).data == read_volume(outs["auto"]).data))
        rows.append((name, threads, "`attnseg predict` per process, cache filled", med["torch"],
                     med["auto"], f"{cli_agree * 100:.3f} % voxels agree"))
        print(f"{name} @{threads}: CLI torch {med['torch']:.2f} s, auto {med['auto']:.2f} s, "
              f"ratio {med['torch'] / med['auto']:.2f}", flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=None, help="default: every model with its case")
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--cli-rounds", type=int, default=None, help="default: --rounds (0: none)")
    ap.add_argument("--forward", action="store_true", help="also one forward pass per runtime")
    ap.add_argument("--out", default="/tmp/bench_onnx.md")
    args = ap.parse_args()
    names = args.models or [m for m, (case, _, _) in CASES.items() if case.exists()]
    cli_rounds = args.rounds if args.cli_rounds is None else args.cli_rounds
    load0 = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for threads in args.threads:
            for name in names:
                rows += bench_model(name, threads, args.rounds, cli_rounds, args.forward,
                                    Path(tmp))
    load1 = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    cmd = "python benchmarks/bench_onnx.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    import onnxruntime

    lines = [f"Command: `{cmd.strip()}`  ",
             f"Machine: {cpu_model()}, {os.cpu_count()} CPUs; load average (1/5/15 min) "
             f"{load0} before, {load1} after; torch {torch.__version__}, onnxruntime "
             f"{onnxruntime.__version__}", "",
             "| model | threads | what | PyTorch (fused) | ONNX Runtime | ratio torch/ORT | note |",
             "|---|---|---|---|---|---|---|"]
    for name, threads, what, t, o, note in rows:
        ts = "" if t is None else f"{t:.3f} s"
        ratio = "" if t is None else f"{t / o:.2f}"
        lines.append(f"| {name} | {threads} | {what} | {ts} | {o:.3f} s | {ratio} | {note} |")
    lines += ["", "Medians over interleaved rounds. Ratio > 1: ONNX Runtime faster. The "
              "per-process rows run `attnseg predict --backend torch` and `--backend auto`."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
