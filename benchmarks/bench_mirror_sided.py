"""Mirror TTA on a model whose labels name sides: what the default now refuses, measured.

    .venv/bin/python benchmarks/bench_mirror_sided.py openkbp_ct openkbp-headneck-ct-2d --threads 2 \
        --json benchmarks/results/mirror_sided_openkbp.json
    .venv/bin/python benchmarks/bench_mirror_sided.py chaos_mr_t2 chaos-abdomen-mr-2d --threads 2 \
        --json benchmarks/results/mirror_sided_chaos.json

The held-out patients segmented three ways side by side: as shipped (no mirroring: the model's
labels name sides, or it was trained without flips, so ``effective_tta`` is off), with the
sliding window's four-flip mirror TTA forced on (the pre-session-12 behaviour of ``--tta``), and
the plain network on the left-right mirrored scan with its labels mirrored back and the side
labels swapped (the one flip that mirror TTA's left-right copy shows the network; OpenKBP's
left-right axis is its arrays' rows, the declared "ILP"), and the average of the scan's and that
mirror's probabilities (a side-aware one-flip TTA, the model's post-processing after). Mean Dice over the contoured classes, then volumes
(95 % bootstrap CI).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_attnseg.benchmark.splits import case_of, held_out_entries  # noqa: E402
from napari_attnseg.benchmark.stats import bootstrap_ci  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("model")
    ap.add_argument("--data", default=os.environ.get("ATTNSEG_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    import torch

    from napari_attnseg.inference import predictor
    from napari_attnseg.io import read_volume
    from napari_attnseg.model.checkpoint import load_model
    from napari_attnseg.model.registry import ModelRegistry
    from napari_attnseg.orientation import axis_permutation
    from napari_attnseg.volume import direction_is_nominal

    torch.set_num_threads(args.threads)
    import logging

    logging.getLogger('napari_attnseg').setLevel(logging.ERROR)  # the 'TTA is off' note per volume
    folder = Path(args.data) / args.dataset
    if not folder.is_dir():
        print(f"skipped: {folder} is absent")
        return 0
    entries = held_out_entries(folder)
    model = load_model(ModelRegistry().resolve(args.model))
    perm = model.spec.mirror_permutation  # label i of the mirror image is label perm[i]
    shipped = predictor.effective_tta
    scores = {"as shipped (no mirroring)": [], "mirror TTA forced (4 flips)": [],
              "left-right mirrored scan, labels mirrored back": [],
              "the scan and that mirror, probabilities averaged": []}
    for e in entries:
        image = read_volume(folder / e["image"])
        gt = np.asarray(read_volume(folder / e["label"]).data)
        classes = [int(k) for k in model.spec.label_names if int(k) > 0]
        scored = [c for c in classes if c in set(e.get("contoured", classes))]
        code = model.spec.orientation or ""
        if direction_is_nominal(image) and ("L" in code or "R" in code):  # cut as stored: the code's axes
            lr = code.index("L") if "L" in code else code.index("R")
        else:
            lr = axis_permutation(np.asarray(image.direction))[2]  # the array axis along R/L

        def dice(labels):
            d = [2.0 * ((labels == c) & (gt == c)).sum() / ((labels == c).sum() + (gt == c).sum())
                 for c in scored if (labels == c).any() or (gt == c).any()]
            return float(np.mean(d)) if d else float("nan")

        assert not shipped(model, predictor.PredictConfig(tta=True)), "the model mirrors by default"
        plain = predictor.predict(model, image, predictor.PredictConfig(tta=True))
        got = [plain.labels]
        predictor.effective_tta = lambda m, c: True
        try:
            got.append(predictor.predict(model, image, predictor.PredictConfig(tta=True)).labels)
        finally:
            predictor.effective_tta = shipped
        flipped = image.__class__(**{**image.__dict__, "data": np.flip(np.asarray(image.data), lr).copy()})
        mirrored = predictor.predict(model, flipped, predictor.PredictConfig())
        lab = np.flip(mirrored.labels, lr)
        got.append(np.asarray(perm, dtype=lab.dtype)[lab] if perm else lab)
        back = np.flip(mirrored.probabilities, lr + 1)  # class i of the mirror = class perm[i] here
        back = back[np.argsort(perm)] if perm else back
        avg = predictor.labels_from_probabilities(0.5 * (plain.probabilities + back))
        steps = tuple(model.spec.postprocess or ())
        got.append(predictor.postprocessed(avg, steps, model.spec.n_classes, predictor.slice_axis(image))
                   if steps else avg)
        for key, labels in zip(scores, got):
            scores[key].append(dice(labels))
        print(f"{case_of(e)}: " + " ".join(f"{v[-1]:.3f}" for v in scores.values()), flush=True)
    summary = {"dataset": args.dataset, "model": str(model.spec.name) + "@" + str(model.spec.version),
               "mirror_permutation": list(perm) if perm else None, "n_volumes": len(entries),
               **{k: list(bootstrap_ci(v)) for k, v in scores.items()}}
    print(f"\n| {summary['model']}, {len(entries)} held-out volumes | mean Dice [95 % CI] |\n|---|---|")
    for k in scores:
        print(f"| {k} | " + "%.3f [%.3f, %.3f]" % tuple(summary[k]) + " |")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "volumes": scores}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
