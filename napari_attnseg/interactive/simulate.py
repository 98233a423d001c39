"""A simulated user, as the interactive-segmentation literature evaluates tools (e.g. Xu et al.
2016, Sakinis et al. 2019): each interaction goes into the **largest error region** of the
current slice, with the class the ground truth has there (a false negative of class k gets a
stroke of class k, a false positive a stroke of the true class, background included).

* :func:`next_scribble`: a thin stroke (``width_px`` wide) along the region's medial axis,
  centred on its deepest point and at most ``length_px`` long, kept inside the region;
* :func:`next_brush`: the same path painted with a brush whose radius fits the region
  (at most ``radius_px``, never wider than the region), the pixels it covers set to the class.

:func:`slice_dice` scores a slice (mean Dice over the foreground classes present in either).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Stroke", "error_regions", "next_brush", "next_scribble", "slice_dice"]


@dataclass(frozen=True)
class Stroke:
    """``mask`` (H, W) bool pixels of one interaction, ``label`` its class, ``region_size``
    the size of the error region it was drawn in."""

    mask: np.ndarray
    label: int
    region_size: int


def slice_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean Dice over the foreground classes in ``pred`` or ``gt`` (1.0 if both are empty)."""
    classes = sorted((set(np.unique(gt).tolist()) | set(np.unique(pred).tolist())) - {0})
    if not classes:
        return 1.0
    scores = []
    for c in classes:
        p, g = pred == c, gt == c
        scores.append(2.0 * np.count_nonzero(p & g) / (np.count_nonzero(p) + np.count_nonzero(g)))
    return float(np.mean(scores))


def error_regions(pred: np.ndarray, gt: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """Connected error regions (8-connected) as ``(mask, true class)``, largest first."""
    from scipy import ndimage

    out = []
    wrong = pred != gt
    for c in np.unique(gt[wrong]):
        comp, n = ndimage.label(wrong & (gt == c), structure=np.ones((3, 3)))
        if n == 0:
            continue
        sizes = np.bincount(comp.ravel())[1:]
        for k in np.argsort(-sizes):
            out.append((comp == k + 1, int(c)))
    out.sort(key=lambda r: -int(r[0].sum()))
    return out


def _path(region: np.ndarray, length_px: int, min_depth: float = 0.0) -> tuple[np.ndarray, float]:
    """The region's medial-axis pixels within ``length_px / 2`` of its deepest point (and at
    least ``min_depth`` from its boundary); returns (path mask, depth of the deepest point)."""
    from scipy import ndimage
    from skimage.morphology import skeletonize

    depth = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    cy, cx = np.unravel_index(int(np.argmax(depth)), region.shape)
    skel = skeletonize(region) & (depth >= min_depth)
    yy, xx = np.ogrid[: region.shape[0], : region.shape[1]]
    near = (yy - cy) ** 2 + (xx - cx) ** 2 <= (length_px / 2.0) ** 2
    path = skel & near
    if not path.any():
        path = np.zeros_like(region)
    path[cy, cx] = True
    # keep the skeleton piece connected to the deepest point
    comp, _ = ndimage.label(path, structure=np.ones((3, 3)))
    return comp == comp[cy, cx], float(depth[cy, cx])


def _disk(r: int) -> np.ndarray:
    yy, xx = np.ogrid[-r: r + 1, -r: r + 1]
    return yy * yy + xx * xx <= r * r


def next_scribble(pred: np.ndarray, gt: np.ndarray, width_px: int = 3,
                  length_px: int = 40) -> Stroke | None:
    """A stroke of the true class in the largest error region (None: the slice is right)."""
    from scipy import ndimage

    regions = error_regions(pred, gt)
    if not regions:
        return None
    region, label = regions[0]
    path, _ = _path(region, length_px)
    r = max(0, (int(width_px) - 1) // 2)
    mask = ndimage.binary_dilation(path, _disk(r)) & region if r else path
    return Stroke(mask, label, int(region.sum()))


def next_brush(pred: np.ndarray, gt: np.ndarray, radius_px: int = 5,
               length_px: int = 40) -> Stroke | None:
    """A brush stroke of the true class along the same path, radius fitted to the region."""
    from scipy import ndimage

    regions = error_regions(pred, gt)
    if not regions:
        return None
    region, label = regions[0]
    _, depth = _path(region, length_px)
    r = int(max(0, min(int(radius_px), np.floor(depth) - 1)))
    path, _ = _path(region, length_px, min_depth=r + 1)
    mask = ndimage.binary_dilation(path, _disk(r)) if r else path
    return Stroke(mask, label, int(region.sum()))
