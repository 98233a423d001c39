"""Scribble correction of a segmentation: one slice per stroke, carried to neighbouring slices.

A *scribble array* has the image's shape and holds a class index (0 = background, 1..C-1) where
the user drew a stroke and :data:`IGNORE` (255 unless told otherwise) everywhere else.

Correcting one slice (:func:`correct_slice`):

1. **Stroke evidence.** For each scribbled class ``c``, the geodesic distance ``D_c`` (mm) from
   its strokes over the image: a path costs its length plus ``tau_mm / contrast`` mm per unit
   of (smoothed, 1..99 %-normalized) intensity it climbs, so ``D_c`` stays small inside the
   homogeneous region a stroke was drawn in and grows fast across its edges (skimage's
   minimum-cost-path, 8-connected, with the pixel spacing). The evidence is
   ``g_c = exp(-D_c / tau_mm)``: it falls by ``e`` over ``tau_mm`` of plain distance or over
   one ``contrast`` of intensity change.
2. **Fusion.** The model's class log-probabilities get ``strength * g_c`` added to class ``c``
   (renormalized), so a stroke overrules the model in its region and fades away from it.
3. **Hard constraints.** Scribbled pixels (and pixels to ``keep``, e.g. painted by hand) are
   clamped to their class before the CRF and again after it: they always end up with it.
4. **Dense CRF** (``crf.dense_crf``, 2D, the modality preset) on the bounding box of the region
   the strokes reach (``max_c g_c >= reach``); outside that region the slice keeps its labels,
   so a stroke is a local edit.

Carrying strokes to other slices: :mod:`napari_attnseg.interactive.propagate`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..crf.dense_crf import CRFParams, default_params, normalize_intensity

__all__ = [
    "IGNORE", "ScribbleParams", "SliceCorrection", "apply_scribbles", "correct_slice",
    "enforce_scribbles", "geodesic_distance", "probabilities_from_labels", "stray_values",
    "stray_values_message",
]

#: The "not scribbled" value of a scribble array (the CLI's ``--ignore-label`` default).
IGNORE = 255
_EPS = 1e-6


@dataclass(frozen=True)
class ScribbleParams:
    """How strokes correct a segmentation (see the module docstring).

    ``strength``: log-odds added to a stroke's class at the stroke; ``tau_mm``: geodesic decay
    length of the evidence; ``contrast``: the intensity change (normalized 0..1) that costs as
    much as ``tau_mm`` of distance (smaller: edges stop a stroke sooner); ``smooth_px``: Gaussian sigma (pixels) before intensity gradients; ``reach``: the
    evidence below which a stroke does not change a pixel; ``neighbours``: slices on each side
    that "apply to neighbouring slices" corrects; ``decay``: evidence factor per slice of
    distance when propagating; ``max_distance``: farthest slice a stroke is carried to;
    ``similarity``: largest intensity difference (0..1 normalized) for a stroke pixel to be
    carried to another slice; ``crf``: dense-CRF parameters (None: the ``modality`` preset, 2D);
    ``geodesic_max_pixels``: a geodesic search window larger than this many pixels (a large
    slice with small pixels, e.g. a full-resolution ultrasound image) runs on a grid coarsened
    by the smallest whole factor that fits, its distances read back by nearest neighbour (the
    CRF and the hard constraints stay at full resolution); 0: never coarsen.
    """

    strength: float = 10.0
    tau_mm: float = 20.0
    contrast: float = 0.2
    smooth_px: float = 1.0
    reach: float = 0.02
    neighbours: int = 2
    decay: float = 0.8
    max_distance: int = 4
    similarity: float = 0.1
    crf: CRFParams | None = None
    modality: str = ""
    geodesic_max_pixels: int = 512 * 512

    def __post_init__(self) -> None:
        for name in ("strength", "tau_mm"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"scribble parameter {name} must be a positive number, got {v!r}")
        for name in ("smooth_px",):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"scribble parameter {name} must be >= 0, got {v!r}")
        for name in ("reach", "decay", "similarity", "contrast"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 < v < 1):
                raise ValueError(f"scribble parameter {name} must be in (0, 1), got {v!r}")
        for name in ("neighbours", "max_distance", "geodesic_max_pixels"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 0:
                raise ValueError(f"scribble parameter {name} must be an integer >= 0, got {v!r}")
            object.__setattr__(self, name, int(v))
        if self.crf is not None and not isinstance(self.crf, CRFParams):
            raise ValueError(f"scribble parameter crf must be CRFParams or None, got {self.crf!r}")

    def crf_params(self) -> CRFParams:
        """The CRF used per slice: ``crf`` or the modality preset, in 2D, one process, without
        the CRF's class protection (a stroke may legitimately remove a class)."""
        try:
            base = self.crf or default_params(self.modality or "")
        except ValueError:
            base = default_params("")
        return replace(base, mode="2d", workers=1, band_mm=None, protect=False)

    @property
    def edge_weight(self) -> float:
        """mm of path cost per normalized intensity unit climbed (``tau_mm / contrast``)."""
        return self.tau_mm / self.contrast

    @property
    def reach_mm(self) -> float:
        """Geodesic distance beyond which the evidence is below ``reach`` (the search radius)."""
        return self.tau_mm * math.log(1.0 / self.reach)


