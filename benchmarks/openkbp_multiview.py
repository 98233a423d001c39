"""OpenKBP: does a coronal 2D model, averaged with the shipped axial one, segment the organs better?

The shipped ``openkbp-headneck-ct-2d`` cuts axial slices; the organs it misses most (esophagus,
larynx, spinal cord's extent) run head to foot, which a coronal slice shows along its length.
A coronal slice still shows both parotids, so their sides stay decidable (a sagittal one does not).

    # 1. coronal copies of the training patients (OpenKBP's test patients are never written)
    python benchmarks/openkbp_multiview.py write /tmp/attnseg_real/openkbp_coronal_train
    # 2. train a 2D model on them (scripts/train_real_models.sh openkbp-coronal)
    # 3. the held-out patients: axial alone, coronal alone, the two averaged
    python benchmarks/openkbp_multiview.py eval --axial openkbp-headneck-ct-2d \
        --coronal /tmp/attnseg_real/openkbp-headneck-ct-2d-coronal --json benchmarks/results/openkbp_multiview.json

OpenKBP's arrays run (slices toward inferior, rows toward the patient's left, columns toward
posterior: the model's declared ``"ILP"``), so a coronal stack is the array transposed
(columns, slices, rows): each coronal slice has head-to-foot rows and left-right columns. The files are
written with OpenKBP's own nominal geometry (NIfTI qform and sform codes 0) and the spacing
permuted with the axes; the labels and each case's ``contoured`` list are kept.
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
from napari_attnseg.benchmark.splits import case_of, split_subjects  # noqa: E402
from napari_attnseg.benchmark.stats import bootstrap_ci  # noqa: E402
from napari_attnseg.training.dataset import subject_of  # noqa: E402

DATA = os.environ.get("ATTNSEG_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
#: Volume axes (z, y, x) -> coronal stack (x, z, y); and back
TO_CORONAL = (2, 0, 1)
FROM_CORONAL = tuple(int(i) for i in np.argsort(TO_CORONAL))


def coronal(data: np.ndarray, channels_first: bool = False) -> np.ndarray:
    off = 1 if channels_first else 0
    return np.transpose(data, tuple(range(off)) + tuple(a + off for a in TO_CORONAL))


def axial(data: np.ndarray, channels_first: bool = False) -> np.ndarray:
    off = 1 if channels_first else 0
    return np.transpose(data, tuple(range(off)) + tuple(a + off for a in FROM_CORONAL))


def _write_nominal(path: Path, data: np.ndarray, spacing: tuple[float, ...]) -> None:
    """A NIfTI with OpenKBP's own convention: array = Volume.data.T, zooms reversed, codes 0."""
    import nibabel as nib

    img = nib.Nifti1Image(np.ascontiguousarray(data.T), affine=None)
    img.header.set_zooms(tuple(float(s) for s in reversed(spacing)))
    img.header["qform_code"] = 0
    img.header["sform_code"] = 0
    tmp = path.with_name(path.name + ".part.nii.gz")
    nib.save(img, str(tmp))
    os.replace(tmp, path)


