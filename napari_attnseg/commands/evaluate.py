"""``attnseg evaluate PRED GT``: score a segmentation against ground truth, per label, and print
the table (Markdown, with every metric's definition); optionally save CSV / JSON.

``--hc`` adds the head circumference (HC18's measure: the perimeter in mm of the ellipse fitted
to the head) of the prediction and the truth, per 2D image or per slice of a stack;
``--hc-reference CSV`` (HC18's ``filename, pixel size(mm), head circumference (mm)``) adds the
error against the sonographer's value, and gives the pixel size when the image has none."""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np

from ..errors import GeometryError, ReadError
from ._common import add_input_options, positive_int, run_with_progress

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
    parser.add_argument("--hc", type=positive_int, nargs="?", const=1, default=None,
                        metavar="LABEL",
                        help="also measure the head circumference (mm) of label LABEL (default "
                             "1): the ellipse fitted to the prediction's and the truth's head, "
                             "per 2D image or per slice of a stack")
    parser.add_argument("--hc-reference", metavar="CSV",
                        help="reference head circumferences (HC18's pixel_size_and_hc.csv: "
                             "filename, pixel size(mm), head circumference (mm)); gives the "
                             "error against it, and the pixel size when the image has none. "
                             "Implies --hc")
    parser.add_argument("--hc-name", metavar="NAME",
                        help="the --hc-reference row to use (default: the row named after the "
                             "ground truth or the prediction, e.g. 000_HC.png for "
                             "000_HC_mask.png)")
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
    hc_label = args.hc if args.hc is not None else (1 if args.hc_reference else None)
    ref, note = None, ""
    if hc_label is not None:
        ref = _reference_row(args, pred, gt)
        spacing, note = _hc_spacing(args, gt, spacing, ref)
    report = run_with_progress(
        evaluate_job(pred.data, gt.data, spacing, args.labels, args.tolerance_mm),
        desc="evaluate", quiet=args.quiet,
    )
    hc_text = ""
    if hc_label is not None:
        report, hc_text = _with_hc(report, pred.data, gt.data, spacing, hc_label, ref, note)
    sys.stdout.write(report.to_markdown(definitions=not args.no_definitions) + "\n")
    if hc_text:
        sys.stdout.write("\n" + hc_text + "\n")
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


# ---------------------------------------------------------------------- head circumference
def _row_names(path: str) -> list[str]:
    """Names a reference CSV may use for ``path``: its own, and its image's for a mask or a
    prediction (``000_HC_mask.png`` / ``000_HC_pred.nii.gz`` -> ``000_HC.png``)."""
    from pathlib import Path

    from ..io.image2d import mask_base_name

    p = Path(path)
    stem = p.name.split(".")[0] if p.name.endswith((".nii.gz", ".seg.nrrd")) else p.stem
    names = [p.name, stem + ".png"]
    base = mask_base_name(p) or next((stem[: -len(s)] for s in ("_pred", "_prediction",
                                                                 " [attnseg]", "_attnseg")
                                      if stem.endswith(s)), None)
    if base:
        names += [base + p.suffix, base + ".png", base]
    return list(dict.fromkeys(names))


def _reference_row(args: argparse.Namespace, pred, gt):
    """The ``--hc-reference`` row for this pair (None without the option)."""
    if not args.hc_reference:
        if args.hc_name:
            raise ValueError("--hc-name names a row of --hc-reference: give the CSV too")
        return None
    from ..metrics import read_hc_reference

    rows = read_hc_reference(args.hc_reference)
    tried = [args.hc_name] if args.hc_name else _row_names(args.gt) + _row_names(args.pred)
    for name in tried:
        if name in rows:
            return rows[name]
    hint = "" if args.hc_name else "; name the row with --hc-name"
    raise ReadError(args.hc_reference, f"no row for {', '.join(dict.fromkeys(tried))}{hint}")


