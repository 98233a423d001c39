"""Score a model on the held-out TEST patients of a real multi-case dataset (fixed split of
``napari_attnseg.benchmark.splits``: never used for training or model selection).

    .venv/bin/python benchmarks/bench_real_models.py acdc --model /tmp/attnseg_real/acdc-cardiac-mr-2d \
        --json benchmarks/results/acdc_test.json

Per volume: Dice of every class (an independent numpy computation, 2|A∩B| / (|A| + |B|)),
HD95 in mm where the dataset has real spacing (CHAOS; not ACDC, whose files carry no voxel size),
the mean over classes; then the mean over volumes with a seeded 95 % bootstrap CI (2000
resamples over volumes). Classes absent from both the truth and the prediction of a volume are
skipped for that volume; OpenKBP scores only the organs contoured for that patient. Inference
goes through the same code path as ``attnseg predict`` (read_volume -> predict); seconds per
volume are wall-clock on this machine (threads as given). The intensity check segments the
first test volume again after ``x * 1000 + 50`` and reports the voxel agreement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_attnseg.benchmark.splits import case_of, split_subjects  # noqa: E402
from napari_attnseg.benchmark.stats import bootstrap_ci  # noqa: E402
from napari_attnseg.training.dataset import subject_of  # noqa: E402

def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


REAL_SPACING = {"acdc": False, "chaos_mr_t2": True, "openkbp_ct": True}


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    a, b = int(pred.sum()), int(gt.sum())
    return 1.0 if a + b == 0 else 2.0 * int(np.logical_and(pred, gt).sum()) / (a + b)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", choices=sorted(REAL_SPACING))
    ap.add_argument("--model", required=True, help="model folder or registry reference")
    ap.add_argument("--data", default=os.environ.get("ATTNSEG_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="score only the first N test volumes")
    ap.add_argument("--subjects", default="test", choices=("test", "validation"),
                    help="the held-out test patients (default), or the model's own validation patients "
                         "(its provenance's val_cases: for choosing a post-processing step without the test set)")
    ap.add_argument("--json", default=None, help="write per-volume results and the summary here")
    ap.add_argument("--postprocess", nargs="*", default=None, metavar="STEP",
                    help="replace the model's post-processing steps (none given: the plain argmax), "
                         "e.g. --postprocess largest_component_3d")
    ap.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                    help="mirror test-time augmentation on/off (default: the model's declared default, "
                         "as attnseg predict)")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                    help="inference precision (default auto, as attnseg predict --precision)")
    args = ap.parse_args(argv)

    import torch

    from napari_attnseg.inference.predictor import PredictConfig, predict
    from napari_attnseg.io import read_volume
    from napari_attnseg.metrics.report import label_metrics
    from napari_attnseg.model.checkpoint import load_model
    from napari_attnseg.model.registry import ModelRegistry

    torch.set_num_threads(args.threads)
    folder = Path(args.data) / args.dataset
    if not folder.is_dir():
        print(f"skipped: {folder} is absent")
        return 0
    _, test_subjects = split_subjects(folder)
    meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    model = load_model(ModelRegistry().resolve(args.model))
    if args.subjects == "validation":
        test_subjects = [str(s) for s in (model.spec.provenance or {}).get("val_cases", [])]
        if not test_subjects:
            print(f"{args.model} records no validation patients (provenance val_cases)")
            return 2
        print(f"scoring the model's {len(test_subjects)} validation patients: {' '.join(test_subjects)}")
    entries = [e for e in meta["training"] if subject_of(case_of(e)) in set(test_subjects)]
    if args.limit:
        entries = entries[: args.limit]
    if args.postprocess is not None:
        import dataclasses

        model = dataclasses.replace(model, spec=dataclasses.replace(model.spec, postprocess=tuple(args.postprocess)))
    config = PredictConfig(tta=args.tta, precision=args.precision)
    classes = [int(k) for k in model.spec.label_names if int(k) > 0]
    rows, check = [], None
    rows_tta, rows_prec = [], []
    for n, e in enumerate(entries):
        image = read_volume(folder / e["image"])
        gt = np.asarray(read_volume(folder / e["label"]).data)
        t0 = time.perf_counter()
        res = predict(model, image, config)
        pred = res.labels
        seconds = time.perf_counter() - t0
        rows_tta.append(res.provenance.get("tta"))
        rows_prec.append(res.provenance.get("precision"))
        scored = [c for c in classes if c in set(e.get("contoured", classes))] if "contoured" in e else classes
        per_class = {}
        for c in scored:
            p, g = pred == c, gt == c
            if not p.any() and not g.any():
                continue
            row = {"dice": dice(p, g)}
            if REAL_SPACING[args.dataset]:
                m = label_metrics(pred, gt, image.spacing, c)
                row["hd95"] = float(m["hd95"])
            per_class[c] = row
        rows.append({"case": case_of(e), "seconds": seconds, "classes": per_class,
                     "mean_dice": float(np.mean([r["dice"] for r in per_class.values()])) if per_class else float("nan")})
        detail = ", ".join("%d:%.3f" % (c, r["dice"]) for c, r in per_class.items())
        print(f"{case_of(e)}: mean Dice {rows[-1]['mean_dice']:.4f} ({detail}) {seconds:.2f} s", flush=True)
        if n == 0:
            scaled = image.__class__(**{**image.__dict__, "data": np.asarray(image.data, np.float32) * 1000 + 50})
            pred2 = predict(model, scaled, config).labels
            check = float((pred2 == pred).mean())
    summary = {"dataset": args.dataset, "model": args.model, "n_volumes": len(rows),
               "test_subjects": test_subjects, "machine": cpu_name(),
               "threads": args.threads, "postprocess": list(model.spec.postprocess), "tta": args.tta,
               "precision": args.precision}
    summary["ran"] = {"tta": rows_tta[0] if rows_tta else None, "precision": rows_prec[0] if rows_prec else None}
    mean, lo, hi = bootstrap_ci([r["mean_dice"] for r in rows])
    summary["mean_dice"] = [mean, lo, hi]
    for c in classes:
        vals = [r["classes"][c]["dice"] for r in rows if c in r["classes"]]
        summary[f"dice_{model.spec.label_names[c]}"] = list(bootstrap_ci(vals))
        if REAL_SPACING[args.dataset]:
            hd = [r["classes"][c]["hd95"] for r in rows if c in r["classes"] and np.isfinite(r["classes"][c]["hd95"])]
            summary[f"hd95_mm_{model.spec.label_names[c]}"] = list(bootstrap_ci(hd))
    summary["seconds_per_volume"] = float(np.mean([r["seconds"] for r in rows]))
    summary["agreement_after_x1000_plus_50"] = check
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"summary": summary, "volumes": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
