"""Per-case scores of the benchmark: the binary *foreground* score (every method, so classical
binary baselines and multi-class networks are compared on the same target) and the *class-mean*
score of a multi-class label map (networks and trained models).

Foreground: every nonzero label; in a partially annotated case (OpenKBP: ``known`` = the classes
the case contoured) the truth is the union of the contoured classes and a network's voxels
predicted as an uncontoured class are left out of its foreground (that class is unknown there, not
wrong). A classical method has no classes: its whole mask is its foreground.

Class mean (keys ``mc_*``): for each scored class (the dataset's foreground classes; only the
contoured ones in a partially annotated case) Dice, Jaccard, sensitivity and HD95 of that class;
a class absent from both the truth and the prediction of a case is skipped for that case (as in
``benchmarks/bench_real_models.py``); then the mean over the classes scored. Per-class Dice is kept
as ``dice_c<k>``. HD95 of an empty prediction (or truth) of a scored class is the image diagonal,
as for the foreground score.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["CLASS_KEYS", "FG_KEYS", "class_scores", "diagonal", "foreground_target", "score_case"]

#: Foreground metrics (the runner's METRIC_KEYS) and their class-mean counterparts.
FG_KEYS = ("dice", "jaccard", "sensitivity", "precision", "hd95")
CLASS_KEYS = ("mc_dice", "mc_jaccard", "mc_sensitivity", "mc_hd95")


def diagonal(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The image diagonal in the spacing's unit (substitute for an infinite HD95)."""
    return float(np.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing))))


def score_case(pred_fg: np.ndarray, gt_fg: np.ndarray, spacing: Sequence[float]) -> tuple[dict[str, float], bool]:
    """Foreground metrics of one case; HD95 = image diagonal (mm) when it is infinite."""
    from ..metrics import label_metrics

    row = label_metrics(pred_fg.astype(np.uint8), gt_fg.astype(np.uint8), spacing, 1)
    out = {k: float(row[k]) for k in FG_KEYS}
    substituted = False
    if not math.isfinite(out["hd95"]):
        out["hd95"] = diagonal(gt_fg.shape, spacing)
        substituted = True
    return out, substituted


def _scored(n_classes: int, known: Iterable[int] | None) -> list[int]:
    classes = list(range(1, int(n_classes)))
    return classes if known is None else [c for c in classes if c in {int(k) for k in known}]


def foreground_target(pred_labels: np.ndarray | None, pred_mask: np.ndarray | None, gt: np.ndarray,
                      n_classes: int, known: Iterable[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """``(pred_fg, gt_fg)`` boolean masks (see the module docstring): ``pred_labels`` a label map
    of a multi-class method, or ``pred_mask`` the binary mask of a classical one."""
    gt = np.asarray(gt)
    scored = _scored(n_classes, known)
    gt_fg = np.isin(gt, scored) if known is not None else gt > 0
    if pred_labels is not None:
        pred = np.asarray(pred_labels)
        pred_fg = np.isin(pred, scored) if known is not None else pred > 0
    else:
        pred_fg = np.asarray(pred_mask) > 0
    return pred_fg, gt_fg


def class_scores(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], n_classes: int,
                 known: Iterable[int] | None = None) -> dict[str, float]:
    """Class-mean Dice, Jaccard, sensitivity, HD95 (``mc_*``) and per-class Dice (``dice_c<k>``);
    every ``mc_*`` value is NaN when no class is scored in the case."""
    from ..metrics import label_metrics

    pred, gt = np.asarray(pred), np.asarray(gt)
    rows: dict[int, dict[str, float]] = {}
    for c in _scored(n_classes, known):
        p, g = pred == c, gt == c
        if not p.any() and not g.any():
            continue
        m = label_metrics(p.astype(np.uint8), g.astype(np.uint8), spacing, 1)
        hd = float(m["hd95"])
        rows[c] = {"dice": float(m["dice"]), "jaccard": float(m["jaccard"]),
                   "sensitivity": float(m["sensitivity"]),
                   "hd95": hd if math.isfinite(hd) else diagonal(gt.shape, spacing)}
    out: dict[str, float] = {}
    for key in CLASS_KEYS:
        vals = [r[key[3:]] for r in rows.values() if not math.isnan(r[key[3:]])]
        out[key] = float(np.mean(vals)) if vals else math.nan
    for c in range(1, int(n_classes)):
        out[f"dice_c{c}"] = rows[c]["dice"] if c in rows else math.nan
    return out
