"""``attnseg pseudolabel DATASET -o OUT_DIR --labels-dir scribblesTr --ignore-label 4``: complete a
Decathlon folder's scribbles into dense pseudo-labels (random walker per slice, confident pixels
only; :mod:`napari_attnseg.interactive.pseudolabels`), one label file per case in ``OUT_DIR``.

Train from them with ``attnseg train DATASET --labels-dir OUT_DIR --ignore-label 255
--dice-weight 1``: the uncertain pixels (255) carry no loss. Nothing in DATASET is written;
``OUT_DIR`` must not exist yet (or be empty), and each file is written atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from ._common import positive_int, real_number

logger = logging.getLogger(__name__)


def _fraction(text: str) -> float:
    return real_number(text, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")


def _positive(text: str) -> float:
    return real_number(text, lambda v: v > 0, "a positive number")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._scribbles import _label_value

    parser.add_argument("dataset", help="Decathlon / nnU-Net folder (dataset.json, imagesTr/) with scribbles")
    parser.add_argument("-o", "--output", required=True, help="new folder for the pseudo-label files")
    parser.add_argument("--labels-dir", default="scribblesTr",
                        help="the dataset's folder of scribble files (default scribblesTr)")
    parser.add_argument("--ignore-label", type=_label_value, required=True,
                        help="the scribbles' 'not annotated' value (ACDC's scribbles use 4)")
    parser.add_argument("--out-ignore", type=_label_value, default=255,
                        help="value of the pixels left unlabelled in the output (default 255)")
    parser.add_argument("--beta", type=_positive, default=130.0,
                        help="random walker edge sensitivity on the 0..1 normalized image (default 130)")
    parser.add_argument("--confidence", type=_fraction, default=0.8,
                        help="class probability a pixel needs to be labelled (default 0.8)")
    parser.add_argument("--limit", type=positive_int, default=None, help="only the first N cases")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..errors import ReadError
    from ..interactive.pseudolabels import PseudoLabelParams, pseudo_labels_job
    from ..io import write_volume
    from ..training.dataset import read_decathlon
    from ._common import run_with_progress

    out = Path(args.output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} already exists and is not an empty folder; choose another output folder")
    dataset = Path(args.dataset)
    if out.resolve() == (dataset / args.labels_dir).resolve():
        raise ValueError(f"{out} is the scribbles' own folder; choose another output folder")
    pairs, info = read_decathlon(dataset, args.labels_dir, args.ignore_label)
    if args.limit:
        pairs = pairs[: args.limit]
    n_classes = len(info.label_names)
    if 0 <= args.out_ignore < n_classes:
        raise ValueError(f"--out-ignore {args.out_ignore} is a class of {dataset} (0..{n_classes - 1})")
    params = PseudoLabelParams(beta=args.beta, confidence=args.confidence)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cases = []
    for i, pair in enumerate(pairs):
        source = Path(pair.labels.source or f"case{i}")
        if pair.reviewed is None or pair.image.ndim != pair.labels.ndim:
            raise ReadError(source, "needs scribbles on the image's grid")
        scribbles = np.where(pair.reviewed, np.asarray(pair.labels.data), args.ignore_label)
        job = pseudo_labels_job(pair.image.data, scribbles, n_classes, args.ignore_label, params,
                                out_ignore=args.out_ignore, spacing=pair.image.spacing)
        result = run_with_progress(job, desc=f"{source.name} ({i + 1}/{len(pairs)})", quiet=args.quiet)
        target = out / source.name
        write_volume(pair.labels.with_data(result.labels, is_labels=True), target,
                     provenance={"kind": "pseudolabel", "scribbles": str(source), "beta": params.beta,
                                 "confidence": params.confidence, "ignore_label": args.out_ignore})
        cases.append({"case": source.name, "labelled_fraction": round(result.labelled_fraction, 4),
                      "scribbled_fraction": round(float(np.mean(pair.reviewed)), 4),
                      "slices": result.slices, "seconds": round(result.seconds, 2)})
        logger.info("%s: %.1f %% of the voxels labelled (scribbles %.2f %%), %.1f s", source.name,
                    100 * result.labelled_fraction, 100 * cases[-1]["scribbled_fraction"], result.seconds)
    summary = {"dataset": str(dataset), "scribbles": args.labels_dir, "ignore_label": args.ignore_label,
               "out_ignore": args.out_ignore, "beta": params.beta, "confidence": params.confidence,
               "seconds": round(time.perf_counter() - t0, 1), "cases": cases}
    (out / "pseudolabels.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    mean = float(np.mean([c["labelled_fraction"] for c in cases]))
    print(f"wrote {len(cases)} pseudo-label files to {out} ({100 * mean:.1f} % of the voxels labelled, "
          f"{summary['seconds']:.0f} s); train with --labels-dir {out.resolve()} "
          f"--ignore-label {args.out_ignore} --dice-weight 1")
    return 0
