"""(c) of issue 13: does a fine-tune from scribbles on 3 slices raise Dice on the slices nobody
touched, in 30 / 60 / 120 s of wall time on 2 threads?

Per unseen scan (ACDC test patients of ``benchmark/splits.py``, end-diastole and end-systole,
with the shipped ``acdc-cardiac-mr-2d``; the spleen CT with ``ct-phantom-2d``, organ+lesion
counted as spleen): the simulated user (``interactive.simulate``) scribbles 3 slices (at 1/4,
1/2 and 3/4 of the slices holding foreground), ``--interactions`` strokes each, every stroke
followed by ``correct_slice``; then each variant of ``training.scribble_finetune`` adapts a copy
of the model and the whole scan is predicted again. Score: mean foreground Dice over the
*untouched* slices (per class pooled over those slices, classes present in the reference or
the prediction), gain vs the base model, 95 % bootstrap CI over the ACDC volumes.

One run per variant and volume lasts the largest budget; the weights at the smaller budgets
are its snapshots (the learning rate is constant after a 5-step warm-up, so a run's weights at
t seconds are those of a run with a t-second budget; the clock includes the preparation).
``--steps N`` replaces the time budgets by a fixed step count (development, load-independent).

    python benchmarks/bench_scribble_finetune.py --patients 8 --spleen --seconds 30 60 120 \\
        --variants base,scribbles-pce,corrected --json benchmarks/results/scribble_finetune.json
    nice -n 15 python benchmarks/bench_scribble_finetune.py --patients 4 --steps 60
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

VARIANTS = {
    "scribbles-pce": {"target": "scribbles", "consistency": 0.0},
    "scribbles-gcrf": {"target": "scribbles", "pairwise_weight": 0.5, "consistency": 0.0},
    "corrected": {"target": "corrected", "consistency": 0.0},
    "corrected-cons": {"target": "corrected", "consistency": 1.0},
    "corrected-cons-lr1e-4": {"target": "corrected", "consistency": 1.0, "lr": 1e-4},
    "corrected-gate": {"target": "corrected", "consistency": 1.0, "gate": True},
    "corrected-cons0.3": {"target": "corrected", "consistency": 0.3},
    "corrected-gate0": {"target": "corrected", "consistency": 0.0, "gate": True},
    "corrected-aug": {"target": "corrected", "consistency": 0.0, "augment": True},
    "corrected-crops": {"target": "corrected", "consistency": 0.0, "augment": True, "patch_size": 128},
    "corrected-all": {"target": "corrected", "consistency": 0.0, "train": "all"},
}


def load_cases(n_patients: int, skip: int, spleen: bool):
    from napari_attnseg.benchmark.splits import split_subjects
    from napari_attnseg.io import read_volume

    cases = []
    _, test = split_subjects(DATA / "acdc")
    for patient in test[skip: skip + n_patients]:
        for f in sorted((DATA / "acdc" / "imagesTr").glob(f"{patient}_frame*.nii.gz")):
            gt = np.asarray(read_volume(DATA / "acdc" / "labelsTr" / f.name).data).astype(np.int64)
            cases.append(("acdc", f.name.split(".")[0], read_volume(f), gt))
    if spleen:
        img = read_volume(DATA / "ct_spleen" / "image.nii.gz")
        gt = (np.asarray(read_volume(DATA / "ct_spleen" / "spleen_mask.nii.gz").data) > 0).astype(np.int64)
        cases.append(("spleen", "ct_spleen", img, gt))
    return cases


def pick_slices(gt: np.ndarray, n: int = 3, min_px: int = 50) -> list[int]:
    fg = [z for z in range(gt.shape[0]) if (gt[z] > 0).sum() >= min_px]
    return sorted({fg[int(round(q * (len(fg) - 1)))] for q in np.linspace(0.25, 0.75, n)})


def simulate_user(probs: np.ndarray, image, gt: np.ndarray, slices, interactions: int, params):
    """Strokes (IGNORE elsewhere) and the corrected labels of the scribbled slices."""
    from napari_attnseg.crf.dense_crf import normalize_intensity
    from napari_attnseg.interactive import IGNORE, correct_slice
    from napari_attnseg.interactive.simulate import next_scribble, slice_dice

    raw = np.asarray(image.data, np.float32)
    sp = tuple(float(s) for s in image.spacing)[-2:]
    norm = normalize_intensity(raw)
    scr = np.full(gt.shape, IGNORE, np.uint8)
    corrected = probs.argmax(1).astype(np.int64)
    before, after = [], []
    for z in slices:
        base = corrected[z].astype(np.uint8)
        cur = base.copy()
        before.append(slice_dice(cur, gt[z]))
        for _ in range(interactions):
            stroke = next_scribble(cur, gt[z].astype(np.uint8))
            if stroke is None:
                break
            scr[z][stroke.mask] = stroke.label
            cur = correct_slice(probs[z], raw[z], scr[z], sp, params, base_labels=base,
                                norm=norm[z]).labels
        corrected[z] = cur
        after.append(slice_dice(cur, gt[z]))
    return scr, corrected, float(np.mean(before)), float(np.mean(after))


def untouched_dice(pred: np.ndarray, gt: np.ndarray, touched) -> float:
    keep = [z for z in range(gt.shape[0]) if z not in set(touched)]
    p, g = pred[keep], gt[keep]
    scores = []
    for c in sorted((set(np.unique(g).tolist()) | set(np.unique(p).tolist())) - {0}):
        a, b = p == c, g == c
        scores.append(2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)))
    return float(np.mean(scores)) if scores else 1.0


def bootstrap(gains, n: int = 10000, seed: int = 0):
    g = np.asarray(gains, float)
    if g.size < 2:
        return float(g.mean()) if g.size else float("nan"), None, None
    rng = np.random.default_rng(seed)
    means = g[rng.integers(0, g.size, size=(n, g.size))].mean(axis=1)
    return float(g.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def run(args) -> dict:
    import torch

    from napari_attnseg.interactive import ScribbleParams
    from napari_attnseg.model.checkpoint import load_model
    from napari_attnseg.model.registry import ModelRegistry
    from napari_attnseg.training.dataset import _normalize
    from napari_attnseg.training.scribble_finetune import (ScribbleFinetuneConfig, predict_slices,
                                                           prepare_targets, scribble_finetune)

    torch.set_num_threads(args.threads)
    reg = ModelRegistry()
    models = {"acdc": load_model(reg.resolve("acdc-cardiac-mr-2d")),
              "spleen": load_model(reg.resolve("ct-phantom-2d"))}
    budgets = [float(s) for s in args.seconds]
    variants = [v for v in args.variants.split(",") if v and v != "base"]
    extra = json.loads(args.config)
    rows = []
    for kind, name, image, gt in load_cases(args.patients, args.skip, args.spleen):
        base = models[kind]
        params = ScribbleParams(modality="CT" if kind == "spleen" else "MR")
        images = _normalize(image, base.spec).astype(np.float32)
        probs = predict_slices(base.network, images)
        if kind == "spleen":  # organ or lesion = spleen candidate
            probs = np.stack([probs[:, 0], 1.0 - probs[:, 0], np.zeros_like(probs[:, 0])], axis=1)
        slices = pick_slices(gt)
        scr, corrected, d_before, d_after = simulate_user(probs, image, gt, slices, args.interactions, params)

        def score(p):
            lab = p.argmax(1)
            if kind == "spleen":
                lab = (lab > 0).astype(np.int64)
            return untouched_dice(lab, gt, slices)

        base_dice = score(predict_slices(base.network, images))
        row = {"kind": kind, "case": name, "slices": slices, "n_slices": int(gt.shape[0]),
               "scribbled_px": int((scr != 255).sum()), "user_dice_before": d_before,
               "user_dice_after": d_after, "base": base_dice, "variants": {}}
        print(f"{name}: scribbled {slices} of {gt.shape[0]} ({row['scribbled_px']} px), user "
              f"{d_before:.3f} -> {d_after:.3f}; base untouched {base_dice:.4f}", flush=True)
        for v in variants:
            opts = {**VARIANTS[v], **extra}
            if args.steps:
                cfg = ScribbleFinetuneConfig(max_seconds=None, max_steps=args.steps, num_threads=args.threads,
                                             seed=args.seed, **opts)
            else:
                cfg = ScribbleFinetuneConfig(max_seconds=max(budgets), snapshots=tuple(budgets),
                                             num_threads=args.threads, seed=args.seed, **opts)
            tgt = prepare_targets(base, image, scr, cfg, params, corrected=corrected)
            res = scribble_finetune(base, targets=tgt, config=cfg)
            net = res.network
            out = {"steps": res.steps, "seconds": res.seconds, "accepted": res.accepted,
                   "prepare_s": round(tgt.seconds, 3), "gate": res.gate, "note": res.note,
                   "loadavg_1min_after": round(os.getloadavg()[0], 2)}
            if args.steps:
                out["dice"] = {"steps": score(predict_slices(net, images))}
            else:
                out["dice"] = {}
                for b in budgets:
                    net.load_state_dict(res.snapshots[b])
                    out["dice"][str(int(b))] = score(predict_slices(net, images))
            row["variants"][v] = out
            print(f"  {v}: {res.steps} steps {res.seconds:.0f} s, untouched "
                  + ", ".join(f"{k}: {d:.4f} ({d - base_dice:+.4f})" for k, d in out["dice"].items()),
                  flush=True)
        rows.append(row)
    return summarize(rows, variants, ["steps"] if args.steps else [str(int(b)) for b in budgets], args)


def summarize(rows, variants, keys, args) -> dict:
    summary = {}
    for kind in ("acdc", "spleen"):
        rs = [r for r in rows if r["kind"] == kind]
        if not rs:
            continue
        s = {"volumes": len(rs), "base": float(np.mean([r["base"] for r in rs])), "variants": {}}
        for v in variants:
            s["variants"][v] = {}
            for k in keys:
                gains = [r["variants"][v]["dice"][k] - r["base"] for r in rs]
                mean, lo, hi = bootstrap(gains)
                s["variants"][v][k] = {"dice": float(np.mean([r["variants"][v]["dice"][k] for r in rs])),
                                       "gain": mean, "ci95": [lo, hi],
                                       "improved": int(sum(g > 0 for g in gains)),
                                       "steps": float(np.mean([r["variants"][v]["steps"] for r in rs]))}
        summary[kind] = s
        print(f"\n{kind}: {len(rs)} volumes, base untouched Dice {s['base']:.4f}")
        print("| variant | budget | steps | untouched Dice | gain vs base [95 % CI] | volumes improved |")
        print("|---|---|---|---|---|---|")
        for v in variants:
            for k in keys:
                e = s["variants"][v][k]
                ci = "" if e["ci95"][0] is None else f" [{e['ci95'][0]:+.4f}, {e['ci95'][1]:+.4f}]"
                budget = f"{args.steps} steps" if k == "steps" else f"{k} s"
                print(f"| {v} | {budget} | {e['steps']:.0f} | {e['dice']:.4f} | {e['gain']:+.4f}{ci} | "
                      f"{e['improved']}/{len(rs)} |")
    return {"summary": summary, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=8, help="ACDC test patients (2 volumes each)")
    ap.add_argument("--skip", type=int, default=2, help="test patients skipped (003, 009: used for development)")
    ap.add_argument("--spleen", action="store_true")
    ap.add_argument("--interactions", type=int, default=5)
    ap.add_argument("--seconds", type=float, nargs="+", default=[30, 60, 120])
    ap.add_argument("--steps", type=int, default=0, help="fixed steps instead of time budgets")
    ap.add_argument("--variants", default="scribbles-pce,corrected")
    ap.add_argument("--config", default="{}", help="ScribbleFinetuneConfig fields for every variant (JSON)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    t0 = time.time()
    load0 = os.getloadavg()
    res = run(args)
    res["meta"] = {"args": vars(args), "machine": platform.processor() or platform.machine(),
                   "cpus": os.cpu_count(), "loadavg_start": load0,
                   "wall_s": round(time.time() - t0, 1), "loadavg_end": os.getloadavg()}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
