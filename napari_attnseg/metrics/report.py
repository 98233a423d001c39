"""Per-label evaluation of one or more candidates against a ground truth, with the exact
definition of each metric travelling in every report (CSV comment lines, JSON, Markdown)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._progress import Job, Progress, drain
from ..errors import WriteError
from .overlap import _check_spacing, check_same_shape, confusion_counts, overlap_from_counts, \
    present_labels
from .surface import _check_tolerance, directed_surface_distances, distances_summary

#: Column order of the metric values in reports.
METRICS = (
    "dice", "jaccard", "sensitivity", "specificity", "precision",
    "volume_pred_mm3", "volume_gt_mm3", "rel_volume_diff",
    "hd", "hd95", "assd", "surface_dice",
    "hd_pred_to_gt", "hd_gt_to_pred", "hd95_pred_to_gt", "hd95_gt_to_pred",
    "asd_pred_to_gt", "asd_gt_to_pred",
)

_EMPTY = (" Empty-mask policy: both masks empty → {both}; exactly one empty → {one}.")

#: The exact definition of every metric; it travels with every report.
DEFINITIONS: dict[str, str] = {
    "_voxels": "P = prediction voxels equal to the label, G = ground-truth voxels equal to the "
               "label; TP = |P∩G|, FP = |P∖G|, FN = |G∖P|, TN = the remaining voxels.",
    "_surface": "Surface of a mask = its voxels with at least one face neighbour (6-connected in "
                "3D, 4 in 2D) outside the mask, the array border counting as outside (mask XOR "
                "its binary erosion; voxel-centre convention, as MONAI get_mask_edges without "
                "sub-voxel spacing). Distances are Euclidean, in mm, between surface-voxel "
                "centres (index × spacing). d(P→G) = for each surface voxel of P the distance to "
                "the nearest surface voxel of G (and vice versa).",
    "dice": "2·TP / (2·TP + FP + FN)." + _EMPTY.format(both="1", one="0"),
    "jaccard": "TP / (TP + FP + FN)." + _EMPTY.format(both="1", one="0"),
    "sensitivity": "Recall, TP / (TP + FN); NaN when the ground truth is empty.",
    "specificity": "TN / (TN + FP); NaN when the ground truth fills the whole volume.",
    "precision": "TP / (TP + FP); NaN when the prediction is empty.",
    "volume_pred_mm3": "|P| × voxel volume (product of the spacing), mm³.",
    "volume_gt_mm3": "|G| × voxel volume (product of the spacing), mm³.",
    "rel_volume_diff": "(V_pred − V_gt) / V_gt; 0 when both are empty, +inf when only the "
                       "ground truth is empty.",
    "hd": "Hausdorff distance (mm): max(max d(P→G), max d(G→P)), symmetric."
          + _EMPTY.format(both="0", one="inf"),
    "hd95": "Robust Hausdorff (mm): max of the two directed 95th percentiles, "
            "max(p95 d(P→G), p95 d(G→P)), percentiles by linear interpolation (np.percentile); "
            "MONAI compute_hausdorff_distance(percentile=95) and DeepMind surface-distance "
            "convention (not the 95th percentile of the pooled set)."
            + _EMPTY.format(both="0", one="inf"),
    "assd": "Average symmetric surface distance (mm): mean of the union of both directed "
            "distance sets, (Σd(P→G) + Σd(G→P)) / (|∂P| + |∂G|) (MONAI "
            "compute_average_surface_distance(symmetric=True))."
            + _EMPTY.format(both="0", one="inf"),
    "surface_dice": "Normalized surface Dice (Nikolov et al. 2021) at tolerance τ mm: "
                    "(#{d(P→G) ≤ τ} + #{d(G→P) ≤ τ}) / (|∂P| + |∂G|), counting surface voxels "
                    "(MONAI compute_surface_dice without sub-voxel areas); d ≤ τ is tested with a "
                    "1e-6 mm slack so exact ties do not depend on rounding."
                    + _EMPTY.format(both="1", one="0"),
    "hd_pred_to_gt": "Directed Hausdorff max d(P→G), mm.",
    "hd_gt_to_pred": "Directed Hausdorff max d(G→P), mm.",
    "hd95_pred_to_gt": "95th percentile of d(P→G), mm (linear interpolation).",
    "hd95_gt_to_pred": "95th percentile of d(G→P), mm (linear interpolation).",
    "asd_pred_to_gt": "Mean of d(P→G), mm.",
    "asd_gt_to_pred": "Mean of d(G→P), mm.",
}


def _clean(v: Any) -> Any:
    """JSON-safe value: inf/NaN become strings 'inf', '-inf', 'nan'."""
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
    if isinstance(v, np.integer):
        return int(v)
    return v


def _clean_deep(v: Any) -> Any:
    """:func:`_clean` through dicts, lists and tuples."""
    if isinstance(v, Mapping):
        return {str(k): _clean_deep(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean_deep(x) for x in v]
    return _clean(v)


def _fmt(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4f}" if math.isfinite(v) else str(float(v))
    return str(v)


@dataclass(frozen=True)
class MetricsReport:
    """Rows of metric values (one per candidate and label) with their definitions and spacing."""

    rows: tuple[dict[str, Any], ...]
    definitions: Mapping[str, str] = field(default_factory=lambda: dict(DEFINITIONS))
    spacing: tuple[float, ...] = ()
    tolerance_mm: float = 1.0
    #: further sections of the JSON (e.g. ``head_circumference``), NaN/inf made JSON-safe
    extras: Mapping[str, Any] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        keys: list[str] = []
        for r in self.rows:
            keys.extend(k for k in r if k not in keys)
        front = [k for k in ("candidate", "label") if k in keys]
        metrics = [k for k in METRICS if k in keys]
        return front + metrics + [k for k in keys if k not in front and k not in metrics]

    def value(self, metric: str, label: int = 1, candidate: str | None = None) -> Any:
        for r in self.rows:
            if r.get("label") == label and (candidate is None or r.get("candidate") == candidate):
                return r[metric]
        which = f", candidate {candidate!r}" if candidate else ""
        raise KeyError(f"no row for label {label}{which}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "spacing_mm": list(self.spacing),
            "tolerance_mm": self.tolerance_mm,
            "columns": self.columns,
            "rows": [{k: _clean(v) for k, v in r.items()} for r in self.rows],
            "definitions": dict(self.definitions),
            **{k: _clean_deep(v) for k, v in self.extras.items()},
        }

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        try:
            text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False)
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise WriteError(path, f"cannot write the metrics JSON ({exc})") from exc
        return path

    def to_csv(self, path: str | Path) -> Path:
        """CSV with a header row; the definitions follow as '# name: text' comment lines."""
        path = Path(path)
        cols = self.columns
        try:
            with path.open("w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(cols)
                for r in self.rows:
                    w.writerow([_clean(r.get(c, "")) for c in cols])
                fh.write(f"# spacing_mm: {list(self.spacing)}; tolerance_mm: {self.tolerance_mm}\n")
                for k, text in self.definitions.items():
                    fh.write(f"# {k}: {text}\n")
        except OSError as exc:
            raise WriteError(path, f"cannot write the metrics CSV ({exc})") from exc
        return path

    def to_markdown(self, definitions: bool = True) -> str:
        cols = self.columns
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        for r in self.rows:
            lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
        if definitions:
            lines.append("")
            lines.append(f"Spacing (mm): {list(self.spacing)}; surface Dice tolerance: "
                         f"{self.tolerance_mm} mm.")
            lines.append("")
            for k, text in self.definitions.items():
                lines.append(f"- **{k.lstrip('_')}**: {text}")
        return "\n".join(lines)


def combine_reports(
    reports: Mapping[str, MetricsReport] | Iterable[MetricsReport],
) -> MetricsReport:
    """One report from several: a mapping name → report sets each row's ``candidate``."""
    rows: list[dict[str, Any]] = []
    items = reports.items() if isinstance(reports, Mapping) else ((None, r) for r in reports)
    spacing: tuple[float, ...] = ()
    tol = 1.0
    for name, rep in items:
        spacing, tol = spacing or rep.spacing, rep.tolerance_mm
        for r in rep.rows:
            row = dict(r)
            if name is not None:
                row["candidate"] = name
            rows.append(row)
    return MetricsReport(rows=tuple(rows), spacing=spacing, tolerance_mm=tol)