def write(dst: Path, data_root: Path) -> None:
    from napari_attnseg.io.nifti import read_nifti

    src = data_root / "openkbp_ct"
    train, _ = split_subjects(src)
    meta = json.loads((src / "dataset.json").read_text(encoding="utf-8"))
    keep = [e for e in meta["training"] if subject_of(case_of(e)) in set(train)]
    for sub in ("imagesTr", "labelsTr"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    for e in keep:
        for key in ("image", "label"):
            out = dst / str(e[key])
            if out.exists():
                continue
            v = read_nifti(src / str(e[key]))
            sp = tuple(v.spacing[a] for a in TO_CORONAL)
            _write_nominal(out, coronal(np.asarray(v.data)), sp)
    meta = {**meta, "name": meta.get("name", "OpenKBP") + " (coronal stacks of the training patients)",
            "training": keep, "numTraining": len(keep)}
    (dst / "dataset.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    print(f"{len(keep)} training patients written as coronal stacks to {dst}")


def dice(p: np.ndarray, g: np.ndarray) -> float:
    s = int(p.sum()) + int(g.sum())
    return 2.0 * int(np.logical_and(p, g).sum()) / s if s else 1.0


def evaluate(args: argparse.Namespace) -> int:
    import torch

    from napari_attnseg.inference.predictor import PredictConfig, predict
    from napari_attnseg.io.nifti import read_nifti
    from napari_attnseg.model.checkpoint import load_model
    from napari_attnseg.model.registry import ModelRegistry
    from napari_attnseg.volume import Volume

    torch.set_num_threads(args.threads)
    src = Path(args.data) / "openkbp_ct"
    if not src.is_dir():
        print(f"skipped: {src} is absent")
        return 0
    _, test = split_subjects(src)
    reg = ModelRegistry()
    ax_model, co_model = load_model(reg.resolve(args.axial)), load_model(reg.resolve(args.coronal))
    if args.subjects == "validation":  # for choosing the weight without the test patients
        test = [str(s) for s in (co_model.spec.provenance or {}).get("val_cases", [])]
        assert test == [str(s) for s in (ax_model.spec.provenance or {}).get("val_cases", [])], \
            "the two models validated on different patients"
        print(f"the models' {len(test)} validation patients: {' '.join(test)}")
    meta = json.loads((src / "dataset.json").read_text(encoding="utf-8"))
    entries = [e for e in meta["training"] if subject_of(case_of(e)) in set(test)][: args.limit]
    config = PredictConfig(tta=False)
    classes = [int(k) for k in ax_model.spec.label_names if int(k) > 0]
    weights = [float(w) for w in args.weights]
    rows = []
    for e in entries:
        image = read_nifti(src / str(e["image"]))
        gt = np.asarray(read_nifti(src / str(e["label"])).data)
        t0 = time.perf_counter()
        p_ax = predict(ax_model, image, config).probabilities
        t1 = time.perf_counter()
        # as read_nifti reads the written training stacks: the same nominal geometry and header
        cimg = Volume(**{**image.__dict__, "data": coronal(np.asarray(image.data)),
                         "spacing": tuple(image.spacing[a] for a in TO_CORONAL)})
        p_co = axial(predict(co_model, cimg, config).probabilities, channels_first=True)
        t2 = time.perf_counter()
        preds = {"axial": p_ax.argmax(0), "coronal": p_co.argmax(0)}
        for w in weights:
            preds[f"average w_coronal={w:g}"] = ((1.0 - w) * p_ax + w * p_co).argmax(0)
        if args.geometric:  # the weighted mean of log-probabilities (a product of the two)
            l_ax, l_co = np.log(np.maximum(p_ax, 1e-8)), np.log(np.maximum(p_co, 1e-8))
            for w in weights:
                preds[f"geometric w_coronal={w:g}"] = ((1.0 - w) * l_ax + w * l_co).argmax(0)
        contoured = set(e.get("contoured", classes))
        row = {"case": case_of(e), "seconds_axial": t1 - t0, "seconds_coronal": t2 - t1}
        for name, pred in preds.items():
            per = {c: dice(pred == c, gt == c) for c in classes if c in contoured and ((pred == c).any() or (gt == c).any())}
            row[name] = {"mean_dice": float(np.mean(list(per.values()))), "classes": per}
        rows.append(row)
        print(case_of(e), " ".join(f"{k}={v['mean_dice']:.4f}" for k, v in row.items() if isinstance(v, dict)),
              f"({t1 - t0:.2f} s + {t2 - t1:.2f} s)", flush=True)
    names = [k for k in rows[0] if isinstance(rows[0][k], dict)]
    summary = {"axial": args.axial, "coronal": args.coronal, "n_volumes": len(rows), "subjects": args.subjects,
               "patients": test,
               "threads": args.threads}
    base = np.array([r["axial"]["mean_dice"] for r in rows])
    for name in names:
        vals = np.array([r[name]["mean_dice"] for r in rows])
        summary[name] = {"mean_dice": list(bootstrap_ci(vals)),
                         "minus_axial": list(bootstrap_ci(vals - base)),
                         "better_than_axial": int((vals > base).sum())}
        for c in classes:
            v = [r[name]["classes"][c] for r in rows if c in r[name]["classes"]]
            summary[name][ax_model.spec.label_names[c]] = float(np.mean(v)) if v else None
    summary["seconds_per_volume"] = {"axial": float(np.mean([r["seconds_axial"] for r in rows])),
                                     "coronal": float(np.mean([r["seconds_coronal"] for r in rows]))}
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"summary": summary, "volumes": rows}, indent=1, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="coronal copies of the training patients")
    w.add_argument("dst")
    w.add_argument("--data", default=DATA)
    e = sub.add_parser("eval", help="the held-out patients: axial, coronal, averaged")
    e.add_argument("--axial", default="openkbp-headneck-ct-2d")
    e.add_argument("--coronal", required=True)
    e.add_argument("--weights", nargs="*", default=["0.5"], help="coronal weights of the averages")
    e.add_argument("--data", default=DATA)
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--limit", type=int, default=None)
    e.add_argument("--subjects", default="test", choices=("test", "validation"),
                   help="the held-out test patients, or the models' own validation patients (to choose a weight)")
    e.add_argument("--geometric", action="store_true",
                   help="also the weighted geometric means (log-probabilities averaged)")
    e.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.cmd == "write":
        if not (Path(args.data) / "openkbp_ct").is_dir():
            print(f"skipped: {Path(args.data) / 'openkbp_ct'} is absent")
            return 0
        write(Path(args.dst), Path(args.data))
        return 0
    return evaluate(args)


if __name__ == "__main__":
    raise SystemExit(main())
