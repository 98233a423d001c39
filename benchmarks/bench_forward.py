"""Forward-pass speed of our AttentionUNet against MONAI's AttentionUnet, measured side by side.

Run:  python benchmarks/bench_forward.py [--threads 2] [--rounds 15] [--no-3d]

Prints median wall times (ms) and ratios (ours / reference) for, on 1x1x256x256 (2D):
  * MONAI ``AttentionUnet(spatial_dims=2, in_channels=1, out_channels=2,
    channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2))``, eager fp32, eval, inference_mode;
  * ours (default config, same channels): NCHW without folding (plain eager), default eval path
    (batch-norm folded automatically, channels-last activations) and after ``fuse_for_inference()``;
  * ours under ``torch.autocast("cpu", dtype=torch.bfloat16)`` with the argmax agreement vs fp32
    (random weights: only indicative of what trained weights would give);
  * the first call vs the steady state;
  * the conv-sum floor: the sum of every convolution of our fused forward timed in isolation
    (channels-last inputs and weights), i.e. what a perfect framework could reach at best.
Then MONAI vs ours default and the floor for 3D on 1x1x96^3 (fewer rounds; --no-3d skips it). All variants run interleaved within each
round so machine load affects them alike. The MONAI rows are skipped if MONAI is absent.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_attnseg.model.attention_unet import AttentionUNet, count_parameters  # noqa: E402

CHANNELS = (16, 32, 64, 128, 256)


def _monai(dims: int):
    try:
        from monai.networks.nets import AttentionUnet
    except ImportError:
        return None
    torch.manual_seed(0)
    return AttentionUnet(
        spatial_dims=dims, in_channels=1, out_channels=2, channels=CHANNELS, strides=(2, 2, 2, 2)
    ).eval()


def _time(fn, x) -> float:
    t0 = time.perf_counter()
    fn(x)
    return (time.perf_counter() - t0) * 1e3


class _ConvRecorder(torch.overrides.TorchFunctionMode):
    """Records every convolution call (function, input, weight, bias, stride, padding)."""

    FUNCS = {
        torch.nn.functional.conv2d: "conv",
        torch.nn.functional.conv3d: "conv",
        torch.nn.functional.conv_transpose2d: "tconv",
        torch.nn.functional.conv_transpose3d: "tconv",
    }

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.FUNCS:
            self.calls.append((func, args, kwargs))
        return func(*args, **kwargs)


def conv_closures(model, x) -> list:
    """One closure per convolution of ``model``'s forward on ``x``, each re-running that
    convolution alone on a fresh channels-last input (and channels-last weight)."""
    rec = _ConvRecorder()
    with torch.inference_mode(), rec:
        model(x)
    closures = []
    for func, args, kwargs in rec.calls:
        inp, weight = args[0], args[1]
        mf = torch.channels_last if inp.ndim == 4 else torch.channels_last_3d
        inp = torch.randn(inp.shape).contiguous(memory_format=mf)
        weight = weight.clone().contiguous(memory_format=mf)
        closures.append(lambda _t, f=func, i=inp, w=weight, r=tuple(args[2:]), k=kwargs: f(i, w, *r, **k))
    return closures


def bench(dims: int, size: int, rounds: int, light: bool = False) -> None:
    """``light``: only MONAI, ours default and the floor (for the slow 3D case)."""
    shape = (1, 1) + (size,) * dims
    torch.manual_seed(0)
    x = torch.randn(shape)
    ours = AttentionUNet(spatial_dims=dims, channels=CHANNELS).eval()
    # give batch-norm non-trivial statistics so that folding is really exercised
    with torch.no_grad():
        for m in ours.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    plain = AttentionUNet(ours.config).eval()
    plain.load_state_dict(ours.state_dict())
    plain.channels_last = False
    fused = AttentionUNet(ours.config)
    fused.load_state_dict(ours.state_dict())
    fused.fuse_for_inference()
    monai = _monai(dims)

    for mod in plain.modules():  # switch batch-norm folding off: conv -> BN -> ReLU as written
        if hasattr(mod, "_is_bn"):
            mod._is_bn = False

    def run_plain(t):
        with torch.inference_mode():
            return plain(t)

    def run(model):
        def f(t):
            with torch.inference_mode():
                return model(t)

        return f

    def run_bf16(t):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return fused(t)

    # first call vs steady state (fresh model, nothing cached yet)
    first_model = AttentionUNet(ours.config).eval()
    first_model.load_state_dict(ours.state_dict())
    first = _time(run(first_model), x)

    variants = {
        "ours plain NCHW (no BN folding)": run_plain,
        "ours default eval": run(ours),
        "ours fuse_for_inference": run(fused),
        "ours bf16 autocast": run_bf16,
    }
    if light:
        variants = {"ours default eval": run(ours)}
    if monai is not None:
        variants = {"MONAI AttentionUnet": run(monai), **variants}
    convs = conv_closures(fused, x)
    for f in list(variants.values()) + convs:  # warm-up
        f(x)
        f(x)
    times = {k: [] for k in variants}
    conv_times = [[] for _ in convs]
    for _ in range(rounds):  # interleaved, so load changes hit every variant alike
        for k, f in variants.items():
            times[k].append(_time(f, x))
        with torch.inference_mode():
            for c, ts in zip(convs, conv_times):
                ts.append(_time(c, x))
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    floor, n_convs = sum(statistics.median(ts) for ts in conv_times), len(convs)
    floor_best = sum(min(ts) for ts in conv_times)
    agree = diff = float("nan")
    if not light:
        with torch.inference_mode():
            ref = fused(x).argmax(1)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = fused(x).float().argmax(1)
            diff = (ours(x) - fused(x)).abs().max().item()
        agree = (ref == low).float().mean().item() * 100

    print(f"\n== {dims}D input {tuple(shape)}, {torch.get_num_threads()} threads, {rounds} rounds (medians) ==")
    print(f"ours: {count_parameters(ours):,} parameters", end="")
    if monai is not None:
        print(f"; MONAI AttentionUnet: {count_parameters(monai):,}")
    else:
        print("; MONAI not installed (no reference rows)")
    for k, v in med.items():
        extra = ""
        if monai is not None and k != "MONAI AttentionUnet":
            extra += f"   ratio vs MONAI {v / med['MONAI AttentionUnet']:.2f}x"
        extra += f"   ratio vs conv floor {v / floor:.2f}x"
        print(f"  {k:34s} {v:8.1f} ms{extra}")
    print(f"  {'conv-sum floor (' + str(n_convs) + ' convs, isolated)':34s} {floor:8.1f} ms")
    mins = "   ".join(f"{k}: {v:.1f}" for k, v in best.items())
    print(f"  minima (ms, less sensitive to load): {mins}; conv floor {floor_best:.1f}")
    if monai is not None:
        print(
            f"  min-based ratios: ours default / MONAI {best['ours default eval'] / best['MONAI AttentionUnet']:.2f}x, "
            f"ours default / floor {best['ours default eval'] / floor_best:.2f}x"
        )
    print(f"  first call {first:.1f} ms = {first / med['ours default eval']:.2f}x steady state (ours default eval)")
    if not light:
        print(f"  bf16 autocast argmax agreement with fp32: {agree:.2f}% (random weights: indicative only)")
        print(f"  max |default eval - fuse_for_inference| logits: {diff:.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--no-3d", action="store_true", help="skip the 3D 1x1x96^3 case")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}; machine may be shared with other jobs: compare ratios, not times")
    bench(2, 256, args.rounds)
    if not args.no_3d:
        bench(3, 96, max(3, args.rounds // 5), light=True)


if __name__ == "__main__":
    main()
