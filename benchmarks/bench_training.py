"""Training speed: our fine-tune step vs MONAI's AttentionUnet, and a correct-and-retrain cycle.

Run:  .venv/bin/python benchmarks/bench_training.py [--steps 10] [--threads 2] [--size 256]
      [--batch 8] [--no-bf16] [--cycle-steps 60]

Part 1 (side by side, same run, same pre-built batches of B x 1 x S x S, AdamW, Dice+CE):
  * MONAI 2D ``AttentionUnet(channels=(16,32,64,128,256), strides=(2,2,2,2))``, fp32 eager,
    contiguous memory (the issue's reference);
  * our AttentionUNet (same channels, deep supervision, masked Dice+CE) fp32 channels-last;
  * the same with bf16 autocast (opt-in path).
  Steps are interleaved round-robin (A, B, C, A, B, C, ...) so that load from other processes
  hits every variant alike; the median step time is reported, and ratios ours / MONAI
  (issue targets: fp32 <= 0.75, bf16 <= 0.40).
Part 2: a correct-and-retrain cycle: 8 corrected slices of a synthetic 12 x S x S volume
  (ground truth as the correction), ``finetune_job`` with the default fine-tune settings
  (patch 128², batch 8) for ``--cycle-steps`` steps, saving the new registry version, then
  re-predicting the whole volume with the new model; wall time end to end (target <= 90 s
  fp32) and Dice on the unreviewed slices before/after.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _batches(n, batch, size, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        labs, imgs = [], []
        for _ in range(batch):
            cy, cx = rng.uniform(0.3, 0.7, 2) * size
            r = rng.uniform(0.1, 0.25) * size
            lab = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.int64)
            labs.append(lab)
            imgs.append((lab + rng.normal(0, 0.5, lab.shape)).astype(np.float32))
        out.append((torch.from_numpy(np.stack(imgs)[:, None]), torch.from_numpy(np.stack(labs))))
    return out


class _Stepper:
    def __init__(self, name, net, channels_last, bf16):
        from napari_attnseg.training.losses import DiceCELoss

        self.name, self.net, self.cl, self.bf16 = name, net.train(), channels_last, bf16
        if channels_last:
            net.to(memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3, weight_decay=1e-4)
        self.loss_fn = DiceCELoss()
        self.times: list[float] = []

    def step(self, x, y, record=True):
        t = time.perf_counter()
        if self.cl:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out = self.net(x)
        outs = [o.float() for o in out] if isinstance(out, (list, tuple)) else [out.float()]
        loss = self.loss_fn(outs, y, torch.ones_like(y, dtype=torch.bool))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 12.0)
        self.opt.step()
        if record:
            self.times.append(time.perf_counter() - t)
        return float(loss.detach())


def part1(args):
    from monai.networks.nets import AttentionUnet

    from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig, count_parameters

    torch.manual_seed(0)
    monai_net = AttentionUnet(spatial_dims=2, in_channels=1, out_channels=2, channels=(16, 32, 64, 128, 256),
                              strides=(2, 2, 2, 2))
    ours = AttentionUNet(UNetConfig())
    steppers = [_Stepper("MONAI AttentionUnet fp32 eager", monai_net, False, False),
                _Stepper("ours fp32 channels-last", ours, True, False)]
    if args.bf16:
        ours_bf = AttentionUNet(UNetConfig())
        steppers.append(_Stepper("ours bf16 autocast channels-last", ours_bf, True, True))
    print(f"parameters: MONAI {count_parameters(monai_net):,}  ours {count_parameters(ours):,}")
    batches = _batches(args.steps + 1, args.batch, args.size)
    for s in steppers:  # warm-up (not timed)
        s.step(*batches[0], record=False)
    for x, y in batches[1:]:
        for s in steppers:
            s.step(x, y)
    ref = statistics.median(steppers[0].times)
    print(f"\n{args.steps} steps, batch {args.batch}x1x{args.size}x{args.size}, {torch.get_num_threads()} threads")
    print(f"{'variant':38s} {'median s/step':>14s} {'total s':>9s} {'ratio vs MONAI':>15s}")
    for s in steppers:
        med = statistics.median(s.times)
        print(f"{s.name:38s} {med:14.3f} {sum(s.times):9.1f} {med / ref:15.3f}")
    return steppers


def part2(args):
    from napari_attnseg._progress import drain
    from napari_attnseg.inference.predictor import PredictConfig, predict
    from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
    from napari_attnseg.model.checkpoint import ModelSpec, load_model
    from napari_attnseg.model.registry import ModelRegistry
    from napari_attnseg.training import TrainConfig, TrainingPair, finetune_job
    from napari_attnseg.volume import Volume

    size, z = args.size, 12
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:size, :size]
    lab = np.zeros((z, size, size), np.uint8)
    for k in range(z):
        r = size * (0.15 + 0.01 * k)
        lab[k] = ((yy - size * 0.5) ** 2 / 1.3 + (xx - size * (0.45 + 0.005 * k)) ** 2 < r * r)
    img = (lab * 60.0 + 40 + rng.normal(0, 25, lab.shape)).astype(np.float32)
    reviewed = np.zeros(z, bool)
    reviewed[[0, 2, 3, 5, 6, 8, 9, 11]] = True
    vol = Volume(img, (3.0, 0.5, 0.5), modality="US")
    pair = TrainingPair(vol, Volume(lab, (3.0, 0.5, 0.5), is_labels=True), reviewed)
    with tempfile.TemporaryDirectory() as tmp:
        reg = ModelRegistry(Path(tmp) / "models", shipped_root=Path(tmp) / "none")
        torch.manual_seed(0)
        arch = UNetConfig()
        spec = ModelSpec(arch=arch, label_names={0: "background", 1: "object"}, modality="US",
                         normalization={"preset": "US"}, patch_size=(256, 256), name="bench")
        entry = reg.add_version("bench", AttentionUNet(arch), spec)
        reg.set_active("bench", entry.version)
        base = load_model(entry.path)
        unrev = ~reviewed

        def dice_unreviewed(model):
            pred = predict(model, vol, PredictConfig(batch_size=4)).labels
            p, g = pred[unrev] > 0, lab[unrev] > 0
            return 2 * (p & g).sum() / max(1, p.sum() + g.sum())

        d0 = dice_unreviewed(base)
        steps_per_epoch = 10
        cfg = TrainConfig(epochs=max(1, args.cycle_steps // steps_per_epoch), steps_per_epoch=steps_per_epoch,
                          batch_size=8, patch_size=(128, 128), lr=3e-3, early_stopping_patience=0,
                          precision=args.cycle_precision)
        t0 = time.perf_counter()
        res = drain(finetune_job(base, [pair], cfg, reg))
        t_train = time.perf_counter() - t0
        new = load_model(res.entry.path)
        d1 = dice_unreviewed(new)
        t_total = time.perf_counter() - t0
    print(f"\ncorrect-and-retrain cycle ({args.cycle_precision}): 8 corrected slices of 12x{size}x{size}, "
          f"{res.train_result.steps} steps of batch 8 x 128²")
    print(f"  fine-tune (incl. validation + save): {t_train:.1f} s; + reload and re-predict the volume: "
          f"{t_total:.1f} s end to end (target <= 90 s fp32)")
    print(f"  held-out Dice {res.before_dice:.3f} -> {res.after_dice:.3f} (activated: {res.activated}); "
          f"Dice on the 4 unreviewed slices {d0:.3f} -> {d1:.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-bf16", dest="bf16", action="store_false")
    ap.add_argument("--cycle-steps", type=int, default=60)
    ap.add_argument("--cycle-precision", default="fp32")
    ap.add_argument("--skip-part1", action="store_true")
    ap.add_argument("--skip-cycle", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.bf16 and not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        print("note: this CPU has no native bf16 instructions (AVX512-BF16/AMX); bf16 autocast is emulated")
    if not args.skip_part1:
        part1(args)
    if not args.skip_cycle:
        part2(args)


if __name__ == "__main__":
    main()