@dataclass(frozen=True)
class SliceCorrection:
    """``labels`` (H, W) of the corrected slice; ``region``: pixels the strokes could change;
    ``n_changed``: pixels that differ from the base labels; ``seconds`` of compute."""

    labels: np.ndarray
    region: np.ndarray
    n_changed: int
    seconds: float


# ----------------------------------------------------------------------------- helpers
def probabilities_from_labels(labels: Any, n_classes: int, confidence: float = 0.8) -> np.ndarray:
    """(C, *shape) float32 probabilities: ``confidence`` on the label, the rest spread evenly."""
    lab = np.asarray(labels)
    if lab.size and (lab.min() < 0 or lab.max() >= n_classes):
        raise ValueError(f"labels hold values outside 0..{n_classes - 1}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    other = (1.0 - confidence) / max(n_classes - 1, 1)
    probs = np.full((n_classes,) + lab.shape, other, np.float32)
    np.put_along_axis(probs, lab.astype(np.intp)[None], np.float32(confidence), axis=0)
    return probs


def stray_values(labels: Any, n_classes: int, ignore: int | None) -> list[int]:
    """The values of sparse ``labels`` (scribbles, pseudo-labels) that are neither a class
    ``0..n_classes-1`` nor ``ignore``, sorted (empty: the labels are fine). The one check every
    entry point uses (CLI, reader, widget, core)."""
    arr = np.asarray(labels)
    values = np.unique(arr if ignore is None else arr[arr != ignore])
    return [int(v) for v in values if not 0 <= v < n_classes]


def stray_values_message(bad: Sequence[int], n_classes: int, ignore: int | None) -> str:
    """``values [...] that are neither a class (0..C-1) nor the ignore value I`` (the caller
    says what holds them)."""
    tail = "" if ignore is None else f" nor the ignore value {ignore}"
    return f"values {list(bad)[:5]} that are neither a class (0..{n_classes - 1}){tail}"


def _check_scribbles(scribbles: Any, shape: tuple, n_classes: int, ignore: int) -> np.ndarray:
    s = np.asarray(scribbles)
    if s.shape != tuple(shape):
        raise ValueError(f"scribbles have shape {s.shape} but the image has {tuple(shape)}")
    if s.dtype.kind not in "biu":
        raise ValueError(f"scribbles must be integers, got dtype {s.dtype}")
    bad = stray_values(s, n_classes, ignore)
    if bad:
        raise ValueError("scribbles hold " + stray_values_message(bad, n_classes, ignore))
    return s


def _cost(norm255: np.ndarray, spacing: Sequence[float], edge_weight: float,
          smooth_px: float) -> tuple[np.ndarray, np.ndarray]:
    """(per-pixel path cost per mm ``sqrt(1 + (edge_weight * |grad I|)^2)``, the smoothed image
    I in 0..1)."""
    from scipy import ndimage

    img = norm255.astype(np.float32) / np.float32(255.0)
    if smooth_px > 0:
        img = ndimage.gaussian_filter(img, smooth_px)
    gy, gx = np.gradient(img, *[float(s) for s in spacing])
    return np.sqrt(1.0 + (edge_weight ** 2) * (gy * gy + gx * gx)).astype(np.float64), img


def _window(seeds: np.ndarray, radius_px: Sequence[int], shape: tuple) -> tuple[slice, ...]:
    idx = np.nonzero(seeds)
    return tuple(slice(max(0, int(i.min()) - r), min(n, int(i.max()) + 1 + r))
                 for i, r, n in zip(idx, radius_px, shape))


def _coarsen(cost: np.ndarray, seeds: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    """``cost`` averaged and ``seeds`` or-ed over ``f`` x ``f`` blocks (edges padded)."""
    h, w = cost.shape
    ph, pw = -h % f, -w % f
    c = np.pad(cost, ((0, ph), (0, pw)), mode="edge")
    s = np.pad(seeds, ((0, ph), (0, pw)))
    shape = (c.shape[0] // f, f, c.shape[1] // f, f)
    return c.reshape(shape).mean(axis=(1, 3)), s.reshape(shape).any(axis=(1, 3))


def _geodesic(cost: np.ndarray, seeds: np.ndarray, spacing: Sequence[float],
              max_mm: float | None, max_pixels: int = 0) -> np.ndarray:
    """Geodesic distance (mm) from ``seeds`` over ``cost``; inf beyond ``max_mm`` (the search
    is restricted to the seeds' bounding box grown by ``max_mm``: the path cost is never less
    than the path length, so nothing farther can be within ``max_mm``). A window of more than
    ``max_pixels`` pixels (0: no limit) is searched on a grid coarsened ``f`` times."""
    from skimage.graph import MCP_Geometric

    out = np.full(seeds.shape, np.inf)
    if not seeds.any():
        return out
    if max_mm is None:
        win = tuple(slice(0, n) for n in seeds.shape)
    else:
        win = _window(seeds, [int(math.ceil(max_mm / s)) + 1 for s in spacing], seeds.shape)
    c, sd = np.ascontiguousarray(cost[win]), seeds[win]
    f = 1
    if max_pixels and c.size > max_pixels:
        f = int(math.ceil(math.sqrt(c.size / max_pixels)))
        c, sd = _coarsen(c, sd, f)
    mcp = MCP_Geometric(np.ascontiguousarray(c), fully_connected=True,
                        sampling=tuple(float(s) * f for s in spacing))
    dist, _ = mcp.find_costs(np.argwhere(sd))
    if f > 1:
        h, w = cost[win].shape
        dist = np.repeat(np.repeat(dist, f, axis=0), f, axis=1)[:h, :w]
        dist[seeds[win]] = 0.0
    out[win] = dist
    if max_mm is not None:
        out[out > max_mm] = np.inf
    return out


def geodesic_distance(image: Any, seeds: Any, spacing: Sequence[float] = (1.0, 1.0),
                      edge_weight: float = 50.0, smooth_px: float = 1.0,
                      max_mm: float | None = None) -> np.ndarray:
    """Geodesic distance (mm) of every pixel of a 2D ``image`` from the ``seeds`` mask: path
    length plus ``edge_weight`` mm per normalized intensity unit climbed (inf where unreached
    or beyond ``max_mm``)."""
    img = np.asarray(image)
    mask = np.asarray(seeds, dtype=bool)
    if img.ndim != 2 or mask.shape != img.shape:
        raise ValueError(f"need a 2D image and a seed mask of its shape; got {img.shape}, {mask.shape}")
    return _geodesic(_cost(normalize_intensity(img), spacing, edge_weight, smooth_px)[0], mask,
                     spacing, max_mm)


def _seeds(strokes: np.ndarray, c: int, smooth: np.ndarray, contrast: float) -> np.ndarray:
    """The stroke pixels of class ``c`` that look like the stroke (within ``contrast`` of its
    median intensity): a stroke that slips over an edge by a pixel or two stays a hard
    constraint there but does not seed the evidence on the wrong side."""
    seeds = strokes == c
    vals = smooth[seeds]
    like = seeds & (np.abs(smooth - np.median(vals)) <= contrast)
    return like if like.any() else seeds


def _evidence(cost: tuple[np.ndarray, np.ndarray], strokes: np.ndarray, spacing: Sequence[float],
              n_classes: int, params: ScribbleParams, ignore: int, weight: float = 1.0,
              boost: np.ndarray | None = None,
              gmax: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Add ``weight * strength * exp(-D_c / tau)`` per stroke class to ``boost`` (C, H, W) and
    keep the largest unweighted evidence in ``gmax`` (H, W); ``cost`` is ``_cost``'s pair."""
    cost_map, smooth = cost
    if boost is None:
        boost = np.zeros((n_classes,) + strokes.shape, np.float32)
    if gmax is None:
        gmax = np.zeros(strokes.shape, np.float32)
    for c in np.unique(strokes[strokes != ignore]):
        seeds = _seeds(strokes, int(c), smooth, params.contrast)
        d = _geodesic(cost_map, seeds, spacing, params.reach_mm, params.geodesic_max_pixels)
        g = np.exp(-d / params.tau_mm).astype(np.float32)
        boost[int(c)] += np.float32(weight * params.strength) * g
        np.maximum(gmax, g, out=gmax)
    return boost, gmax


def _fuse(probs: np.ndarray, boost: np.ndarray) -> np.ndarray:
    """softmax(log p + boost) over the class axis, float32."""
    u = np.log(np.clip(probs, _EPS, 1.0)).astype(np.float32) + boost
    u -= u.max(axis=0, keepdims=True)
    np.exp(u, out=u)
    u /= u.sum(axis=0, keepdims=True)
    return u


def _clamp(probs: np.ndarray, clamp: np.ndarray) -> None:
    """Set the probabilities of clamped pixels (``clamp >= 0``) to one-hot, in place."""
    where = clamp >= 0
    if where.any():
        probs[:, where] = 0.0
        ys, xs = np.nonzero(where)
        probs[clamp[where], ys, xs] = 1.0


def _bbox(mask: np.ndarray, margin: Sequence[int]) -> tuple[slice, ...] | None:
    if not mask.any():
        return None
    return _window(mask, margin, mask.shape)


def _correct(probs: np.ndarray, norm255: np.ndarray, spacing: Sequence[float],
             boost: np.ndarray, gmax: np.ndarray, clamp: np.ndarray, base: np.ndarray,
             params: ScribbleParams) -> tuple[np.ndarray, np.ndarray]:
    """Fusion, hard constraints, CRF on the reached region's box; returns (labels, region)."""
    from ..crf.dense_crf import _crf_block

    region = (gmax >= params.reach) | (clamp >= 0)
    labels = base.copy()
    crf = params.crf_params()
    margin = [int(math.ceil(max(3.0 * crf.sxy_gaussian_mm, 2.0) / s)) + 2 for s in spacing]
    box = _bbox(region, margin)
    if box is None:
        return labels, region
    p = _fuse(probs[(slice(None),) + box], boost[(slice(None),) + box])
    sub_clamp = clamp[box]
    _clamp(p, sub_clamp)
    q = _crf_block(p, norm255[box], [crf.sxy_gaussian_mm / s for s in spacing],
                   [crf.sxy_bilateral_mm / s for s in spacing], crf,
                   (box[0].start, box[1].start))
    new = q.argmax(axis=0).astype(labels.dtype)
    keep = sub_clamp >= 0
    new[keep] = sub_clamp[keep].astype(labels.dtype)
    sub = labels[box]
    reg = region[box]
    sub[reg] = new[reg]
    return labels, region


def _prepare_slice(probabilities: Any, image: Any, spacing: Sequence[float]):
    probs = np.asarray(probabilities, dtype=np.float32)
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"a slice correction needs a 2D image, got shape {img.shape}")
    if probs.ndim != 3 or probs.shape[1:] != img.shape or probs.shape[0] < 2:
        raise ValueError(f"probabilities must be (C >= 2, {img.shape[0]}, {img.shape[1]}); "
                         f"got {probs.shape}")
    sp = tuple(float(s) for s in spacing)[-2:]
    if len(sp) != 2 or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing must hold 2 positive values (y, x), got {tuple(spacing)}")
    if not np.isfinite(probs).all():
        raise ValueError("probabilities contain NaN or infinite values")
    return probs, img, sp


def _clamp_map(scribbles: np.ndarray, ignore: int, keep: np.ndarray | None,
               base: np.ndarray) -> np.ndarray:
    clamp = np.where(scribbles != ignore, scribbles.astype(np.int64), -1)
    if keep is not None:
        clamp = np.where(keep, base.astype(np.int64), clamp)
    return clamp


# ----------------------------------------------------------------------------- one slice
def correct_slice(probabilities: Any, image: Any, scribbles: Any,
                  spacing: Sequence[float] = (1.0, 1.0), params: ScribbleParams | None = None,
                  *, base_labels: Any = None, keep: Any = None, norm: Any = None,
                  ignore: int = IGNORE) -> SliceCorrection:
    """Correct one 2D slice with its strokes (see the module docstring).

    ``probabilities`` (C, H, W): the model's; ``scribbles`` (H, W): class or ``ignore``;
    ``base_labels``: the labels kept outside the strokes' region (default: argmax of the
    probabilities); ``keep``: pixels that keep ``base_labels`` whatever the strokes say (painted
    by hand); ``norm``: the image already normalized to 0..255 (e.g. for the whole volume).
    """
    t0 = time.perf_counter()
    params = params or ScribbleParams()
    probs, img, sp = _prepare_slice(probabilities, image, spacing)
    c = probs.shape[0]
    s = _check_scribbles(scribbles, img.shape, c, ignore)
    base = probs.argmax(axis=0).astype(np.uint8) if base_labels is None else np.asarray(base_labels)
    if base.shape != img.shape:
        raise ValueError(f"base labels have shape {base.shape}, the image {img.shape}")
    keep_mask = None if keep is None else np.asarray(keep, dtype=bool)
    norm255 = normalize_intensity(img) if norm is None else np.asarray(norm, dtype=np.float32)
    cost = _cost(norm255, sp, params.edge_weight, params.smooth_px)
    boost, gmax = _evidence(cost, s, sp, c, params, ignore)
    labels, region = _correct(probs, norm255, sp, boost, gmax, _clamp_map(s, ignore, keep_mask, base),
                              base, params)
    return SliceCorrection(labels, region, int(np.count_nonzero(labels != base)),
                           time.perf_counter() - t0)


def enforce_scribbles(labels: Any, scribbles: Any, ignore: int = IGNORE) -> np.ndarray:
    """``labels`` (a copy) with every scribbled voxel set to its stroke's class."""
    lab = np.array(labels, copy=True)
    s = np.asarray(scribbles)
    if s.shape != lab.shape:
        raise ValueError(f"scribbles have shape {s.shape} but the labels have {lab.shape}")
    drawn = s != ignore
    lab[drawn] = s[drawn].astype(lab.dtype)
    return lab


def apply_scribbles(probabilities: Any, image: Any, scribbles: Any, spacing: Sequence[float],
                    params: ScribbleParams | None = None, ignore: int = IGNORE) -> np.ndarray:
    """The probabilities (C, *spatial) with the strokes' evidence fused in (per 2D slice) and
    scribbled voxels clamped to their class: the input of an ordinary CRF refinement (the CLI's
    ``refine --scribbles``). A foreground probability (the image's shape) counts as 2 classes."""
    img = np.asarray(image)
    p = np.asarray(probabilities, dtype=np.float32)
    if p.shape == img.shape:
        p = np.stack([1.0 - p, p])
    if p.ndim != img.ndim + 1 or p.shape[1:] != img.shape:
        raise ValueError(f"probabilities {p.shape} do not fit the image {img.shape}")
    params = params or ScribbleParams()
    s = _check_scribbles(scribbles, img.shape, p.shape[0], ignore)
    out = p.copy()
    sp = tuple(float(v) for v in spacing)
    norm = normalize_intensity(img)
    planes = [(slice(None),)] if img.ndim == 2 else [(z,) for z in range(img.shape[0])]
    for z in planes:
        sz = s[z]
        if not (sz != ignore).any():
            continue
        cost = _cost(norm[z], sp[-2:], params.edge_weight, params.smooth_px)
        boost, _ = _evidence(cost, sz, sp[-2:], p.shape[0], params, ignore)
        fused = _fuse(p[(slice(None),) + z], boost)
        _clamp(fused, np.where(sz != ignore, sz.astype(np.int64), -1))
        out[(slice(None),) + z] = fused
    return out
