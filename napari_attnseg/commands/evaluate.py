"""``attnseg evaluate PRED GT``: score a segmentation against ground truth, per label, and print
the table (Markdown, with every metric's definition); optionally save CSV / JSON."""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np

from ..errors import GeometryError
from ._common import run_with_progress

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pred", help="predicted labels (NIfTI, DICOM folder, NRRD)")
    parser.add_argument("gt", help="ground-truth labels on the same grid")
    parser.add_argument("--spacing", type=float, nargs="+", metavar="S",
                        help="voxel size in mm per array axis (z y x, or y x; one value: the "
                             "same on every axis, e.g. a 2D image's pixel size); overrides the "
                             "files' spacing (the shapes must still match). 2D images without "
                             "it: a filename,pixel_size_mm CSV beside them, else 1 mm")
    parser.add_argument("--tolerance-mm", type=float, default=1.0,
                        help="surface Dice tolerance in mm (default 1)")
    parser.add_argument("--labels", type=int, nargs="+", metavar="L",
                        help="labels to score (default: every nonzero label in either file)")
    parser.add_argument("--csv", help="also write the table as CSV (definitions as # comments)")
    parser.add_argument("--json", help="also write the table and definitions as JSON")
    parser.add_argument("--no-definitions", action="store_true",
                        help="print the table without the metric definitions")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _geometry(v) -> str:
    g = v.geometry_summary()
    return f"shape {g['shape']}, spacing {g['spacing_mm']} mm, origin {g['origin_mm']} mm"


def run(args: argparse.Namespace) -> int:
    from ..io import read_volume
    from ..metrics import evaluate_job

    pred = read_volume(args.pred)
    gt = read_volume(args.gt)
    if pred.shape != gt.shape:
        raise GeometryError(
            f"{args.pred} ({_geometry(pred)}) and {args.gt} ({_geometry(gt)}) have different "
            "shapes; resample the prediction onto the ground-truth grid first"
        )
    if args.spacing:
        spacing = tuple(args.spacing) * (gt.ndim if len(args.spacing) == 1 else 1)
        if len(spacing) != gt.ndim:
            raise ValueError(f"--spacing needs {gt.ndim} values (one per array axis), "
                             f"got {len(spacing)}")
        if not np.allclose(spacing, gt.spacing, rtol=1e-4):
            logger.warning("using --spacing %s instead of the files' %s", spacing, gt.spacing)
    else:
        if not gt.same_grid(pred):
            raise GeometryError(
                f"{args.pred} ({_geometry(pred)}) and {args.gt} ({_geometry(gt)}) are not on the "
                "same grid (spacing, origin or orientation differ); resample first, or give "
                "--spacing to score the arrays voxel by voxel"
            )
        spacing = gt.spacing
    report = run_with_progress(
        evaluate_job(pred.data, gt.data, spacing, args.labels, args.tolerance_mm),
        desc="evaluate", quiet=args.quiet,
    )
    sys.stdout.write(report.to_markdown(definitions=not args.no_definitions) + "\n")
    if args.csv:
        report.to_csv(args.csv)
        logger.info("wrote %s", args.csv)
    if args.json:
        report.to_json(args.json)
        logger.info("wrote %s", args.json)
    return 0
