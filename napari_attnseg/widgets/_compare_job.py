"""The Compare dock's request, result and worker job (no Qt here): the metrics of every candidate,
the per-slice Dice (3D), the FP/FN overlay and, for 2D images, the head circumference of each
candidate and of the ground truth with the fitted ellipses' outlines. The job also imports
matplotlib, so the GUI thread only builds the figure."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._progress import Job, Progress

logger = logging.getLogger(__name__)

#: Columns shown in the table (every metric is exported).
TABLE_METRICS = ("dice", "jaccard", "sensitivity", "specificity", "precision", "hd", "hd95",
                 "assd", "surface_dice", "rel_volume_diff", "volume_pred_mm3", "volume_gt_mm3")
#: outline vertices of a drawn ellipse
HC_VERTICES = 96


@dataclass(frozen=True)
class CompareConfig:
    """Everything the worker needs, read on the GUI thread (arrays are copies)."""

    gt_name: str
    gt: np.ndarray
    candidates: tuple[tuple[str, np.ndarray], ...]
    spacing: tuple[float, ...]
    tolerance_mm: float = 1.0
    surface: bool = True
    overlay_candidate: str | None = None
    slice_axis: int = 0
    #: candidate name -> {label index: name} (from the layers' metadata; may be empty)
    label_names: dict[str, dict[int, str]] = field(default_factory=dict)
    #: measure the head circumference of this label (2D ground truth only); None: do not
    hc_label: int | None = None
    #: why HC cannot be measured (e.g. the image has no pixel size); "" when it can
    hc_problem: str = ""
    #: the ground truth's voxel size was assumed (no geometry in its file): distances in voxels
    spacing_nominal: bool = False


@dataclass(frozen=True)
class CompareResult:
    report: Any  # MetricsReport
    per_slice: dict[str, np.ndarray]
    overlay: np.ndarray | None
    config: CompareConfig
    #: candidate name -> HeadMeasurement (empty when HC was not asked for or not measurable)
    hc: dict[str, Any] = field(default_factory=dict)
    #: (name, (n, 2) outline in the ground truth's pixel (y, x) coordinates); truth first
    hc_outlines: tuple[tuple[str, np.ndarray], ...] = ()


def warm_plot_imports() -> None:
    """Import matplotlib's figure and Qt canvas modules (in the worker: ~0.3–1 s once)."""
    try:
        import matplotlib.backends.backend_qtagg  # noqa: F401
        import matplotlib.figure  # noqa: F401
    except Exception as exc:  # only a speed-up; the GUI thread imports it otherwise
        logger.debug("warming matplotlib failed: %s", exc)


def compare_job(cfg: CompareConfig) -> Job[CompareResult]:
    """Metrics of every candidate, per-slice Dice, the FP/FN overlay and HC (core calls only)."""
    from ..metrics import error_overlay, evaluate_job, measure_head, per_slice_dice

    report = yield from evaluate_job(dict(cfg.candidates), cfg.gt, cfg.spacing,
                                     tolerance_mm=cfg.tolerance_mm, surface=cfg.surface)
    per_slice = {}
    n = len(cfg.candidates)
    for i, (name, arr) in enumerate(cfg.candidates):
        if cfg.gt.ndim == 3:
            per_slice[name] = per_slice_dice(arr, cfg.gt, axis=cfg.slice_axis)
        yield Progress(i + 1, n, "per-slice Dice", name)
    overlay = None
    if cfg.overlay_candidate is not None:
        overlay = error_overlay(dict(cfg.candidates)[cfg.overlay_candidate], cfg.gt)
    hc: dict[str, Any] = {}
    outlines: list[tuple[str, np.ndarray]] = []
    if cfg.hc_label is not None and cfg.gt.ndim == 2 and not cfg.hc_problem:
        for i, (name, arr) in enumerate(cfg.candidates):
            m = measure_head(arr, cfg.gt, cfg.spacing, cfg.hc_label)
            hc[name] = m
            if i == 0 and m.truth is not None and m.truth.found:
                outlines.append((cfg.gt_name, m.truth.polygon_px(HC_VERTICES)))
            if m.pred.found:
                outlines.append((name, m.pred.polygon_px(HC_VERTICES)))
            yield Progress(i + 1, n, "head circumference", name)
    warm_plot_imports()
    return CompareResult(report, per_slice, overlay, cfg, hc, tuple(outlines))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def _label_text(label: Any, names: dict[int, str]) -> str:
    try:
        name = names.get(int(label))
    except (TypeError, ValueError):
        name = None
    return f"{label} ({name})" if name else _fmt(label)


def hc_summary(result: CompareResult) -> str:
    """The HC readout: each candidate's HC, the ground truth's, and the difference, in mm."""
    cfg = result.config
    if cfg.hc_label is None:
        return ""
    if cfg.gt.ndim != 2:
        return "Head circumference: for 2D images only"
    if cfg.hc_problem:
        return f"Head circumference: {cfg.hc_problem}"
    lines = []
    for i, (name, m) in enumerate(result.hc.items()):
        if i == 0:
            truth = f"{m.truth.hc_mm:.1f} mm" if m.truth.found else "no head found"
            lines.append(f"HC of label {cfg.hc_label}: ground truth '{cfg.gt_name}' {truth}")
        if not m.pred.found:
            lines.append(f"'{name}': no head found")
        elif math.isfinite(m.hc_diff_mm):
            lines.append(f"'{name}': {m.pred.hc_mm:.1f} mm, difference {m.hc_diff_mm:+.1f} mm")
        else:
            lines.append(f"'{name}': {m.pred.hc_mm:.1f} mm")
    return "\n".join(lines)


#: Provenance keys of layers a method made (model prediction, CRF, baseline, fine-tune).
_OUTPUT_KEYS = ("model_id", "crf", "baseline")


def is_method_output(layer: Any) -> bool:
    """True for a layer a method made (a segmentation, CRF or baseline result, an overlay):
    never the default ground truth."""
    meta = (getattr(layer, "metadata", None) or {}).get("attnseg")
    if isinstance(meta, dict):
        prov = meta.get("provenance") if isinstance(meta.get("provenance"), dict) else {}
        if meta.get("role") in ("prediction", "crf", "errors", "uncertainty", "baseline",
                                "hc") or \
                any(k in prov for k in _OUTPUT_KEYS) or prov.get("kind") == "attnseg prediction":
            return True
    return "[attnseg" in getattr(layer, "name", "")
