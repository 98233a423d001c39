"""Annotation-efficiency curve (issue 6): Dice on the UNREVIEWED slices after correcting k slices.

Run:  .venv/bin/python benchmarks/bench_annotation_efficiency.py [--case spleen|ct-phantom]
      [--ks 0 1 2 5 10] [--seconds 60] [--threads 2] [--val split|all] [--base MODEL]
      [--out benchmarks/results]

Protocol (one run, every k starts from the SAME base model):

* Base model: ``--base`` (a registry name or folder), else the shipped default model
  (``ModelRegistry().default_model()``) when it is a CT model; else a small 2D CT model trained here
  for ``--base-seconds`` on CT phantoms (``phantom_dataset("ct", 6, seed=1)``).
* Case ``spleen`` (default): the real abdominal CT in ``../shared/data/ct_spleen`` (164x166x26,
  0.79x0.79x5 mm; Medical Segmentation Decathlon spleen task, Antonelli et al., Nat. Commun. 2022,
  via the ivadomed test data, CC BY-SA 4.0). The target is the spleen, trained as class 1 of the base
  (background / organ / lesion) head, so no new head is needed; class 2 simply never occurs in the
  corrections. A voxel is scored as spleen when the model predicts any foreground class (1 or 2).
  The CT phantom base was trained to segment a liver-like organ on the patient's right and to *ignore*
  spleen-like organs, so the base is badly wrong here: this is the re-targeting a user would do.
  Case ``ct-phantom``: an unseen CT phantom (seed 101, 32x128x128, 2.5x0.8x0.8 mm), target = organ
  (labels 1 and 2 merged to 1), for a case where the base is already decent.
* Corrected slices (fixed rule, "evenly spaced"): among the slices whose ground truth contains
  foreground (a user corrects where the organ is), the k slices at the centres of k equal bins of that
  range. The ground truth on those slices is the correction (``TrainingPair(reviewed=(z,) flags)``).
* Scoring set: the unreviewed slices that contain foreground. Reported: one 3D Dice over all of them
  together, the mean of their per-slice Dice, and the false-positive voxels on the unreviewed slices
  without foreground. As the scoring set shrinks with k, also a 3D Dice on one FIXED set: the
  foreground slices reviewed at no k of the run ("common").
* Fine-tune: ``finetune_job`` with ``TrainConfig(max_seconds=--seconds, early_stopping_patience=0,
  epochs=10000, steps_per_epoch=10, patch_size=<base patch>, batch_size=8, lr=1e-3, seed)``, i.e.
  exactly the time budget (including the initial validation), best-validation checkpoint kept,
  saved into a temporary registry (``$ATTNSEG_MODELS`` is pointed to a temp dir). The model scored is
  that new version (even when the registry did not activate it because the validation Dice did not
  improve; the ``activated`` column says which).
  Validation: ``--val split`` (default) uses the plugin's own split (``val_fraction`` 0.2, at least 1
  slice held out: k=2 -> 1 train + 1 val, k=5 -> 4 + 1, k=10 -> 8 + 2). A single reviewed slice
  cannot be split, so k=1 trains and validates on that slice (the pair is passed twice, each copy
  lands on one side of the split). ``--val all`` does that for every k (all corrected slices train).
* The machine is shared (other processes load the 2 cores): a fixed wall-clock budget then gives fewer
  steps than on an idle machine. The steps done and the load average are printed with every row.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ct_spleen"
CSV_FIELDS = ["case", "k", "reviewed", "n_train", "n_val", "n_scored", "dice_3d", "dice_slice_mean",
              "fp_voxels_empty", "n_common", "dice_common", "steps", "train_s", "val_before", "val_after", "activated", "stopped",
              "load_1min"]


# --------------------------------------------------------------------------- pieces (tested)
def select_slices(gt: np.ndarray, k: int) -> list[int]:
    """k corrected slices, evenly spaced over the slices whose ground truth has foreground
    (the centres of k equal bins of that list); ``[]`` for k = 0."""
    fg = np.flatnonzero((np.asarray(gt) > 0).reshape(gt.shape[0], -1).any(axis=1))
    k = int(k)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if k > len(fg):
        raise ValueError(f"cannot correct {k} slices: only {len(fg)} slices contain foreground")
    if k == 0:
        return []
    pos = np.floor((np.arange(k) + 0.5) * len(fg) / k).astype(int)
    return sorted(int(fg[p]) for p in pos)


def score_unreviewed(pred: np.ndarray, gt: np.ndarray, reviewed: list[int]) -> dict[str, Any]:
    """Dice of the foreground (any nonzero label) on the unreviewed slices that contain foreground:
    one 3D Dice over them together, the mean per-slice Dice, and the false-positive voxels on the
    unreviewed slices without foreground."""
    from napari_attnseg.metrics.overlap import overlap_metrics, per_slice_dice

    p, g = np.asarray(pred) > 0, np.asarray(gt) > 0
    has_fg = g.reshape(g.shape[0], -1).any(axis=1)
    unrev = np.ones(g.shape[0], bool)
    unrev[list(reviewed)] = False
    scored = np.flatnonzero(unrev & has_fg)
    empty = np.flatnonzero(unrev & ~has_fg)
    if not len(scored):
        raise ValueError("no unreviewed slice with foreground is left to score")
    d3 = overlap_metrics(p[scored].astype(np.uint8), g[scored].astype(np.uint8), label=1)["dice"]
    ps = per_slice_dice(p[scored], g[scored], axis=0)
    return {"scored_slices": [int(s) for s in scored], "n_scored": int(len(scored)), "dice_3d": float(d3),
            "dice_slice_mean": float(np.nanmean(ps)), "fp_voxels_empty": int(p[empty].sum())}


def make_pairs(image: Any, labels: Any, reviewed: list[int], val_mode: str) -> list[Any]:
    """Training pairs for ``finetune_job``: the volume with per-slice reviewed flags; passed twice
    (both copies train and validate on the same slices) for k = 1 or ``val_mode == "all"``."""
    from napari_attnseg.training import TrainingPair

    flags = np.zeros(image.shape[0], bool)
    flags[list(reviewed)] = True
    pair = TrainingPair(image, labels, flags, "case")
    if len(reviewed) == 1 or val_mode == "all":
        # split_reviewed_slices holds out (pair, slice) units: with two copies of a single slice,
        # one copy trains and the other validates (for val_mode "all", finetune_once assigns copy 0
        # to training and copy 1 to validation).
        return [pair, TrainingPair(image, labels, flags, "case-copy")]
    return [pair]


def _split_all(pairs: list[Any]) -> tuple[list[Any], list[Any]]:
    return [pairs[0]], [pairs[1]]


def finetune_once(base: Any, image: Any, labels: Any, reviewed: list[int], seconds: float, registry: Any,
                  *, val_mode: str = "split", seed: int = 0, threads: int | None = 2, batch_size: int = 8,
                  lr: float = 1e-3, name: str = "annotation-efficiency") -> tuple[Any, Any]:
    """Fine-tune a copy of ``base`` on the ground truth of ``reviewed`` slices for ``seconds``;
    returns (FinetuneResult, the new version loaded)."""
    from napari_attnseg._progress import drain
    from napari_attnseg.model import load_model
    from napari_attnseg.training import TrainConfig, finetune_job
    from napari_attnseg.training import finetune as ft_mod

    cfg = TrainConfig(epochs=10_000, steps_per_epoch=10, max_seconds=float(seconds), batch_size=batch_size,
                      lr=lr, patch_size=tuple(base.spec.patch_size), early_stopping_patience=0, seed=seed,
                      num_threads=threads)
    pairs = make_pairs(image, labels, reviewed, val_mode)
    if val_mode == "all":
        # train on copy 0, validate on copy 1 (same slices): finetune's own split would hold out a
        # random subset of the (copy, slice) units instead. Patched only for this call (the split
        # is computed when finetune_job is called).
        orig = ft_mod.split_reviewed_slices
        ft_mod.split_reviewed_slices = lambda p, *a, **kw: _split_all(list(p))
        try:
            job = finetune_job(base, pairs, cfg, registry, name)
        finally:
            ft_mod.split_reviewed_slices = orig
    else:
        job = finetune_job(base, pairs, cfg, registry, name)
    res = drain(job)
    # no epoch beat the base: nothing was saved and the best weights are the base's own
    return res, (load_model(res.entry.path) if res.entry is not None else base)


def run_curve(base: Any, image: Any, gt: np.ndarray, ks: list[int], seconds: float, registry: Any, *,
              case: str = "", val_mode: str = "split", seed: int = 0, threads: int | None = 2,
              batch_size: int = 8, lr: float = 1e-3, log: Callable[[str], Any] = print) -> list[dict[str, Any]]:
    """One row per k: fine-tune from ``base`` (k = 0: no training), predict the whole volume, score
    the unreviewed slices. ``gt`` is the target as 0/1 (or integer) labels on ``image``'s grid."""
    from napari_attnseg.inference.predictor import PredictConfig, predict

    gt = np.asarray(gt)
    labels = image.with_data((gt > 0).astype(np.uint8), is_labels=True)
    pcfg = PredictConfig(device="cpu", batch_size=4)
    # the foreground slices reviewed at NO k of this run: one fixed scoring set for every k
    ever = sorted({s for k in ks for s in select_slices(gt, k)})
    fg_slices = np.flatnonzero((gt > 0).reshape(gt.shape[0], -1).any(axis=1))
    common = [int(s) for s in fg_slices if s not in ever]
    rows = []
    for k in ks:
        reviewed = select_slices(gt, k)
        row: dict[str, Any] = {"case": case, "k": int(k), "reviewed": reviewed}
        if k == 0:
            model = base
            row.update(n_train=0, n_val=0, steps=0, train_s=0.0, val_before=float("nan"),
                       val_after=float("nan"), activated=False, saved=False, stopped="no training")
        else:
            t0 = time.perf_counter()
            res, model = finetune_once(base, image, labels, reviewed, seconds, registry, val_mode=val_mode,
                                       seed=seed, threads=threads, batch_size=batch_size, lr=lr)
            tr = res.train_result
            prov = res.split
            row.update(n_train=sum(len(p["slices"]) for p in prov["train"]),
                       n_val=sum(len(p["slices"]) for p in prov["validation"]),
                       steps=int(tr.steps), train_s=round(time.perf_counter() - t0, 1),
                       val_before=round(res.before_dice, 4), val_after=round(res.after_dice, 4),
                       activated=bool(res.activated), saved=res.entry is not None, stopped=tr.stopped)
        pred = predict(model, image, pcfg).labels
        row.update(score_unreviewed(pred, gt, reviewed))
        if common:
            c = score_unreviewed(pred, gt, ever)
            row.update(n_common=c["n_scored"], dice_common=c["dice_3d"])
        else:
            row.update(n_common=0, dice_common=float("nan"))
        row["load_1min"] = round(os.getloadavg()[0], 2)
        rows.append(row)
        log(_fmt_row(row))
    return rows


