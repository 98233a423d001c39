"""Scribble correction measured with a simulated user (and the stroke latency).

The simulated user (``napari_attnseg.interactive.simulate``) puts each interaction into the
largest error region of the slice, with the class the ground truth has there. Methods:

* ``scribble``: a 3-px stroke along the region's medial axis, then ``correct_slice`` (the
  model's probabilities + geodesic stroke evidence + hard constraints + dense CRF);
* ``scribble-nogeo``: the same strokes, evidence only at the strokes (tau 0.5 mm): clamps + CRF;
* ``scribble-nocrf``: geodesic evidence and clamps, the CRF's pairwise weights 0;
* ``scribble-fullres``: ``scribble`` with the geodesic search always at full resolution
  (``geodesic_max_pixels=0``; ``scribble`` coarsens windows over 512² px, e.g. HC18's images);
* ``brush``: napari's brush along the same path, radius fitted to the region (<= 5 px).

Prints mean slice Dice (mean over the foreground classes present) after 0, 1, 3, 5, 10
interactions, how many slices reached 0.9 and after how many interactions, and the seconds of
compute per interaction; then the latency of one stroke at 256² and of "apply to volume" on
256² x 30. Data: ACDC test patients (``benchmark/splits.py``; needs a trained ACDC model), the
spleen CT with the shipped CT model, CHAOS test patients and HC18 test images with their shipped
models (``--chaos N``, ``--hc18 N``).

    python benchmarks/bench_scribbles.py --acdc-model /tmp/acdc_model --acdc-patients 6 --spleen
    python benchmarks/bench_scribbles.py --snapshot /tmp/attnseg_real/acdc.ckpt/checkpoint.pt /tmp/acdc_model
    python benchmarks/bench_scribbles.py --acdc-model /tmp/acdc_model --acdc-patients 0 --finetune

``--finetune`` (a): the ACDC model fine-tuned for a fixed time on a few test patients with their
real scribbles (Valvano et al. 2021) or their full masks, scored on other test patients.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_attnseg.crf.dense_crf import normalize_intensity
from napari_attnseg.interactive import IGNORE, ScribbleParams, correct_slice, propagate
from napari_attnseg.interactive.simulate import next_brush, next_scribble, slice_dice

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
STEPS = (1, 3, 5, 10)
METHODS = ("scribble", "scribble-nogeo", "scribble-nocrf", "scribble-fullres", "brush")


def snapshot(ckpt: str, out: str) -> None:
    """A model folder from an ``attnseg train`` checkpoint of ``scripts/train_real_models.sh``
    (ACDC: 2D, channels 16..256, 4 classes, MR preset), with its best weights."""
    import torch

    from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
    from napari_attnseg.model.checkpoint import ModelSpec, save_model

    ck = torch.load(ckpt, map_location="cpu", weights_only=True)
    arch = UNetConfig(spatial_dims=2, in_channels=1, out_channels=4, channels=(16, 32, 64, 128, 256))
    names = {0: "background", 1: "right ventricle", 2: "myocardium", 3: "left ventricle"}
    spec = ModelSpec(arch=arch, label_names=names, modality="MR", normalization={"preset": "MR"},
                     patch_size=(224, 224), name="acdc-snapshot",
                     provenance={"checkpoint": ckpt, "epoch": int(ck["epoch"]),
                                 "best_epoch": int(ck["best_epoch"]),
                                 "best_val_dice": float(ck["best_dice"])})
    net = AttentionUNet(arch)
    net.load_state_dict(ck["best_state"])
    save_model(out, net, spec)
    print(f"wrote {out}: epoch {ck['epoch']}, best epoch {ck['best_epoch']}, "
          f"validation Dice {ck['best_dice']:.4f}")


def predict(model, vol):
    from napari_attnseg.inference.predictor import PredictConfig
    from napari_attnseg.inference.predictor import predict as run

    return np.asarray(run(model, vol, PredictConfig(device="cpu")).probabilities, np.float32)


def acdc_cases(model_dir: str, n_patients: int, skip: int, slices_per_case: int):
    from napari_attnseg.benchmark.splits import split_subjects
    from napari_attnseg.io import read_volume
    from napari_attnseg.model.checkpoint import load_model

    model = load_model(model_dir)
    _, test = split_subjects(DATA / "acdc")
    cases = []
    for patient in test[skip: skip + n_patients]:
        frame = sorted((DATA / "acdc" / "imagesTr").glob(f"{patient}_frame*.nii.gz"))[0]
        img = read_volume(frame)
        gt = np.asarray(read_volume(DATA / "acdc" / "labelsTr" / frame.name).data).astype(np.uint8)
        probs = predict(model, img)
        fg = [z for z in range(gt.shape[0]) if (gt[z] > 0).sum() > 200]
        pick = [fg[int(round(i))] for i in np.linspace(0, len(fg) - 1, min(slices_per_case, len(fg)))]
        cases.append((f"acdc/{frame.name.split('.')[0]}", np.asarray(img.data, np.float32), gt,
                      probs, (1.0, 1.0), sorted(set(pick)), "MR"))
    return cases


def spleen_case(slices: int):
    from napari_attnseg.io import read_volume
    from napari_attnseg.model.checkpoint import load_model
    from napari_attnseg.model.registry import ModelRegistry

    img = read_volume(DATA / "ct_spleen" / "image.nii.gz")
    gt = (np.asarray(read_volume(DATA / "ct_spleen" / "spleen_mask.nii.gz").data) > 0).astype(np.uint8)
    model = load_model(ModelRegistry().resolve("ct-phantom-2d"))
    p = predict(model, img)
    probs = np.stack([p[0], 1.0 - p[0]])  # organ vs the rest: any structure = spleen candidate
    fg = [z for z in range(gt.shape[0]) if gt[z].sum() > 200]
    pick = [fg[int(round(i))] for i in np.linspace(0, len(fg) - 1, min(slices, len(fg)))]
    return [("ct_spleen", np.asarray(img.data, np.float32), gt, probs,
             tuple(img.spacing[1:]), sorted(set(pick)), "CT")]


def chaos_cases(n_patients: int, slices_per_case: int):
    """CHAOS T2-SPIR test patients (the shipped model's held-out split) with the shipped
    ``chaos-abdomen-mr-2d``; slices taken along the axis the 2D model slices (axial)."""
    from napari_attnseg.benchmark.splits import split_subjects
    from napari_attnseg.inference.predictor import slice_order
    from napari_attnseg.io import read_volume
    from napari_attnseg.model.checkpoint import load_model
    from napari_attnseg.model.registry import ModelRegistry

    folder = DATA / "chaos_mr_t2"
    model = load_model(ModelRegistry().resolve("chaos-abdomen-mr-2d"))
    _, test = split_subjects(folder)
    cases = []
    for patient in test[:n_patients]:
        img = read_volume(folder / "imagesTr" / f"{patient}.nii.gz")
        lab = read_volume(folder / "labelsTr" / f"{patient}.nii.gz")
        perm = slice_order(img)
        probs = np.transpose(predict(model, img), (0,) + tuple(a + 1 for a in perm))
        data = np.transpose(np.asarray(img.data, np.float32), perm)
        gt = np.transpose(np.asarray(lab.data), perm).astype(np.uint8)
        fg = [z for z in range(gt.shape[0]) if (gt[z] > 0).sum() > 200]
        pick = [fg[int(round(i))] for i in np.linspace(0, len(fg) - 1, min(slices_per_case, len(fg)))]
        cases.append((f"chaos/{patient}", data, gt, probs, tuple(img.spacing[a] for a in perm[1:]),
                      sorted(set(pick)), "MR"))
    return cases


def hc18_cases(n_images: int):
    """HC18 test images (the shipped model's split: ``fixed_split`` seed 0, 20 %), evenly spaced
    over the test list, with the shipped ``hc18-ultrasound-2d``: one 2D slice per image, the
    pixel size from HC18's CSV."""
    from napari_attnseg.benchmark.split import apply_split, fixed_split
    from napari_attnseg.model.checkpoint import load_model
    from napari_attnseg.model.registry import ModelRegistry
    from napari_attnseg.training.dataset import read_hc18

    pairs, _ = read_hc18(DATA / "hc18")
    _, test = apply_split(pairs, fixed_split(pairs, 0, 0.2))
    model = load_model(ModelRegistry().resolve("hc18-ultrasound-2d"))
    cases = []
    for i in np.linspace(0, len(test) - 1, min(n_images, len(test))):
        p = test[int(round(i))]
        img = np.asarray(p.image.data, np.float32)
        probs = predict(model, p.image)
        gt = (np.asarray(p.labels.data) > 0).astype(np.uint8)
        cases.append((f"hc18/{Path(p.image.source).stem}", img[None], gt[None], probs[:, None],
                      tuple(p.image.spacing), [0], "US"))
    return cases


def run_user(method: str, probs, image, norm, gt, spacing, params: ScribbleParams, n: int):
    """Dice after 0..n interactions and the compute seconds of each."""
    base = probs.argmax(axis=0).astype(np.uint8)
    pred, scr = base.copy(), np.full(gt.shape, IGNORE, np.uint8)
    dice, secs = [slice_dice(pred, gt)], []
    if method == "scribble-nogeo":
        params = replace(params, tau_mm=0.5)
    elif method == "scribble-fullres":
        params = replace(params, geodesic_max_pixels=0)
    elif method == "scribble-nocrf":
        crf = params.crf_params()
        params = replace(params, crf=replace(crf, gaussian_weight=0.0, bilateral_weight=0.0))
    for _ in range(n):
        if method == "brush":
            stroke = next_brush(pred, gt)
        else:
            stroke = next_scribble(pred, gt)
        if stroke is None:
            dice.append(dice[-1])
            secs.append(0.0)
            continue
        t0 = time.perf_counter()
        if method == "brush":
            pred = pred.copy()
            pred[stroke.mask] = stroke.label
        else:
            scr[stroke.mask] = stroke.label
            pred = correct_slice(probs, image, scr, spacing, params, base_labels=base,
                                 norm=norm).labels
        secs.append(time.perf_counter() - t0)
        dice.append(slice_dice(pred, gt))
    return dice, secs


def evaluate(cases, params: ScribbleParams, n: int, methods) -> dict:
    out: dict = {}
    for m in methods:
        curves, times = [], []
        for name, img, gt, probs, sp, picks, modality in cases:
            prm = replace(params, modality=modality)
            norm = normalize_intensity(img)
            for z in picks:
                d, s = run_user(m, probs[:, z], img[z], norm[z], gt[z], sp, prm, n)
                curves.append(d)
                times.extend(s)
        arr = np.array(curves)
        # NoC@0.9 on the slices that start below 0.9 (a miss within n counts as n)
        low = [c for c in curves if c[0] < 0.9]
        reach = [next((i for i, v in enumerate(c) if v >= 0.9), None) for c in low]
        hit = [r for r in reach if r is not None]
        out[m] = {"n_slices": len(curves), "dice": {k: float(arr[:, k].mean()) for k in (0,) + STEPS if k <= n},
                  "reached_0.9": f"{len(hit)}/{len(low)}",
                  "noc_0.9": float(np.mean([n if r is None else r for r in reach])) if low else None,
                  "mean_seconds_per_interaction": float(np.mean(times)) if times else 0.0}
    return out


def print_table(title: str, res: dict) -> None:
    print(f"\n{title}")
    print("| method | slices | Dice 0 | 1 | 3 | 5 | 10 | slices < 0.9 at start that reach 0.9 | "
          "NoC@0.9 (mean; a miss counts 10) | s / interaction |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for m, r in res.items():
        d = r["dice"]
        noc = r["noc_0.9"]
        cells = " | ".join(f"{d[k]:.3f}" if k in d else "-" for k in (0,) + STEPS)
        print(f"| {m} | {r['n_slices']} | {cells} | {r['reached_0.9']} | {'-' if noc is None else f'{noc:.1f}'} | "
              f"{r['mean_seconds_per_interaction']:.3f} |")


def pad_to(a: np.ndarray, shape: tuple, value: float = 0.0) -> np.ndarray:
    pads = [(0, 0)] * (a.ndim - len(shape)) + [((s - n) // 2, s - n - (s - n) // 2)
                                               for n, s in zip(a.shape[-len(shape):], shape)]
    return np.pad(a, pads, constant_values=value)


def latency(cases, params: ScribbleParams, repeat: int = 3) -> None:
    """One stroke at 256² (the case's slices padded to 256²) and apply-to-volume on 256² x 30."""
    name, img, gt, probs, sp, picks, modality = cases[0]
    if max(img.shape[-2:]) > 256:
        print(f"\n(latency at 256x256 skipped: {name} is {img.shape[-2]}x{img.shape[-1]})")
        return
    prm = replace(params, modality=modality)
    img_p = pad_to(img, (256, 256), float(img.min()))
    gt_p = pad_to(gt, (256, 256))
    probs_p = pad_to(probs, (256, 256))
    probs_p[0][probs_p.sum(axis=0) == 0] = 1.0
    norm = normalize_intensity(img_p)
    per_stroke = []
    for z in picks:
        base = probs_p[:, z].argmax(axis=0).astype(np.uint8)
        stroke = next_scribble(base, gt_p[z])
        if stroke is None:
            continue
        scr = np.full(gt_p[z].shape, IGNORE, np.uint8)
        scr[stroke.mask] = stroke.label
        for _ in range(repeat):
            t0 = time.perf_counter()
            correct_slice(probs_p[:, z], img_p[z], scr, sp, prm, base_labels=base, norm=norm[z])
            per_stroke.append(time.perf_counter() - t0)
    print(f"\nper-stroke latency at 256x256 ({name} slices padded, {len(per_stroke)} runs): "
          f"median {statistics.median(per_stroke):.3f} s, max {max(per_stroke):.3f} s")
    reps = int(np.ceil(30 / img.shape[0]))
    vol = np.concatenate([img_p] * reps)[:30]
    gt_v = np.concatenate([gt_p] * reps)[:30]
    pv = np.concatenate([probs_p] * reps, axis=1)[:, :30]
    base = pv.argmax(axis=0).astype(np.uint8)
    scr = np.full(vol.shape, IGNORE, np.uint8)
    keys = [5, 15, 25]
    for z in keys:
        for _ in range(3):
            stroke = next_scribble(base[z], gt_v[z])
            if stroke is not None:
                scr[z][stroke.mask] = stroke.label
    targets = [z for z in range(30) if z not in keys]
    t0 = time.perf_counter()
    res = propagate(pv, vol, scr, (1.0,) + tuple(sp), prm, base_labels=base, targets=targets)
    dt = time.perf_counter() - t0
    d0 = np.mean([slice_dice(base[z], gt_v[z]) for z in targets])
    d1 = np.mean([slice_dice(res.labels[z], gt_v[z]) for z in targets])
    print(f"apply to volume, 256x256x30 ({name} padded and tiled; 3 strokes on each of slices "
          f"{keys}, 27 target slices): {dt:.2f} s; {len(res.changed)} slices changed; Dice of the "
          f"targets {d0:.3f} -> {d1:.3f}")


def finetune_acdc(model_dir: str, seconds: float, lr: float, n_train: int, n_eval: int,
                  pairwise: float) -> None:
    """(a) Fine-tune the ACDC model for ``seconds`` on ``n_train`` test patients (both phases)
    with their real scribbles (partial CE, with and without the gated-CRF term) or their full
    masks; mean foreground Dice (pooled) on ``n_eval`` other test patients' full masks."""
    import torch

    from napari_attnseg.benchmark.splits import split_subjects
    from napari_attnseg.io import read_volume
    from napari_attnseg.model.attention_unet import AttentionUNet
    from napari_attnseg.model.checkpoint import load_model
    from napari_attnseg.training.dataset import TrainingPair, prepare_pairs
    from napari_attnseg.training.loop import TrainConfig, evaluate_dice, train

    base = load_model(model_dir)
    n_classes = base.spec.arch.out_channels
    _, test = split_subjects(DATA / "acdc")
    train_p, eval_p = test[2: 2 + n_train], test[2 + n_train: 2 + n_train + n_eval]

    def load(patients, kind):
        pairs = []
        for patient in patients:
            for f in sorted((DATA / "acdc" / "imagesTr").glob(f"{patient}_frame*.nii.gz")):
                img = read_volume(f)
                lab = read_volume(DATA / "acdc" / kind / f.name)
                data = np.asarray(lab.data).astype(np.uint8)
                if kind == "scribblesTr":
                    mask = data != 4
                    pairs.append(TrainingPair(img, lab.with_data(np.where(mask, data, 0).astype(np.uint8),
                                                                 is_labels=True), mask, patient))
                else:
                    pairs.append(TrainingPair(img, lab.with_data(data, is_labels=True), None, patient))
        return pairs

    masks, scribbles = load(train_p, "labelsTr"), load(train_p, "scribblesTr")
    frac = np.mean([p.reviewed.mean() for p in scribbles])
    eval_items = prepare_pairs(load(eval_p, "labelsTr"), base.spec, n_classes)
    before = evaluate_dice(base.network, eval_items, n_classes)
    print(f"\n(a) ACDC fine-tune: base {model_dir} ({base.spec.provenance.get('epoch', '?')} epochs); "
          f"train patients {' '.join(train_p)} (both phases), held-out {' '.join(eval_p)}; "
          f"scribbles cover {100 * frac:.2f} % of the voxels; {seconds:.0f} s each, lr {lr}")
    print("| labels | loss | steps (best epoch of 10 steps) | held-out Dice (pooled, foreground mean) |")
    print("|---|---|---|---|")
    print(f"| none (base) | - | 0 | {before:.4f} |")
    runs = [("full masks", "Dice + CE", masks, {}),
            ("scribbles", "partial CE", scribbles, {"dice_weight": 0.0}),
            ("scribbles", f"partial CE + gated CRF ({pairwise})", scribbles,
             {"dice_weight": 0.0, "pairwise_weight": pairwise})]
    for what, loss, pairs, extra in runs:
        net = AttentionUNet(base.spec.arch)
        net.load_state_dict(base.network.state_dict())
        cfg = TrainConfig(epochs=1000, steps_per_epoch=10, max_seconds=seconds, batch_size=8,
                          patch_size=(128, 128), lr=lr, early_stopping_patience=0, seed=0,
                          num_threads=2, **extra)
        torch.manual_seed(0)
        # validation = the training patients' own labels (what a user has), never the held-out ones
        res = train(net, base.spec, pairs, pairs, cfg)
        net.load_state_dict(res.state_dict)
        after = evaluate_dice(net, eval_items, n_classes)
        print(f"| {what} | {loss} | {res.steps} ({res.best_epoch}) | {after:.4f} |")


def carry(cases, params: ScribbleParams, every: int = 4, strokes: int = 5) -> None:
    """On each real volume: the simulated user corrects every ``every``-th slice holding
    foreground (``strokes`` scribble interactions each); then the other slices between the first
    and last of them are done by "apply to volume" or by "fill between slices" (signed-distance
    interpolation of the corrected key slices). Dice (mean over those slices) before and after."""
    from napari_attnseg.interactive import fill_between

    print(f"\ncarrying corrections to untouched slices (key slices every {every}, {strokes} "
          "strokes each):")
    print("| volume | key slices | untouched slices | Dice before | apply to volume | fill between | "
          "apply to volume s |")
    print("|---|---|---|---|---|---|---|")
    for name, img, gt, probs, sp, _, modality in cases:
        prm = replace(params, modality=modality)
        fg = [z for z in range(gt.shape[0]) if gt[z].any()]
        keys = fg[::every]
        if len(keys) < 2:
            continue
        base = probs.argmax(axis=0).astype(np.uint8)
        norm = normalize_intensity(img)
        scr = np.full(gt.shape, IGNORE, np.uint8)
        cur = base.copy()
        for z in keys:
            for _ in range(strokes):
                stroke = next_scribble(cur[z], gt[z])
                if stroke is None:
                    break
                scr[z][stroke.mask] = stroke.label
                cur[z] = correct_slice(probs[:, z], img[z], scr[z], sp, prm, base_labels=base[z],
                                       norm=norm[z]).labels
        between = [z for z in range(keys[0], keys[-1] + 1) if z not in keys]
        t0 = time.perf_counter()
        res = propagate(probs, img, scr, (1.0,) + tuple(sp), prm, base_labels=cur, targets=between)
        dt = time.perf_counter() - t0
        filled, _ = fill_between(cur, keys, (1.0,) + tuple(sp))

        def mean(lab):
            return np.mean([slice_dice(lab[z], gt[z]) for z in between])

        print(f"| {name} | {len(keys)} | {len(between)} | {mean(cur):.3f} | {mean(res.labels):.3f} | "
              f"{mean(filled):.3f} | {dt:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snapshot", nargs=2, metavar=("CHECKPOINT", "OUT"))
    ap.add_argument("--acdc-model", default=None)
    ap.add_argument("--acdc-patients", type=int, default=6)
    ap.add_argument("--acdc-skip", type=int, default=2, help="test patients skipped (used for tuning)")
    ap.add_argument("--slices-per-case", type=int, default=3)
    ap.add_argument("--spleen", action="store_true")
    ap.add_argument("--spleen-slices", type=int, default=8)
    ap.add_argument("--chaos", type=int, default=0, metavar="PATIENTS",
                    help="CHAOS test patients (shipped chaos-abdomen-mr-2d)")
    ap.add_argument("--hc18", type=int, default=0, metavar="IMAGES",
                    help="HC18 test images (shipped hc18-ultrasound-2d)")
    ap.add_argument("--interactions", type=int, default=10)
    ap.add_argument("--methods", default="scribble,scribble-nogeo,scribble-nocrf,brush")
    ap.add_argument("--params", default="{}", help="ScribbleParams fields as JSON")
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--carry", action="store_true", help="apply to volume / fill between on real volumes")
    ap.add_argument("--json", default=None)
    ap.add_argument("--finetune", action="store_true", help="(a): scribble vs mask fine-tune")
    ap.add_argument("--finetune-seconds", type=float, default=120.0)
    ap.add_argument("--finetune-lr", type=float, default=3e-4)
    ap.add_argument("--finetune-patients", type=int, nargs=2, default=(4, 4), metavar=("TRAIN", "EVAL"))
    ap.add_argument("--pairwise-weight", type=float, default=0.5)
    args = ap.parse_args()
    if args.snapshot:
        snapshot(*args.snapshot)
        return
    params = ScribbleParams(**json.loads(args.params))
    methods = [m for m in args.methods.split(",") if m]
    results = {}
    groups = []
    if args.acdc_model and args.acdc_patients > 0:
        groups.append(("ACDC", acdc_cases(args.acdc_model, args.acdc_patients, args.acdc_skip,
                                          args.slices_per_case)))
    if args.spleen:
        groups.append(("spleen CT", spleen_case(args.spleen_slices)))
    if args.chaos:
        groups.append(("CHAOS MR", chaos_cases(args.chaos, args.slices_per_case)))
    if args.hc18:
        groups.append(("HC18 ultrasound", hc18_cases(args.hc18)))
    for title, cases in groups:
        res = evaluate(cases, params, args.interactions, methods)
        results[title] = res
        print_table(f"{title}: {', '.join(c[0] for c in cases)}", res)
        if not args.no_latency:
            latency(cases, params)
        if args.carry:
            carry(cases, params)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.finetune:
        finetune_acdc(args.acdc_model, args.finetune_seconds, args.finetune_lr,
                      *args.finetune_patients, args.pairwise_weight)


if __name__ == "__main__":
    main()
