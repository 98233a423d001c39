"""``attnseg evaluate PRED GT``: score a segmentation against ground truth, per label, and print
the table (Markdown, with every metric's definition); optionally save CSV / JSON."""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np

from ..errors import GeometryError
from ._common import add_input_options, run_with_progress

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
    add_input_options(parser, what="the prediction")
    add_input_options(parser, "gt-", what="the ground truth")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _geometry(v) -> str:
    g = v.geometry_summary()
    return f"shape {g['shape']}, spacing {g['spacing_mm']} mm, origin {g['origin_mm']} mm"


def run(args: argparse.Namespace) -> int:
    from ..io import read_volume
    from ..io.atomic import Unit
    from ..io.validate import require_labels, require_same_grid
    from ..metrics import evaluate_job
    from ._common import check_outputs, input_kwargs, log_read_warnings

    check_outputs([("--csv", args.csv), ("--json", args.json)], [args.pred, args.gt],
                  sidecars=())  # before any work: never over the prediction or ground truth
    pred = log_read_warnings(read_volume(args.pred, **input_kwargs(args)), args.pred)
    gt = log_read_warnings(read_volume(args.gt, **input_kwargs(args, "gt-")), args.gt)
    pred = pred.with_data(require_labels(pred.data, args.pred, "the prediction"), is_labels=True)
    gt = gt.with_data(require_labels(gt.data, args.gt, "the ground truth"), is_labels=True)
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
        try:
            require_same_grid(pred, gt, str(args.pred), str(args.gt))
        except GeometryError as exc:
            raise GeometryError(f"{exc}, or give --spacing to score the arrays voxel by "
                                "voxel") from exc
        spacing = gt.spacing
    if args.labels:
        from ..io.validate import MAX_LABEL_VALUES, distinct_values

        present = {int(v) for d in (pred.data, gt.data)
                   for v in distinct_values(d, MAX_LABEL_VALUES)}
        absent = [lab for lab in args.labels if lab not in present]
        if absent:
            raise ValueError(f"--labels {absent}: in neither {args.pred} nor {args.gt} (labels "
                             f"present: {sorted(present)}); a label in neither file cannot be "
                             "scored")
    report = run_with_progress(
        evaluate_job(pred.data, gt.data, spacing, args.labels, args.tolerance_mm),
        desc="evaluate", quiet=args.quiet,
    )
    sys.stdout.write(report.to_markdown(definitions=not args.no_definitions) + "\n")
    unit = Unit()  # the CSV and the JSON: both new or both old
    try:
        if args.csv:
            report.to_csv(unit.temp(args.csv))
        if args.json:
            report.to_json(unit.temp(args.json))
        unit.commit()
    except BaseException:
        unit.abort()
        raise
    for out in (args.csv, args.json):
        if out:
            logger.info("wrote %s", out)
    return 0
