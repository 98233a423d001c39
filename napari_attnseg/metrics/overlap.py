"""Overlap metrics from one confusion-count kernel (Dice, Jaccard, sensitivity, specificity,
precision), volumes in mm³, per-slice Dice and the false-positive / false-negative overlay.

All functions take a prediction and a ground truth of the same shape: boolean masks or integer
label volumes (a voxel belongs to ``label`` when its value equals ``label``; boolean arrays are
their own foreground). Definitions and the empty-mask policy are in
:data:`napari_attnseg.metrics.report.DEFINITIONS`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import GeometryError


def check_same_shape(pred: np.ndarray, gt: np.ndarray) -> None:
    """Raise :class:`GeometryError` when the two arrays cannot be compared voxel by voxel."""
    if np.shape(pred) != np.shape(gt):
        raise GeometryError(
            f"prediction shape {np.shape(pred)} differs from ground truth shape {np.shape(gt)}; "
            "resample one onto the other's grid before scoring"
        )


def _is_01_bytes(a: np.ndarray) -> bool:
    """True for a contiguous 1-byte integer array holding only 0 and 1 (viewable as bool)."""
    if a.dtype.itemsize != 1 or a.dtype.kind not in "iu" or not a.flags.c_contiguous or not a.size:
        return False
    if int(a.max()) > 1:
        return False
    return a.dtype.kind == "u" or int(a.min()) >= 0


def binary_mask(a: np.ndarray, label: int | None = 1) -> np.ndarray:
    """A boolean view (no copy where possible) of the voxels equal to ``label``.

    ``label=None`` means "any nonzero label". Boolean arrays are returned as they are for
    ``label`` 1/True/None. A uint8 array holding only 0 and 1 is viewed as boolean (no copy).
    """
    a = np.asarray(a)
    if a.dtype == bool:
        if label is None or label == 1:
            return a
        return np.zeros(a.shape, dtype=bool) if label != 0 else ~a
    if label is None:
        if _is_01_bytes(a):
            return a.view(bool)
        return a != 0
    if label == 1 and _is_01_bytes(a):
        return a.view(bool)  # 0/1 bytes are valid booleans: no 16 MB temporary on 256³
    return a == label


_CHUNK = 1 << 20  # elements per block: the AND temporary stays in cache (no 16 MB page faults)


def _count_and(p: np.ndarray, g: np.ndarray) -> int:
    """|p ∧ g| for boolean arrays, in cache-sized blocks through one reused buffer."""
    if p.size <= _CHUNK or not (p.flags.c_contiguous and g.flags.c_contiguous):
        return int(np.count_nonzero(np.logical_and(p, g)))
    pf, gf = p.reshape(-1), g.reshape(-1)
    buf = np.empty(_CHUNK, dtype=bool)
    total = 0
    for i in range(0, pf.size, _CHUNK):
        x, y = pf[i:i + _CHUNK], gf[i:i + _CHUNK]
        total += int(np.count_nonzero(np.logical_and(x, y, out=buf[:x.size])))
    return total


def confusion_counts(pred: np.ndarray, gt: np.ndarray,
                     label: int | None = 1) -> tuple[int, int, int, int]:
    """``(tp, fp, fn, tn)`` voxel counts of ``label`` (the one kernel every overlap metric uses).

    Three ``count_nonzero`` calls on boolean views (|p ∧ g|, |p|, |g|); the rest by subtraction.
    """
    check_same_shape(pred, gt)
    p = binary_mask(pred, label)
    g = binary_mask(gt, label)
    tp = _count_and(p, g)
    n_p = int(np.count_nonzero(p))
    n_g = int(np.count_nonzero(g))
    fp = n_p - tp
    fn = n_g - tp
    tn = int(p.size) - tp - fp - fn
    return tp, fp, fn, tn


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def overlap_from_counts(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """Dice, Jaccard, sensitivity, specificity and precision from confusion counts.

    Empty-mask policy: both masks empty → dice = jaccard = 1; a zero denominator for the other
    ratios (e.g. sensitivity with an empty ground truth) → NaN (undefined, never guessed).
    """
    union = tp + fp + fn
    return {
        "dice": 1.0 if union == 0 else 2.0 * tp / (2.0 * tp + fp + fn),
        "jaccard": 1.0 if union == 0 else tp / union,
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "precision": _ratio(tp, tp + fp),
    }


def overlap_metrics(pred: np.ndarray, gt: np.ndarray, label: int | None = 1) -> dict[str, float]:
    """Dice, Jaccard, sensitivity (recall), specificity and precision of ``label``."""
    return overlap_from_counts(*confusion_counts(pred, gt, label))


def _check_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    sp = tuple(float(s) for s in np.asarray(spacing, dtype=float).ravel())
    if len(sp) != ndim:
        raise ValueError(f"spacing {sp} has {len(sp)} values but the masks have {ndim} dimensions")
    if not all(np.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing must be positive and finite, got {sp}")
    return sp


def volume_metrics(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float],
                   label: int | None = 1) -> dict[str, float]:
    """``volume_pred_mm3``, ``volume_gt_mm3`` and ``rel_volume_diff`` = (Vp − Vg) / Vg.

    Both empty → rel_volume_diff 0; empty ground truth with a prediction → +inf.
    """
    check_same_shape(pred, gt)
    sp = _check_spacing(spacing, np.ndim(gt))
    voxel = float(np.prod(sp))
    vp = np.count_nonzero(binary_mask(pred, label)) * voxel
    vg = np.count_nonzero(binary_mask(gt, label)) * voxel
    if vg == 0:
        rvd = 0.0 if vp == 0 else float("inf")
    else:
        rvd = (vp - vg) / vg
    return {"volume_pred_mm3": float(vp), "volume_gt_mm3": float(vg), "rel_volume_diff": float(rvd)}


def per_slice_dice(pred: np.ndarray, gt: np.ndarray, axis: int = 0,
                   label: int | None = None) -> np.ndarray:
    """Dice of each slice along ``axis`` (float64, one value per slice); NaN where both are empty.

    ``label=None`` scores the foreground (any nonzero label).
    """
    check_same_shape(pred, gt)
    ndim = np.ndim(gt)
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for {ndim}-D masks")
    axis %= ndim
    p = binary_mask(pred, label)
    g = binary_mask(gt, label)
    others = tuple(i for i in range(ndim) if i != axis)
    tp = np.count_nonzero(np.logical_and(p, g), axis=others).astype(float)
    den = np.count_nonzero(p, axis=others) + np.count_nonzero(g, axis=others).astype(float)
    out = np.full(den.shape, np.nan)
    nz = den > 0
    out[nz] = 2.0 * tp[nz] / den[nz]
    return out


def error_overlay(pred: np.ndarray, gt: np.ndarray, label: int | None = None) -> np.ndarray:
    """uint8 map: 0 = agree, 1 = false positive, 2 = false negative.

    With ``label`` given: FP = pred is ``label`` and gt is not; FN = gt is ``label`` and pred is
    not. With ``label=None`` (all labels): FP = pred labelled where gt is background; FN = gt
    labelled where pred differs (missed, or given another label).
    """
    check_same_shape(pred, gt)
    out = np.zeros(np.shape(gt), dtype=np.uint8)
    if label is None:
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        g = binary_mask(gt, None)
        p = binary_mask(pred, None)
        out[p & ~g] = 1
        out[g & (pred != gt)] = 2
    else:
        p = binary_mask(pred, label)
        g = binary_mask(gt, label)
        out[p & ~g] = 1
        out[g & ~p] = 2
    return out


def present_labels(*arrays: np.ndarray) -> list[int]:
    """Sorted nonzero labels present in any of the arrays (booleans count as label 1)."""
    found: set[int] = set()
    for a in arrays:
        a = np.asarray(a)
        if a.dtype == bool:
            if a.any():
                found.add(1)
            continue
        if a.dtype.kind == "f":
            if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
                raise ValueError("label volumes must hold integers; got non-integer values")
            a = a.astype(np.int64)
        if a.dtype.kind not in "iu":
            raise ValueError(f"label volumes must be integer or boolean, got dtype {a.dtype}")
        if a.size == 0:
            continue
        lo, hi = int(a.min()), int(a.max())
        if lo >= 0 and hi < 65536:
            counts = np.bincount(a.ravel(), minlength=1)
            found.update(int(v) for v in np.flatnonzero(counts) if v != 0)
        else:
            found.update(int(v) for v in np.unique(a) if v != 0)
    return sorted(found)
