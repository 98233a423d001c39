"""Held-out scans stored in other orientations: the same patients, their arrays transposed and
reversed with the direction to match (the world geometry unchanged), as scanners and converters
write them: DICOM's axial slices run their rows toward posterior and columns toward the left
(S, P, L), a RAS NIfTI its columns toward the right (S, A, R).

    .venv/bin/python benchmarks/bench_orientation.py chaos_mr_t2 chaos-abdomen-mr-2d@3 chaos-abdomen-mr-2d@4 \
        --threads 2 --json benchmarks/results/orientation_chaos.json
    .venv/bin/python benchmarks/bench_orientation.py openkbp_ct openkbp-headneck-ct-2d@4 openkbp-headneck-ct-2d@5 \
        --true-orientation ILP --threads 2 --json benchmarks/results/orientation_openkbp.json

``--true-orientation``: for files that give no orientation (OpenKBP: no qform/sform), the one
their anatomy shows (OpenKBP: the brainstem above the cord, the left parotid at higher row
indices, the mandible in front of the brainstem: slices toward inferior, rows toward the left,
columns toward posterior), given to the volume as a known direction before it is re-stored;
the first row is then the file as read (its direction nominal, so every model cuts it as stored)
and "as published" the same array with its orientation known.
For every model, the mean Dice over classes then volumes (95 % bootstrap CI) of the held-out
patients in each storage, the labels mapped back to the published array before scoring. A
model that declares its training orientation (``ModelSpec.orientation``) should score the same
in every row; one that does not sees a mirrored or rotated image where the storage differs
from its training files'.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_attnseg.benchmark.splits import case_of, held_out_entries  # noqa: E402
from napari_attnseg.benchmark.stats import bootstrap_ci  # noqa: E402

#: the file as read, its direction nominal (only with ``--true-orientation``)
AS_READ = "the published file (no orientation)"
#: name -> the orientation code the volume is re-stored in (None: as published)
STORAGES = {
    "as published": None,
    "DICOM axial (S, P, L)": "SPL",
    "a RAS NIfTI (S, A, R)": "SAR",
    "a LAS NIfTI (S, A, L)": "SAL",
    "slices toward inferior (I, P, L)": "IPL",
}


def restored(volume, code):
    """``volume`` re-stored with its axes running as ``code`` says, and the inverse map for
    arrays on the re-stored grid."""
    from napari_attnseg.inference.preprocess import Reorientation, from_canonical, to_canonical
    from napari_attnseg.orientation import reorientation_to

    if code is None or code == AS_READ:
        return volume, lambda a: a
    reo = Reorientation(*reorientation_to(volume.direction, code))
    d = np.array(volume.direction, float)[:, list(reo.perm)]
    for f in reo.flip:
        d[:, f] *= -1
    data = np.ascontiguousarray(to_canonical(np.asarray(volume.data), reo))
    out = volume.__class__(**{**volume.__dict__, "data": data, "direction": d,
                              "spacing": tuple(volume.spacing[p] for p in reo.perm)})
    return out, lambda a: from_canonical(a, reo)


def with_true_orientation(volume, code):
    """A volume whose file gave no orientation, given the one its anatomy shows."""
    from napari_attnseg.orientation import WORLD_LETTERS
    from napari_attnseg.volume import DIRECTION_NOMINAL, SPACING_NOMINAL

    d = np.zeros((3, 3))
    for j, ch in enumerate(code):
        for w, (pos, neg) in enumerate(WORLD_LETTERS):
            if ch in (pos, neg):
                d[w, j] = 1.0 if ch == pos else -1.0
    header = {k: v for k, v in dict(volume.header).items() if k not in (DIRECTION_NOMINAL, SPACING_NOMINAL)}
    return volume.__class__(**{**volume.__dict__, "direction": d, "header": header})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data", default=os.environ.get("ATTNSEG_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--true-orientation", help="for files without one: the orientation their anatomy shows")
    args = ap.parse_args(argv)
    import torch

    from napari_attnseg.inference.predictor import PredictConfig, predict
    from napari_attnseg.io import read_volume
    from napari_attnseg.model.checkpoint import load_model
    from napari_attnseg.model.registry import ModelRegistry

    torch.set_num_threads(args.threads)
    folder = Path(args.data) / args.dataset
    if not folder.is_dir():
        print(f"skipped: {folder} is absent")
        return 0
    entries = held_out_entries(folder)
    if args.limit:
        entries = entries[: args.limit]
    models = {ref: load_model(ModelRegistry().resolve(ref)) for ref in args.models}
    storages = {AS_READ: AS_READ, **STORAGES} if args.true_orientation else dict(STORAGES)
    scores = {ref: {s: [] for s in storages} for ref in models}
    t0 = time.perf_counter()
    for e in entries:
        as_read = read_volume(folder / e["image"])
        image = with_true_orientation(as_read, args.true_orientation) if args.true_orientation else as_read
        gt = np.asarray(read_volume(folder / e["label"]).data)
        for ref, model in models.items():
            classes = [int(k) for k in model.spec.label_names if int(k) > 0]
            scored = [c for c in classes if c in set(e.get("contoured", classes))]
            for storage, code in storages.items():
                vol, back = restored(as_read if code == AS_READ else image, code)
                labels = back(predict(model, vol, PredictConfig()).labels)
                d = [2.0 * ((labels == c) & (gt == c)).sum() / ((labels == c).sum() + (gt == c).sum())
                     for c in scored if (labels == c).any() or (gt == c).any()]
                scores[ref][storage].append(float(np.mean(d)) if d else float("nan"))
        print(f"{case_of(e)}: " + "; ".join(
            f"{ref} " + " ".join(f"{v[-1]:.3f}" for v in s.values()) for ref, s in scores.items()), flush=True)
    summary = {"dataset": args.dataset, "n_volumes": len(entries), "seconds": round(time.perf_counter() - t0, 1),
               "storages": storages, "true_orientation": args.true_orientation,
               "models": {ref: {"orientation": models[ref].spec.orientation,
                                **{s: list(bootstrap_ci(v)) for s, v in st.items()}}
                          for ref, st in scores.items()}}
    print(f"\n| storage ({args.dataset}, {len(entries)} held-out volumes) | " + " | ".join(models) + " |")
    print("|---|" + "---|" * len(models))
    for s in storages:
        print(f"| {s} | " + " | ".join("%.3f [%.3f, %.3f]" % tuple(summary["models"][r][s]) for r in models) + " |")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "volumes": scores}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
