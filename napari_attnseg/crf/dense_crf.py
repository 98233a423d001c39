"""Fully connected (dense) CRF refinement of class probabilities, in 2D per slice or in 3D.

Model (Krähenbühl & Koltun 2011, as used by the seed paper): unary ``-log p`` from the network's
probabilities, plus two Potts pairwise kernels:

* a smoothness (Gaussian) kernel over position, bandwidth ``sxy_gaussian_mm``;
* an appearance (bilateral) kernel over position (``sxy_bilateral_mm``) and intensity
  (``srgb_bilateral``).

Bandwidths are in **millimetres** and converted per array axis with the voxel spacing
(``sdim = mm / spacing``), so a 0.7×0.7×5 mm MR volume is not over-smoothed across slices.
The intensity bandwidth is in *normalized intensity units*: the image is mapped robustly to
0..255 (its 1st..99th percentile, clipped), the range pydensecrf's classic RGB values live in.

Inputs
------
``probabilities``: ``(C, *spatial)`` with C >= 2 classes summing to 1 along axis 0, or a
foreground probability with exactly the image's shape (then C = 2: background ``1-p``,
foreground ``p``). Logits, NaN/inf, wrong shapes and wrong spacing lengths give ``ValueError``.

Modes: ``"2d"`` refines every (y, x) slice on its own (slices in parallel processes when
``workers > 1``: pydensecrf holds the GIL, so threads would not help; output is bit-identical to
the serial run); ``"3d"`` refines the whole volume as one CRF (one process; iterations reported
as progress); ``"auto"`` picks 3D unless the slices are much thicker than the in-plane voxels
(``spacing[0] > 3 × min(in-plane)``) or the 3D estimate does not fit in free memory.

Boundary band (``band_mm``): only voxels within ``band_mm`` of the label boundary of the input
(argmax), or whose top probability is below ``1 - uncertain``, may change. The CRF runs only on
the bounding box of those voxels plus a margin (per slice in 2D); everything else keeps its
input label and probabilities.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from .._options import choose
from .._progress import Job, Progress, drain
from ..errors import AttnsegError, MissingDependencyError

logger = logging.getLogger(__name__)

MODES = ("auto", "2d", "3d")
#: Probabilities are clipped to this minimum before ``-log`` (as pydensecrf's unary_from_softmax).
PROB_CLIP = 1e-5
#: Estimated peak bytes per voxel of a 3D pydensecrf run: fixed part + per-label part
#: (features, two permutohedral lattices, unary, Q and its two work matrices); measured
#: 208-209 B/voxel for 2 labels in benchmarks/bench_crf.py, for us and a direct call alike.
BYTES_PER_VOXEL_FIXED = 130
BYTES_PER_VOXEL_PER_LABEL = 40
#: Voxels sampled (regularly) to estimate the intensity percentiles.
PERCENTILE_SAMPLES = 1 << 16
#: A 3D run may use at most this fraction of the available memory.
MEMORY_FRACTION = 0.7
#: "auto" uses 3D only when the slice spacing is at most this many in-plane voxel sizes.
AUTO_3D_MAX_ANISOTROPY = 3.0


@dataclass(frozen=True)
class CRFParams:
    """Dense-CRF parameters; bandwidths in mm, intensity bandwidth in normalized units (0..255).

    ``mode``: "2d" (per slice), "3d" or "auto". ``band_mm``: restrict changes to a boundary band
    of this half-width (None = whole volume). ``uncertain``: voxels whose top probability is
    below ``1 - uncertain`` are also in the band. ``workers``: parallel processes for 2D slices.
    ``protect`` (on by default): if the CRF shrinks a class's volume by more than ``max_shrink``
    (a fraction of the input argmax volume of that class), the input labels and probabilities
    are kept on that class's input region and the result names the class in ``protected`` and
    ``warnings`` (see the module docstring).
    """

    sxy_gaussian_mm: float = 1.0
    gaussian_weight: float = 2.0
    sxy_bilateral_mm: float = 5.0
    srgb_bilateral: float = 20.0
    bilateral_weight: float = 3.0
    iterations: int = 5
    mode: str = "auto"
    band_mm: float | None = None
    uncertain: float = 0.05
    workers: int = 2
    protect: bool = True
    max_shrink: float = 0.5

    def __post_init__(self) -> None:
        for name in ("sxy_gaussian_mm", "sxy_bilateral_mm", "srgb_bilateral"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"CRF parameter {name} must be a positive number, got {v!r}")
        for name in ("gaussian_weight", "bilateral_weight"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"CRF parameter {name} must be >= 0, got {v!r}")
        if int(self.iterations) != self.iterations or not 1 <= self.iterations <= 100:
            raise ValueError(
                f"CRF iterations must be an integer in 1..100, got {self.iterations!r}")
        object.__setattr__(self, "iterations", int(self.iterations))
        object.__setattr__(self, "mode", choose(self.mode, MODES, "CRF mode"))
        if self.band_mm is not None and not (math.isfinite(self.band_mm) and self.band_mm > 0):
            raise ValueError(f"CRF band_mm must be positive or None, got {self.band_mm!r}")
        if not 0 <= self.uncertain < 0.5:
            raise ValueError(f"CRF uncertain margin must be in [0, 0.5), got {self.uncertain!r}")
        if int(self.workers) != self.workers or self.workers < 1:
            raise ValueError(f"CRF workers must be an integer >= 1, got {self.workers!r}")
        object.__setattr__(self, "workers", int(self.workers))
        if not isinstance(self.protect, (bool, np.bool_)):
            raise ValueError(f"CRF protect must be True or False, got {self.protect!r}")
        object.__setattr__(self, "protect", bool(self.protect))
        if not (isinstance(self.max_shrink, (int, float)) and 0 <= self.max_shrink < 1):
            raise ValueError(f"CRF max_shrink must be a fraction in [0, 1), got {self.max_shrink!r}")
        object.__setattr__(self, "max_shrink", float(self.max_shrink))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Modality presets. Kernels are kept small: in 3D the classic 2D photo settings (80 px / 13 /
#: weight 10, or 20 mm / 13 / 5) pull small structures into the large background (a 23 mm
#: sphere vanished in the benchmark scene), while these keep Dice and sharpen edges.
_DEFAULTS = {
    # CT: tuned (see default_params): a very narrow intensity bandwidth, because the 1..99 %
    # normalization spans air to bone (~6-7 HU per unit), so a 20-30 HU lesion/organ contrast
    # is only ~4 units; the old 15 units (~100 HU) blurred lesion into organ.
    "CT": CRFParams(sxy_gaussian_mm=1.0, gaussian_weight=1.0, sxy_bilateral_mm=5.0,
                    srgb_bilateral=3.0, bilateral_weight=3.0),
    # MR: bias fields and weaker edges: wider intensity bandwidth.
    "MR": CRFParams(sxy_gaussian_mm=1.0, gaussian_weight=2.0, sxy_bilateral_mm=5.0,
                    srgb_bilateral=25.0, bilateral_weight=3.0),
    # US: speckle: stronger smoothness, wide intensity bandwidth, per-frame 2D.
    "US": CRFParams(sxy_gaussian_mm=1.0, gaussian_weight=3.0, sxy_bilateral_mm=4.0,
                    srgb_bilateral=30.0, bilateral_weight=3.0, mode="2d"),
    "": CRFParams(),
}


def default_params(modality: str = "") -> CRFParams:
    """Sensible parameters for a modality preset ("CT", "MR", "US" or "" for unknown).

    All presets have ``protect`` on (a class the CRF would shrink by more than half keeps its
    input region; see :class:`CRFResult`), so the CRF never erases a class the network predicted.

    How the CT preset was chosen: ``crf.autotune`` (mean organ+lesion Dice, protect off so the
    parameters alone are judged) over srgb_bilateral {3, 5, 8, 15} × bilateral_weight {1, 2, 3}
    × gaussian_weight {1, 2} × sxy_bilateral_mm {3, 5, 8} (72 sets, 2D mode as "auto" picks for
    2.5 mm slices), on cases 0 and 1 of ``phantom_dataset("ct", 3, seed=101)`` (not the sample
    case), each with the shipped ct-phantom-2d probabilities and with a simulated better network
    (blurred one-hot truth + smooth noise, lesion logit lowered; benchmarks/bench_crf_defaults.py).
    Mean Dice gain over the 4 runs: old CT preset +0.034, srgb 3 / bilateral 3 / gaussian 1-2 /
    5 mm +0.045 (the top sets all had srgb 3). Lower pairwise weights (1/1) gained less (+0.02)
    and did **not** save the shipped model's weak lesion on case 1 (p < 0.6; -0.09 in every set):
    only ``protect`` does. MR and US presets were not re-tuned (no MR/US tuning run yet).
    """
    key = choose(modality or "", list(_DEFAULTS), "modality") if modality else ""
    return _DEFAULTS[key]


@dataclass(frozen=True)
class CRFResult:
    """Refined ``labels`` (uint8, or uint16 beyond 255 classes), ``probabilities`` (float32,
    (C, *spatial)), ``n_changed`` voxels whose label differs from the input argmax, the
    ``params`` used (mode resolved to "2d"/"3d"), and the wall time in ``seconds``.
    ``protected``: classes whose input region was restored because the CRF shrank them by more
    than ``params.max_shrink``; ``warnings``: one human-readable line per protected class."""

    labels: np.ndarray
    probabilities: np.ndarray
    n_changed: int
    params: CRFParams
    seconds: float
    protected: tuple[int, ...] = ()
    warnings: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------- helpers
def import_pydensecrf():
    """The ``pydensecrf.densecrf`` module, or a MissingDependencyError with the install hint."""
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as exc:
        raise MissingDependencyError("pydensecrf2", extra="crf",
                                     purpose="CRF refinement") from exc
    return dcrf


def normalize_intensity(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Map ``image`` to float32 0..255 by its ``low``..``high`` percentiles (clipped)."""
    img = np.asarray(image, dtype=np.float32)
    flat = img.reshape(-1)
    step = max(1, flat.size // PERCENTILE_SAMPLES)  # a regular subsample is plenty (and fast)
    lo, hi = np.percentile(flat[::step], [low, high]) if img.size else (0.0, 1.0)
    if not hi > lo:
        lo, hi = float(img.min()), float(img.max())
    if not hi > lo:
        return np.zeros(img.shape, np.float32)
    out = (img - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    np.clip(out, 0.0, 255.0, out=out)
    return out


def _argmax0(p: np.ndarray) -> np.ndarray:
    """``p.argmax(axis=0)`` as uint8/uint16 (first maximum wins), without the strided reduce."""
    dtype = np.uint8 if p.shape[0] <= 255 else np.uint16
    if p.shape[0] == 2:
        return (p[1] > p[0]).astype(dtype)
    out = np.zeros(p.shape[1:], dtype)
    best = p[0].copy()
    for k in range(1, p.shape[0]):
        better = p[k] > best
        out[better] = k
        np.maximum(best, p[k], out=best)
    return out


def _position_features(shape: Sequence[int], sdims: Sequence[float], extra: int = 0,
                       offset: Sequence[int] | None = None) -> np.ndarray:
    """(len(shape)+extra, N) float32 features ``index / sdim`` per axis, C-order (the values of
    pydensecrf.utils.create_pairwise_gaussian, without its meshgrid temporaries). ``offset``
    adds the block's position in the full array (features are translation-invariant for the
    CRF; kept so a crop sees the same coordinates as the full volume)."""
    nd = len(shape)
    feats = np.empty((nd + extra,) + tuple(shape), np.float32)
    for ax, (n, s) in enumerate(zip(shape, sdims)):
        start = 0 if offset is None else offset[ax]
        coord = np.arange(start, start + n, dtype=np.float32) / np.float32(s)
        view = [1] * nd
        view[ax] = n
        feats[ax] = coord.reshape(view)
    return feats.reshape(nd + extra, -1)


def _add_pairwise(crf: Any, shape: Sequence[int], norm_image: np.ndarray,
                  sd_gauss: Sequence[float], sd_bilat: Sequence[float], params: CRFParams,
                  offset: Sequence[int] | None = None) -> None:
    """Add the smoothness (Gaussian) and appearance (bilateral) kernels to ``crf``; bandwidths
    ``sd_*`` are in voxels per axis (mm / spacing). Used by every CRF run, 2D or 3D."""
    if params.gaussian_weight > 0:
        crf.addPairwiseEnergy(_position_features(shape, sd_gauss, offset=offset),
                              compat=float(params.gaussian_weight))
    if params.bilateral_weight > 0:
        feats = _position_features(shape, sd_bilat, extra=1, offset=offset)
        feats[-1] = norm_image.reshape(-1)
        feats[-1] /= np.float32(params.srgb_bilateral)
        crf.addPairwiseEnergy(feats, compat=float(params.bilateral_weight))


def _crf_block(probs: np.ndarray, norm_image: np.ndarray, sd_gauss: Sequence[float],
               sd_bilat: Sequence[float], params: CRFParams,
               offset: Sequence[int] | None = None) -> np.ndarray:
    """One dense CRF over a whole block (2D slice or 3D volume): returns Q (C, *shape) float32.
    Module-level so process workers can run it."""
    dcrf = import_pydensecrf()
    c = probs.shape[0]
    shape = probs.shape[1:]
    n = int(np.prod(shape))
    crf = dcrf.DenseCRF(n, c)
    unary = _unary(probs)
    crf.setUnaryEnergy(unary)
    del unary
    _add_pairwise(crf, shape, norm_image, sd_gauss, sd_bilat, params, offset)
    q = np.array(crf.inference(params.iterations), dtype=np.float32)
    return q.reshape((c,) + tuple(shape))


# ------------------------------------------------------------------- process pool (2D slices)
_POOL: ProcessPoolExecutor | None = None
_POOL_KEY: tuple[int, str] = (0, "")
_POOL_LOCK = threading.Lock()


def _start_method() -> str:
    """"fork" when this process runs a single thread (fast); "forkserver" when other threads run
    (e.g. inside napari), where forking is unsafe. Neither runs the user's ``__main__`` again
    (see ``_pool_context``), so a script needs no ``__main__`` guard."""
    import multiprocessing as mp

    methods = mp.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def _pool(workers: int) -> ProcessPoolExecutor:
    """A process pool reused across calls (start-up paid once)."""
    global _POOL, _POOL_KEY
    from ._pool_context import no_main_context

    with _POOL_LOCK:
        if _POOL is None or _POOL_KEY[0] != workers:
            method = _start_method()
            if _POOL is not None:
                _POOL.shutdown(wait=False, cancel_futures=True)
            ctx = no_main_context(method)
            if method == "forkserver":
                ctx.set_forkserver_preload(["numpy", "pydensecrf.densecrf",
                                            "napari_attnseg.crf.dense_crf"])
            _POOL = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
            _POOL_KEY = (workers, method)
        return _POOL


def shutdown_pool() -> None:
    """Stop the worker processes of the 2D slice pool (they restart on the next parallel run)."""
    global _POOL, _POOL_KEY
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.shutdown(wait=True, cancel_futures=True)
        _POOL, _POOL_KEY = None, (0, "")


# --------------------------------------------------------------------------------- validation
def _prepare(probabilities: Any, image: Any, spacing: Any) -> tuple[np.ndarray, np.ndarray, tuple]:
    img = np.asarray(image)
    if img.ndim not in (2, 3):
        raise ValueError(f"image must be 2D (y, x) or 3D (z, y, x); got shape {img.shape}")
    if img.dtype.kind not in "biuf":
        raise ValueError(f"image must be numeric; got dtype {img.dtype}")
    p = np.asarray(probabilities)
    if p.dtype.kind not in "biuf":
        raise ValueError(f"probabilities must be numeric; got dtype {p.dtype}")
    if p.shape == img.shape:  # foreground probability
        fg = p.astype(np.float32)
        p = np.stack([1.0 - fg, fg])
    elif p.ndim == img.ndim + 1 and p.shape[1:] == img.shape:
        if p.shape[0] < 2:
            raise ValueError(f"probabilities need at least 2 classes on axis 0; got {p.shape}")
        p = p.astype(np.float32, copy=False)
    else:
        hint = ""
        if p.ndim == img.ndim + 1 and p.shape[-1] <= 16 and p.shape[:-1] == img.shape:
            hint = " (the class axis looks last: move it first with np.moveaxis(p, -1, 0))"
        raise ValueError(
            f"probabilities shape {p.shape} does not fit image shape {img.shape}: expected "
            f"(C, {', '.join(map(str, img.shape))}) or the image shape (foreground probability)"
            + hint)
    sp = tuple(float(s) for s in np.asarray(spacing, dtype=float).ravel())
    if len(sp) != img.ndim:
        raise ValueError(f"spacing has {len(sp)} values {sp} but the image has {img.ndim} axes")
    if not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing must be positive and finite, got {sp}")
    if not np.isfinite(p).all():
        raise ValueError("probabilities contain NaN or infinite values")
    if img.dtype.kind == "f" and not np.isfinite(img).all():
        raise ValueError("image contains NaN or infinite values")
    if p.min() < -1e-4 or p.max() > 1 + 1e-4:
        raise ValueError(f"probabilities must lie in [0, 1] (got {p.min():.3g}..{p.max():.3g});"
                         " pass softmax probabilities, not logits")
    sums = p.sum(axis=0)
    if np.abs(sums - 1).max() > 1e-2:
        raise ValueError("class probabilities must sum to 1 along axis 0 (max deviation "
                         f"{np.abs(sums - 1).max():.3g}); apply softmax over the class axis")
    return np.ascontiguousarray(p, dtype=np.float32), img, sp


def estimate_memory(shape: Sequence[int], n_labels: int) -> int:
    """Estimated peak bytes of one 3D CRF over ``shape`` with ``n_labels`` classes."""
    n = int(np.prod(shape))
    return n * (BYTES_PER_VOXEL_FIXED + BYTES_PER_VOXEL_PER_LABEL * n_labels)


def _available_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def _resolve_mode(params: CRFParams, shape: tuple, spacing: tuple, n_labels: int,
                  box_shape: tuple) -> str:
    if len(shape) == 2:
        return "2d"
    need = estimate_memory(box_shape, n_labels)
    fits = need <= MEMORY_FRACTION * _available_memory()
    if params.mode == "3d":
        if not fits:
            raise AttnsegError(
                f"A 3D CRF over {box_shape} voxels needs about {need / 2**30:.1f} GiB but only "
                f"{_available_memory() / 2**30:.1f} GiB is free; use mode '2d' (per slice), set a "
                "boundary band (band_mm), or crop the volume")
        return "3d"
    if params.mode == "2d":
        return "2d"
    if spacing[0] > AUTO_3D_MAX_ANISOTROPY * min(spacing[1:]):
        return "2d"
    if not fits:
        logger.warning("3D CRF would need %.1f GiB; refining per slice instead", need / 2**30)
        return "2d"
    return "3d"


def _band_mask(labels0: np.ndarray, top: np.ndarray, spacing: tuple,
               params: CRFParams) -> np.ndarray:
    """Voxels allowed to change: within band_mm of a label boundary, or uncertain."""
    from scipy import ndimage

    boundary = np.zeros(labels0.shape, bool)
    for ax in range(labels0.ndim):
        a = [slice(None)] * labels0.ndim
        b = [slice(None)] * labels0.ndim
        a[ax], b[ax] = slice(1, None), slice(None, -1)
        diff = labels0[tuple(a)] != labels0[tuple(b)]
        boundary[tuple(a)] |= diff
        boundary[tuple(b)] |= diff
    if boundary.any():
        dist = ndimage.distance_transform_edt(~boundary, sampling=spacing)
        band = dist <= params.band_mm
    else:
        band = boundary
    return band | (top < 1.0 - params.uncertain)


def _bbox(mask: np.ndarray, margin: Sequence[int]) -> tuple[slice, ...] | None:
    if not mask.any():
        return None
    out = []
    for ax in range(mask.ndim):
        other = tuple(i for i in range(mask.ndim) if i != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        lo = max(0, int(idx[0]) - margin[ax])
        hi = min(mask.shape[ax], int(idx[-1]) + 1 + margin[ax])
        out.append(slice(lo, hi))
    return tuple(out)


# ---------------------------------------------------------------------------------- the job
def refine_job(probabilities: Any, image: Any, spacing: Sequence[float],
               params: CRFParams | None = None) -> Job[CRFResult]:
    """Refine ``probabilities`` with a dense CRF; a generator yielding Progress, returning a
    :class:`CRFResult`. Closing it cancels (between slices in 2D, between iterations in 3D)."""
    t0 = time.perf_counter()
    params = params or CRFParams()
    probs, img, sp = _prepare(probabilities, image, spacing)
    import_pydensecrf()  # fail early with the install hint
    c = probs.shape[0]
    shape = img.shape
    yield Progress(0, 1, "prepare", "Preparing CRF inputs")
    norm = normalize_intensity(img)
    labels0 = _argmax0(probs)
    change = None
    region: tuple[slice, ...] | None = tuple(slice(0, s) for s in shape)
    if params.band_mm is not None:
        change = _band_mask(labels0, probs.max(axis=0), sp, params)
        margin_mm = max(params.band_mm, 3.0 * params.sxy_gaussian_mm)
        margin = [int(math.ceil(margin_mm / s)) for s in sp]
        region = _bbox(change, margin)
    box_shape = shape if region is None else tuple(s.stop - s.start for s in region)
    mode = _resolve_mode(params, shape, sp, c, box_shape)
    used = replace(params, mode=mode)
    q = probs.copy() if change is not None else np.empty_like(probs)
    probs_kept: Any = probs  # the input, for protect (rebuilt on demand if freed below)
    if region is not None:
        if mode == "3d":
            holder = [probs[(slice(None),) + region]]
            if change is None:  # not needed after the run: let _run_3d free it (memory)
                probs_kept = lambda: _prepare(probabilities, image, spacing)[0]  # noqa: E731
                del probs
            q_box = yield from _run_3d(holder, norm[region], sp, params,
                                       [s.start for s in region])
            if change is None:
                q = q_box
            else:
                q[(slice(None),) + region] = q_box
            del q_box
        else:
            yield from _run_2d(probs, norm, sp, params, q, change, region)
    if change is not None:  # keep the input outside the band
        np.copyto(q, probs, where=~change[None])
    labels = _argmax0(q)
    protected: list[int] = []
    warnings: list[str] = []
    if params.protect:
        protected, warnings = _protect(labels, labels0, q, probs_kept, c, params.max_shrink)
    n_changed = int(np.count_nonzero(labels != labels0))
    yield Progress(1, 1, "done", f"CRF changed {n_changed} voxels")
    return CRFResult(labels=labels, probabilities=q, n_changed=n_changed, params=used,
                     seconds=time.perf_counter() - t0, protected=tuple(protected),
                     warnings=tuple(warnings))


def _protect(labels: np.ndarray, labels0: np.ndarray, q: np.ndarray, probs: Any, c: int,
             max_shrink: float) -> tuple[list[int], list[str]]:
    """Restore, in place, the input region of every class the CRF shrank by > ``max_shrink``.

    ``probs`` is the input (C, *spatial) array, or a callable giving it (built only when a
    class needs restoring, so a 3D run need not keep a copy). Classes are checked in order of
    input volume, largest first, so a small class restored last keeps its whole input region.
    """
    n_in = np.bincount(labels0.ravel(), minlength=c)[:c]
    n_out = np.bincount(labels.ravel(), minlength=c)[:c]
    lost = [k for k in range(c) if n_in[k] > 0 and n_out[k] < (1.0 - max_shrink) * n_in[k]]
    if not lost:
        return [], []
    p = probs() if callable(probs) else probs
    warnings = []
    for k in sorted(lost, key=lambda k: -int(n_in[k])):
        region = labels0 == k
        np.copyto(q, p, where=region[None])
        labels[region] = k
        msg = (f"CRF kept the input labels of class {k}: it would have shrunk it from "
               f"{int(n_in[k])} to {int(n_out[k])} voxels (more than {max_shrink:.0%}); lower the "
               "pairwise weights or raise srgb_bilateral, or set protect=False to allow this")
        logger.warning(msg)
        warnings.append(msg)
    return sorted(lost), warnings


def _unary(probs: np.ndarray) -> np.ndarray:
    """``-log(clip(p))`` as a C-order float32 (C, N) matrix, computed in place on one copy."""
    c = probs.shape[0]
    unary = np.clip(probs.reshape(c, -1), PROB_CLIP, 1.0, dtype=np.float32)
    np.log(unary, out=unary)
    np.negative(unary, out=unary)
    return unary


def _run_3d(holder: list, norm: np.ndarray, sp: tuple, params: CRFParams,
            offset: Sequence[int]) -> Job[np.ndarray]:
    """One 3D CRF, iterating step by step so progress and cancel work per iteration.
    Identical to ``DenseCRF.inference(iterations)``. ``holder`` = [probs], emptied here so the
    probabilities can be freed once the unary is built."""
    dcrf = import_pydensecrf()
    probs = holder.pop()
    c, shape = probs.shape[0], probs.shape[1:]
    n = int(np.prod(shape))
    total = params.iterations + 1
    yield Progress(0, total, "crf 3d", f"Building the 3D CRF ({n} voxels)")
    crf = dcrf.DenseCRF(n, c)
    unary = _unary(probs)
    del probs
    crf.setUnaryEnergy(unary)
    del unary
    _add_pairwise(crf, shape, norm, [params.sxy_gaussian_mm / s for s in sp],
                  [params.sxy_bilateral_mm / s for s in sp], params, offset)
    q, tmp1, tmp2 = crf.startInference()
    for it in range(params.iterations):
        yield Progress(it + 1, total, "crf 3d",
                       f"Mean-field iteration {it + 1}/{params.iterations}")
        crf.stepInference(q, tmp1, tmp2)
    return np.array(q, dtype=np.float32).reshape((c,) + tuple(shape))


def _run_2d(probs: np.ndarray, norm: np.ndarray, sp: tuple, params: CRFParams, q: np.ndarray,
            change: np.ndarray | None, region: tuple[slice, ...]) -> Job[None]:
    """Per-slice CRFs written into ``q`` (in parallel processes when workers > 1)."""
    in_plane = sp[-2:]
    sd_g = [params.sxy_gaussian_mm / s for s in in_plane]
    sd_b = [params.sxy_bilateral_mm / s for s in in_plane]
    if probs.ndim == 3:  # a single 2D image
        yield Progress(0, 1, "crf 2d", "Refining the image")
        q[(slice(None),) + region] = _crf_block(probs[(slice(None),) + region], norm[region],
                                                sd_g, sd_b, params,
                                                [r.start for r in region])
        return None
    margin = [int(math.ceil(max(params.band_mm or 0, 3 * params.sxy_gaussian_mm) / s))
              for s in in_plane]
    tasks: list[tuple[int, tuple[slice, slice]]] = []
    for z in range(region[0].start, region[0].stop):
        if change is None:
            tasks.append((z, region[1:]))
        else:
            box = _bbox(change[z], margin)
            if box is not None:
                tasks.append((z, box))
    total = len(tasks)

    def args(z: int, box: tuple[slice, slice]):
        return (np.ascontiguousarray(probs[(slice(None), z) + box]), norm[z][box], sd_g, sd_b,
                params, (box[0].start, box[1].start))

    yield Progress(0, total, "crf 2d", f"Refining {total} slices")
    if params.workers <= 1 or total < 2:
        for i, (z, box) in enumerate(tasks):
            q[(slice(None), z) + box] = _crf_block(*args(z, box))
            yield Progress(i + 1, total, "crf 2d", f"Slice {i + 1}/{total}")
        return None
    pool = _pool(params.workers)
    pending: dict[Future, tuple[int, tuple[slice, slice]]] = {}
    queue = list(tasks)
    done = 0
    try:
        from concurrent.futures import FIRST_COMPLETED, wait

        while queue or pending:
            while queue and len(pending) < params.workers + 1:
                z, box = queue.pop(0)
                pending[pool.submit(_crf_block, *args(z, box))] = (z, box)
            finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in finished:
                z, box = pending.pop(fut)
                q[(slice(None), z) + box] = fut.result()
                done += 1
            yield Progress(done, total, "crf 2d", f"Slice {done}/{total}")
    finally:
        for fut in pending:
            fut.cancel()
    return None


def refine(probabilities: Any, image: Any, spacing: Sequence[float],
           params: CRFParams | None = None) -> CRFResult:
    """Run :func:`refine_job` to the end and return its :class:`CRFResult`."""
    return drain(refine_job(probabilities, image, spacing, params))


def cpu_count() -> int:
    """Cores this process may use (for the default number of workers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1
