"""Inference engine speed: stitching overhead, whole volume, current-slice preview, first call.

Run:  python benchmarks/bench_inference.py [--threads 2] [--model NAME|FOLDER] [--rounds 3]
                                           [--depth 128] [--quick]

Measures, in one process and side by side (medians over rounds):
  * first call vs steady state of the interactive path (``predict_slice`` on a 256x256 slice,
    measured first, on a freshly loaded model, before any other torch work in the process);
  * current-slice preview time (``predict_slice``, whole-volume intensity statistics cached as the
    widget does, and uncached);
  * stitching overhead = sliding-window time / (n_windows x one batch-1 forward), for a 512x512
    image (overlap 0.5, 9 windows) and for a 256x256x32 volume run slice by slice (32 windows);
  * bf16 autocast vs fp32 on 16 slices (time ratio, argmax agreement);
  * the whole 256x256xDEPTH volume (default 128) with the default 2D configuration in fp32
    through ``predict`` (normalization, windows, blending, labels).
Without --model, the default 2D architecture (channels 16..256, patch 256x256) with RANDOM
weights is used (timings do not depend on the weights' values).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_attnseg._progress import drain  # noqa: E402
from napari_attnseg.inference.predictor import (  # noqa: E402
    PredictConfig,
    intensity_for,
    predict,
    predict_slice,
)
from napari_attnseg.inference.sliding_window import count_windows, sliding_window_job  # noqa: E402
from napari_attnseg.volume import Volume  # noqa: E402


def _load(ref: str | None, tmp: Path):
    from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
    from napari_attnseg.model.checkpoint import ModelSpec, load_model, save_model

    if ref:
        from napari_attnseg.model.registry import ModelRegistry

        return load_model(ModelRegistry().resolve(ref)), f"model {ref}"
    torch.manual_seed(0)
    cfg = UNetConfig(spatial_dims=2)
    spec = ModelSpec(arch=cfg, label_names={0: "background", 1: "foreground"}, modality="CT",
                     patch_size=(256, 256), name="bench-random", version="1")
    folder = save_model(tmp / "bench-random", AttentionUNet(cfg), spec)
    return load_model(folder), "default 2D config (16..256), RANDOM weights"


def _median_ms(fn, rounds: int) -> float:
    ts = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=None)
    ap.add_argument("--rounds", type=int, default=3, help="rounds for the whole-volume run")
    ap.add_argument("--depth", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="fewer rounds everywhere")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fast_rounds = 5 if args.quick else 15
    rng = np.random.default_rng(0)
    vol = Volume(data=rng.normal(0, 300, (args.depth, 256, 256)).astype(np.float32),
                 spacing=(2.0, 0.8, 0.8), modality="CT")
    with tempfile.TemporaryDirectory() as tmpdir:
        model, what = _load(args.model, Path(tmpdir))
        print(f"model: {what}; torch {torch.__version__}, {torch.get_num_threads()} threads, fp32")
        cfg = PredictConfig(device="cpu")
        net = model.network

        # --- first call vs steady state (interactive path)
        t0 = time.perf_counter()
        intensity = intensity_for(model, vol, cfg)
        predict_slice(model, vol, args.depth // 2, cfg, intensity=intensity)
        first = (time.perf_counter() - t0) * 1e3
        steady = _median_ms(lambda: predict_slice(model, vol, args.depth // 2, cfg,
                                                  intensity=intensity), fast_rounds)
        uncached = _median_ms(lambda: predict_slice(model, vol, args.depth // 2, cfg),
                              max(3, fast_rounds // 3))
        print(f"preview slice 256x256: first call {first:.1f} ms, steady {steady:.1f} ms "
              f"(first/steady {first / steady:.2f}x; target <= 2x); without cached intensity "
              f"statistics {uncached:.1f} ms; target < 100 ms")

        # --- one forward (batch 1, the unit of the overhead ratio)
        x = torch.from_numpy(rng.normal(size=(1, 1, 256, 256)).astype(np.float32))

        def fwd():
            with torch.inference_mode():
                net(x)

        one = _median_ms(fwd, fast_rounds)
        print(f"one forward 1x1x256x256: {one:.1f} ms")

        def sw(img, patch, batch):
            drain(sliding_window_job(net, img, patch, overlap=0.5, batch_size=batch,
                                     divisor=net.divisor))

        img2 = rng.normal(size=(1, 512, 512)).astype(np.float32)
        n2 = count_windows((512, 512), (256, 256), 0.5, net.divisor)
        depth3 = 8 if args.quick else 32
        img3 = rng.normal(size=(1, depth3, 256, 256)).astype(np.float32)
        n3 = count_windows((depth3, 256, 256), (256, 256), 0.5, net.divisor)
        r = max(3, fast_rounds // 3)
        for label, img, n in (("512x512 2D (overlap 0.5)", img2, n2),
                              (f"256x256x{depth3} slice by slice", img3, n3)):
            for batch in (1, 4):
                ratios, t_sw, t_ref = [], [], []
                for _ in range(r):  # interleaved, so machine load hits both alike
                    a = _median_ms(lambda: sw(img, (256, 256), batch), 1)
                    b = _median_ms(lambda: [fwd() for _ in range(n)], 1)
                    ratios.append(a / b)
                    t_sw.append(a)
                    t_ref.append(b)
                print(f"stitching {label}, batch {batch}: {n} windows, "
                      f"{statistics.median(t_sw):.0f} ms vs {n} x forward "
                      f"{statistics.median(t_ref):.0f} ms -> overhead "
                      f"{statistics.median(ratios):.3f}x (median of {r} interleaved rounds; "
                      "target <= 1.10x)")

        # --- opt-in bf16 path vs fp32 on a 16-slice sub-volume (random weights: indicative only)
        sub = Volume(data=vol.data[:16], spacing=vol.spacing, modality="CT")
        bf = PredictConfig(device="cpu", precision="bf16")
        t32, t16, agree = [], [], []
        for _ in range(1 if args.quick else max(1, r // 2)):
            t0 = time.perf_counter()
            a = predict(model, sub, cfg)
            t32.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            b = predict(model, sub, bf)
            t16.append(time.perf_counter() - t0)
            agree.append(float((a.labels == b.labels).mean()))
        print(f"bf16 autocast vs fp32 (256x256x16): {statistics.median(t16):.2f} s vs "
              f"{statistics.median(t32):.2f} s ({statistics.median(t16) / statistics.median(t32):.2f}x), "
              f"argmax agreement {100 * min(agree):.2f} % (target >= 99.5 % on trained weights)")

        # --- whole volume
        ts = []
        for _ in range(1 if args.quick else args.rounds):
            t0 = time.perf_counter()
            res = predict(model, vol, cfg)
            ts.append(time.perf_counter() - t0)
        print(f"whole volume 256x256x{args.depth}: {statistics.median(ts):.2f} s "
              f"(median of {len(ts)}; {res.n_windows} windows; "
              f"{statistics.median(ts) * 1e3 / res.n_windows:.1f} ms/window; target < 5 s)")


if __name__ == "__main__":
    main()