def label_metrics(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], label: int,
                  tolerance_mm: float = 1.0, surface: bool = True) -> dict[str, Any]:
    """Every metric of one label as a flat dict (``label`` first)."""
    sp = _check_spacing(spacing, np.ndim(gt))
    tp, fp, fn, tn = confusion_counts(pred, gt, label)
    row: dict[str, Any] = {"label": int(label)}
    row.update(overlap_from_counts(tp, fp, fn, tn))
    voxel = float(np.prod(sp))
    vp, vg = (tp + fp) * voxel, (tp + fn) * voxel
    row["volume_pred_mm3"] = vp
    row["volume_gt_mm3"] = vg
    row["rel_volume_diff"] = (0.0 if vp == 0 else float("inf")) if vg == 0 else (vp - vg) / vg
    if surface:
        d_pg, d_gp = directed_surface_distances(pred, gt, sp, label)
        row.update(distances_summary(d_pg, d_gp, tolerance_mm=tolerance_mm))
    return row


def evaluate_job(candidates: Mapping[str, np.ndarray] | np.ndarray, gt: np.ndarray,
                 spacing: Sequence[float], labels: Sequence[int] | None = None,
                 tolerance_mm: float = 1.0, surface: bool = True) -> Job[MetricsReport]:
    """Generator version of :func:`evaluate` (one progress step per candidate and label).

    ``candidates`` is one prediction array or a mapping name → array (rows get ``candidate``).
    """
    _check_tolerance(tolerance_mm)
    named = isinstance(candidates, Mapping)
    cands = dict(candidates) if named else {"": candidates}
    sp = _check_spacing(spacing, np.ndim(gt))
    for name, pred in cands.items():
        try:
            check_same_shape(pred, gt)
        except Exception as exc:
            if named:
                raise type(exc)(f"candidate '{name}': {exc}") from exc
            raise
    per_cand = {
        name: (list(labels) if labels is not None else present_labels(pred, gt))
        for name, pred in cands.items()
    }
    if labels is None and named:  # the same label columns for every candidate
        union = sorted(set().union(*per_cand.values())) if per_cand else []
        per_cand = {name: union for name in cands}
    total = sum(max(len(v), 1) for v in per_cand.values())
    done = 0
    rows: list[dict[str, Any]] = []
    yield Progress(0, total, "evaluate", "scoring")
    for name, pred in cands.items():
        labs = per_cand[name] or [1]  # nothing anywhere: score label 1 (both empty)
        for lab in labs:
            row = label_metrics(pred, gt, sp, lab, tolerance_mm, surface)
            if named:
                row = {"candidate": name, **row}
            rows.append(row)
            done += 1
            yield Progress(done, total, "evaluate", f"{name or 'prediction'} label {lab}")
    return MetricsReport(rows=tuple(rows), spacing=sp, tolerance_mm=float(tolerance_mm))


def evaluate(pred: np.ndarray | Mapping[str, np.ndarray], gt: np.ndarray, spacing: Sequence[float],
             labels: Sequence[int] | None = None, tolerance_mm: float = 1.0,
             surface: bool = True) -> MetricsReport:
    """Score ``pred`` against ``gt`` per label (default: every nonzero label in either)."""
    return drain(evaluate_job(pred, gt, spacing, labels, tolerance_mm, surface))
