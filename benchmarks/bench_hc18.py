"""HC18 at the challenge's standard: Dice and head-circumference error on held-out subjects.

    .venv/bin/python benchmarks/bench_hc18.py --model hc18-ultrasound-2d [--limit 40] [--json out.json]

Test subjects: the benchmark split (``fixed_split``, seed 0, 20 % of subjects), which the shipped
model never saw. For every image: the model's mask as predicted ("raw"), and post-processed as
the model's card describes (largest component, holes filled, the fitted ellipse drawn:
"ellipse"). Dice (numpy, 2|A∩B|/(|A|+|B|)) against the expert mask; HC = circumference of the
ellipse fitted to the mask's outline, in mm with the image's pixel size from the CSV, against the
sonographer's ``head_circumference_mm``. Means with 95 % bootstrap CIs over images.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_real_models import cpu_name, dice  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="hc18-ultrasound-2d")
    ap.add_argument("--data", default=os.environ.get("ATTNSEG_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import torch

    from napari_attnseg.benchmark.split import apply_split, fixed_split
    from napari_attnseg.benchmark.stats import bootstrap_ci
    from napari_attnseg.inference.postprocess import apply_postprocess, head_circumference
    from napari_attnseg.inference.predictor import predict
    from napari_attnseg.model.checkpoint import load_model
    from napari_attnseg.model.registry import ModelRegistry
    from napari_attnseg.training.dataset import read_hc18

    torch.set_num_threads(args.threads)
    folder = Path(args.data) / "hc18"
    if not folder.is_dir():
        print(f"skipped: {folder} is absent")
        return 0
    with open(folder / "pixel_size_and_hc.csv", newline="", encoding="utf-8") as fh:
        ref_hc = {r["filename"]: float(r["head_circumference_mm"]) for r in csv.DictReader(fh)}
    pairs, _ = read_hc18(folder)
    _, test = apply_split(pairs, fixed_split(pairs, 0, 0.2))
    if args.limit:
        test = test[: args.limit]
    model = load_model(ModelRegistry().resolve(args.model))
    rows = []
    for p in test:
        name = Path(p.image.source).name
        t0 = time.perf_counter()
        pred = predict(model, p.image)  # (with the model's own post-processing, if it has one)
        seconds = time.perf_counter() - t0
        raw = pred.probabilities.argmax(axis=0)  # the network's argmax, before any post-processing
        post = apply_postprocess(raw, ["largest_component", "fill_holes", "ellipse"])
        gt = np.asarray(p.labels.data) > 0
        px = p.image.spacing
        row = {"image": name, "seconds": seconds, "hc_ref_mm": ref_hc.get(name, float("nan"))}
        for key, m in (("raw", raw > 0), ("ellipse", post > 0)):
            hc, _ = head_circumference(m, px)
            row[f"dice_{key}"] = dice(m, gt)
            row[f"hc_{key}_mm"] = hc
            row[f"hc_err_{key}_mm"] = abs(hc - row["hc_ref_mm"]) if np.isfinite(hc) else float("nan")
        rows.append(row)
        print(f"{name}: Dice raw {row['dice_raw']:.4f} ellipse {row['dice_ellipse']:.4f}; HC {row['hc_ellipse_mm']:.1f} "
              f"vs {row['hc_ref_mm']:.1f} mm; {seconds:.2f} s", flush=True)
    summary = {"model": args.model, "n_images": len(rows), "machine": cpu_name(), "threads": args.threads}
    for key in ("dice_raw", "dice_ellipse", "hc_err_raw_mm", "hc_err_ellipse_mm"):
        summary[key] = list(bootstrap_ci([r[key] for r in rows]))
    summary["median_hc_err_ellipse_mm"] = float(np.nanmedian([r["hc_err_ellipse_mm"] for r in rows]))
    summary["images_hc_err_over_10mm"] = int(sum(r["hc_err_ellipse_mm"] > 10 for r in rows))
    summary["failed_fits"] = int(sum(not np.isfinite(r["hc_ellipse_mm"]) for r in rows))
    summary["seconds_per_image"] = float(np.mean([r["seconds"] for r in rows]))
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"summary": summary, "images": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