def _fmt_header() -> str:
    return (f"{'k':>3s} {'train/val':>9s} {'scored':>6s} {'Dice 3D':>8s} {'slice mean':>10s} {'FP empty':>8s} "
            f"{'common':>6s} {'steps':>5s} {'train s':>7s} {'val before->after':>18s} {'act':>3s} {'load':>5s}  reviewed")


def _fmt_row(r: dict[str, Any]) -> str:
    va = "-" if r["k"] == 0 else f"{r['val_before']:.3f}->{r['val_after']:.3f}"
    return (f"{r['k']:3d} {r['n_train']:>4d}/{r['n_val']:<4d} {r['n_scored']:6d} {r['dice_3d']:8.3f} "
            f"{r['dice_slice_mean']:10.3f} {r['fp_voxels_empty']:8d} {r['dice_common']:6.3f} {r['steps']:5d} {r['train_s']:7.1f} "
            f"{va:>18s} {'y' if r['activated'] else 'n':>3s} {r['load_1min']:5.2f}  {r['reviewed']}")


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "reviewed": " ".join(map(str, r["reviewed"]))})
    return path


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [r["k"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ax.plot(ks, [r["dice_3d"] for r in rows], "o-", label="Dice (3D, all unreviewed fg slices)")
    ax.plot(ks, [r["dice_slice_mean"] for r in rows], "s--", label="mean per-slice Dice")
    if rows and rows[0].get("n_common"):
        ax.plot(ks, [r["dice_common"] for r in rows], "^:",
                label=f"Dice (3D) on the {rows[0]['n_common']} fg slices reviewed at no k")
    for r in rows:
        ax.annotate("base" if r["k"] == 0 else f"{r['steps']} steps", (r["k"], r["dice_3d"]),
                    textcoords="offset points", xytext=(4, -12), fontsize=7)
    ax.set_xlabel("corrected slices k (ground truth as the correction)")
    ax.set_ylabel("Dice on the unreviewed slices")
    ax.set_xticks(ks)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- base model and cases
def quick_base(registry: Any, seconds: float, threads: int, seed: int = 0) -> Any:
    """A small 2D CT model (background / organ / lesion) trained on CT phantoms for ``seconds``."""
    import torch

    from napari_attnseg.model import AttentionUNet, ModelSpec, UNetConfig, load_model
    from napari_attnseg.sample.phantoms import phantom_dataset
    from napari_attnseg.training import TrainConfig, TrainingPair, train

    cases = phantom_dataset("ct", 6, seed=1, shape=(24, 128, 128))
    pairs = [TrainingPair(img, lab, None, f"c{i}") for i, (img, lab) in enumerate(cases)]
    torch.manual_seed(seed)
    arch = UNetConfig(out_channels=3, channels=(8, 16, 32, 64, 128))
    spec = ModelSpec(arch=arch, label_names={0: "background", 1: "organ", 2: "lesion"}, modality="CT",
                     normalization={"preset": "CT"}, patch_size=(96, 96), name="quick-ct-base")
    net = AttentionUNet(arch)
    cfg = TrainConfig(epochs=1000, steps_per_epoch=20, max_seconds=seconds, batch_size=4, patch_size=(96, 96),
                      early_stopping_patience=0, seed=seed, num_threads=threads)
    res = train(net, spec, pairs[:5], pairs[5:], cfg)
    net.load_state_dict(res.state_dict)
    entry = registry.add_version("quick-ct-base", net, spec)
    return load_model(entry.path)


def load_case(case: str, data: Path) -> tuple[Any, np.ndarray, str]:
    """(image Volume, target 0/1 array, description)."""
    if case == "spleen":
        from napari_attnseg.io import read_volume

        image = read_volume(data / "image.nii.gz")
        mask = np.asarray(read_volume(data / "spleen_mask.nii.gz").data) > 0
        return image, mask.astype(np.uint8), "real CT, spleen (MSD spleen via ivadomed, CC BY-SA 4.0)"
    if case == "ct-phantom":
        from napari_attnseg.sample.phantoms import ct_phantom

        image, labels = ct_phantom(seed=101, shape=(32, 128, 128))
        return image, (np.asarray(labels.data) > 0).astype(np.uint8), "CT phantom seed 101, organ"
    raise ValueError(f"unknown case {case!r}: use 'spleen' or 'ct-phantom'")


def pick_base(arg: str | None, tmp_registry: Any, base_seconds: float, threads: int) -> tuple[Any, str]:
    from napari_attnseg.model import ModelRegistry, load_model

    shipped = ModelRegistry(root=tmp_registry.root)  # shipped models + nothing of the user's
    if arg:
        return load_model(shipped.resolve(arg)), f"--base {arg}"
    entry = shipped.default_model()
    if entry is not None:
        m = load_model(entry.path)
        if (m.spec.modality or "").upper() == "CT" and m.spec.arch.out_channels >= 2:
            return m, f"shipped default {entry.ref}"
        print(f"shipped default {entry.ref} is not a CT model ({m.spec.modality}); training a quick base")
    else:
        print("no shipped default model; training a quick base")
    return quick_base(tmp_registry, base_seconds, threads), f"quick CT phantom base ({base_seconds:.0f} s)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", default="spleen", choices=["spleen", "ct-phantom"])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ct_spleen folder")
    ap.add_argument("--ks", type=int, nargs="+", default=[0, 1, 2, 5, 10])
    ap.add_argument("--seconds", type=float, default=60.0, help="fine-tune wall-clock budget per k")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--val", default="split", choices=["split", "all"])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--base", default=None, help="model name/folder (default: the shipped default model)")
    ap.add_argument("--base-seconds", type=float, default=180.0, help="training time of a quick base if needed")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--tag", default="annotation_efficiency", help="file stem of the CSV/PNG")
    args = ap.parse_args(argv)

    import torch

    from napari_attnseg.model import ModelRegistry

    torch.set_num_threads(args.threads)
    image, gt, desc = load_case(args.case, args.data)
    with tempfile.TemporaryDirectory(prefix="attnseg_ae_") as tmp:
        os.environ["ATTNSEG_MODELS"] = tmp  # nothing reaches the user's registry
        registry = ModelRegistry(root=tmp)
        base, base_desc = pick_base(args.base, registry, args.base_seconds, args.threads)
        load0 = os.getloadavg()
        print(f"case: {desc}; volume {image.shape}, spacing {tuple(round(s, 3) for s in image.spacing)}; "
              f"{int((gt.reshape(gt.shape[0], -1) > 0).any(1).sum())} slices with foreground")
        print(f"base: {base_desc} = {base.model_id} ({base.spec.arch.spatial_dims}D, classes "
              f"{list(base.spec.label_names.values())}, patch {base.spec.patch_size})")
        print(f"fine-tune budget {args.seconds:.0f} s per k on {args.threads} threads, val mode '{args.val}', "
              f"batch {args.batch_size}, lr {args.lr}, seed {args.seed}; load average at start "
              f"{load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} on {os.cpu_count()} CPUs")
        print(_fmt_header())
        t0 = time.perf_counter()
        rows = run_curve(base, image, gt, args.ks, args.seconds, registry, case=args.case, val_mode=args.val,
                         seed=args.seed, threads=args.threads, batch_size=args.batch_size, lr=args.lr)
    load1 = os.getloadavg()
    print(f"total {time.perf_counter() - t0:.0f} s; load average at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    d = [r["dice_3d"] for r in rows]
    rises = all(b >= a for a, b in zip(d, d[1:]))
    print(f"curve (3D Dice): {' -> '.join(f'{x:.3f}' for x in d)}; monotone non-decreasing: {rises}; "
          f"last vs base: {d[-1] - d[0]:+.3f}")
    stem = args.tag if args.case == "spleen" and args.val == "split" else f"{args.tag}_{args.case}_{args.val}"
    csv_path = write_csv(rows, args.out / f"{stem}.csv")
    png = plot(rows, args.out / f"{stem}.png",
               f"{desc}\nbase {base.model_id}; {args.seconds:.0f} s fine-tune/k on {args.threads} threads "
               f"(load ~{np.mean([r['load_1min'] for r in rows]):.1f}), val '{args.val}'")
    print(f"wrote {csv_path} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