def _hc_spacing(args: argparse.Namespace, gt, spacing, ref) -> tuple[tuple[float, ...], str]:
    """The spacing HC is measured with, and a note on where the pixel size came from. A 2D
    image without a pixel size takes the reference CSV's; with none at all: GeometryError."""
    header = dict(getattr(gt, "header", {}) or {})
    if args.spacing:
        return tuple(spacing), "pixel size from --spacing"
    if header.get("pixel_size_source") != "assumed":
        src = header.get("pixel_size_source")
        return tuple(spacing), (f"pixel size from {src}" if src and src != "given" else "")
    if ref is not None and ref.pixel_size_mm:
        ps = float(ref.pixel_size_mm)
        new = tuple(spacing[:-2]) + (ps, ps)
        note = (f"pixel size {ps:g} mm from {ref.csv_path.name} (row {ref.filename}): "
                f"{args.gt} carries none")
        logger.warning("%s", note)
        return new, note
    raise GeometryError(
        f"{args.gt} has no pixel size (1 mm was assumed): head circumference in pixels is not "
        "mm. Give --spacing, a filename,pixel_size_mm CSV beside the images, or an "
        "--hc-reference CSV with a pixel size column")


def _with_hc(report, pred, gt, spacing, label: int, ref, note: str):
    """The report with the HC columns (per 2D image; the slice summary for a stack) and the
    ``head_circumference`` JSON section; and the Markdown section printed after the table."""
    from dataclasses import replace

    from ..metrics import HC_DEFINITIONS, measure_heads, summarise_heads

    ms = measure_heads(pred, gt, spacing, label, None if ref is None else ref.hc_mm)
    summary = summarise_heads(ms)
    if gt.ndim == 2:
        hc_cols = ms[0].as_row()
    else:
        hc_cols = {"hc_slices": summary["n"]}
        for key in ("mean_abs_diff_mm", "mean_ref_abs_diff_mm"):
            if key in summary:
                hc_cols[f"hc_{key}"] = summary[key]
    rows = [dict(r) for r in report.rows]
    target = next((r for r in rows if r.get("label") == label), None)
    if target is None:
        rows.append(target := {"label": label})
    target.update(hc_cols)
    extras = {"head_circumference": {
        "label": label, "spacing_mm": list(spacing), "pixel_size_note": note,
        "reference_csv": str(ref.csv_path) if ref is not None else None,
        "reference_row": ref.filename if ref is not None else None,
        "measurements": [m.as_dict() for m in ms], "summary": summary}}
    defs = {**report.definitions, **HC_DEFINITIONS}
    if gt.ndim == 3:
        defs["hc_slices"] = "Slices (axis 0) where the label is in the prediction or the truth."
        defs["hc_mean_abs_diff_mm"] = "Mean over those slices of |hc_pred_mm − hc_gt_mm|."
        defs["hc_mean_ref_abs_diff_mm"] = "Mean over those slices of |hc_pred_mm − hc_ref_mm|."
    report = replace(report, rows=tuple(rows), definitions=defs, extras=extras)
    return report, _hc_markdown(ms, summary, label, ref, note, gt.ndim)


def _mm(v) -> str:
    return f"{v:.2f}" if v is not None and np.isfinite(v) else "–"


def _hc_markdown(ms, summary, label, ref, note, ndim) -> str:
    head = f"Head circumference, label {label}" + (f" ({note})" if note else "") + ":"
    cols = ["slice"] if ndim == 3 else []
    cols += ["HC pred (mm)", "HC truth (mm)", "pred − truth (mm)"]
    if ref is not None:
        cols += [f"reference (mm, {ref.csv_path.name})", "pred − reference (mm)"]
    cols += ["note"]
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for m in ms:
        cells = [str(m.slice_index)] if ndim == 3 else []
        cells += [_mm(m.pred.hc_mm), _mm(m.truth.hc_mm), _mm(m.hc_diff_mm)]
        if ref is not None:
            cells += [_mm(m.reference_mm), _mm(m.ref_diff_mm)]
        cells.append(m.note)
        lines.append("| " + " | ".join(cells) + " |")
    if not ms:
        lines.append(f"(label {label} is in neither the prediction nor the truth: no head)")
    if ndim == 3 and ms:
        text = f"{summary['n']} slices; mean |pred − truth| " \
               f"{_mm(summary.get('mean_abs_diff_mm'))} mm"
        if ref is not None:
            text += f"; mean |pred − reference| {_mm(summary.get('mean_ref_abs_diff_mm'))} mm"
        lines += ["", text]
    return "\n".join(lines)
