"""Dense pseudo-labels from scribbles, for training a model from scribbles only.

A scribble covers about 1 % of a slice (ACDC's published scribbles: 1.08 % of the voxels): a
network trained on the strokes alone learns each structure's centre and not its border (the
partial cross-entropy run of BENCHMARKS.md, left ventricle Dice 0.42). Before training, each
scribbled 2D slice is completed by the **random walker** of Grady (2006; scikit-image's
``random_walker``): every pixel gets, for each scribbled class, the probability that a random
walk from it first reaches a stroke of that class, on a graph whose edge weights
``exp(-beta (I_i - I_j)^2)`` fall across intensity edges (the image is normalized to 0..1 by
its 1st..99th percentiles first). The pseudo-label is the most probable class where that
probability reaches ``confidence``; elsewhere (the uncertain band along borders) it is
``out_ignore``, which a partial loss skips. Scribbled pixels keep their class. A slice with no
stroke, or with strokes of one class only, keeps just its strokes (the walk needs two classes to
compete).

On 10 training volumes of ACDC (scored against their expert masks, which are never used to make
the labels): mean Dice 0.84 for the random-walker labels of every pixel, 0.96 on the 97 % of
pixels kept at ``confidence`` 0.8 (BENCHMARKS.md, session 9).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._progress import Progress

__all__ = ["PseudoLabelParams", "PseudoLabelResult", "pseudo_labels", "pseudo_labels_job",
           "pseudo_labels_slice"]


@dataclass(frozen=True)
class PseudoLabelParams:
    """``beta``: edge sensitivity of the random walker on the 0..1 normalized image (larger:
    edges stop a walk sooner); ``confidence``: the class probability a pixel needs to get a
    label (else ``out_ignore``); ``tol``: tolerance of the linear solver."""

    beta: float = 130.0
    confidence: float = 0.8
    tol: float = 1e-3

    def __post_init__(self) -> None:
        for name in ("beta", "tol"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"pseudo-label parameter {name} must be a positive number, got {v!r}")
        if not (isinstance(self.confidence, (int, float)) and 0.0 <= self.confidence < 1.0):
            raise ValueError(f"pseudo-label confidence must be in [0, 1), got {self.confidence!r}")


@dataclass(frozen=True)
class PseudoLabelResult:
    """``labels``: the image's shape, a class or ``out_ignore``; ``labelled_fraction``: share of
    voxels with a class; ``slices``: slices completed by the walk; ``seconds``."""

    labels: np.ndarray
    labelled_fraction: float
    slices: int
    seconds: float


def _normalize(image: np.ndarray) -> np.ndarray:
    img = image.astype(np.float32)
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        return np.zeros_like(img)
    lo, hi = np.percentile(finite, [1.0, 99.0])
    if hi <= lo:
        return np.zeros_like(img)
    return np.clip((np.nan_to_num(img, nan=float(lo)) - lo) / (hi - lo), 0.0, 1.0)


def _check(image: Any, scribbles: Any, n_classes: int, ignore: int, out_ignore: int):
    img = np.asarray(image)
    scr = np.asarray(scribbles)
    if img.ndim not in (2, 3):
        raise ValueError(f"pseudo-labels need a 2D image or a (z, y, x) volume, got shape {img.shape}")
    if scr.shape != img.shape:
        raise ValueError(f"scribbles have shape {scr.shape} but the image has {img.shape}")
    if scr.dtype.kind not in "biu":
        raise ValueError(f"scribbles must be whole numbers, got dtype {scr.dtype}")
    if n_classes < 2:
        raise ValueError(f"pseudo-labels need at least 2 classes, got {n_classes}")
    if 0 <= out_ignore < n_classes:
        raise ValueError(f"the output's ignore value {out_ignore} is a class (0..{n_classes - 1})")
    from .scribbles import stray_values, stray_values_message

    bad = stray_values(scr, n_classes, ignore)
    if bad:
        raise ValueError("scribbles " + stray_values_message(bad, n_classes, ignore))
    return img, scr


def pseudo_labels_slice(image: Any, scribbles: Any, n_classes: int, ignore: int,
                        params: PseudoLabelParams | None = None, *, out_ignore: int = 255,
                        spacing: Sequence[float] = (1.0, 1.0)) -> np.ndarray:
    """One 2D slice's pseudo-labels (uint8 or uint16: a class or ``out_ignore``); see the module
    docstring."""
    from skimage.segmentation import random_walker

    params = params or PseudoLabelParams()
    img, scr = _check(image, scribbles, n_classes, ignore, out_ignore)
    if img.ndim != 2:
        raise ValueError(f"pseudo_labels_slice needs a 2D slice, got shape {img.shape}")
    dtype = np.uint8 if max(out_ignore, n_classes) < 256 else np.uint16
    drawn = scr != ignore
    out = np.full(img.shape, out_ignore, dtype)
    out[drawn] = scr[drawn]
    present = np.unique(scr[drawn])
    if present.size < 2:
        return out
    markers = np.zeros(img.shape, np.int32)  # random_walker: 0 = unlabelled, 1..K the seeds
    for k, c in enumerate(present, start=1):
        markers[scr == c] = k
    with warnings.catch_warnings():  # "probability range is outside [0, 1]" by ~tol: harmless here
        warnings.simplefilter("ignore", UserWarning)
        prob = random_walker(_normalize(img), markers, beta=float(params.beta), mode="cg_j",
                             tol=float(params.tol), return_full_prob=True,
                             spacing=np.asarray(spacing, dtype=float)[-2:])
    best = prob.argmax(axis=0)
    sure = prob.max(axis=0) >= float(params.confidence)
    out[sure] = present[best[sure]].astype(dtype)
    out[drawn] = scr[drawn]
    return out


def pseudo_labels_job(image: Any, scribbles: Any, n_classes: int, ignore: int,
                      params: PseudoLabelParams | None = None, *, out_ignore: int = 255,
                      spacing: Sequence[float] | None = None
                      ) -> Generator[Progress, None, PseudoLabelResult]:
    """Pseudo-labels of a 2D image or of every axial slice of a (z, y, x) volume, one progress
    report per slice (close the generator to stop)."""
    t0 = time.perf_counter()
    params = params or PseudoLabelParams()
    img, scr = _check(image, scribbles, n_classes, ignore, out_ignore)
    sp = tuple(float(s) for s in (spacing or (1.0,) * img.ndim))[-2:]
    planes = [(slice(None),)] if img.ndim == 2 else [(z,) for z in range(img.shape[0])]
    dtype = np.uint8 if max(out_ignore, n_classes) < 256 else np.uint16
    out = np.full(img.shape, out_ignore, dtype)
    walked = 0
    for i, z in enumerate(planes):
        s = scr[z]
        out[z] = pseudo_labels_slice(img[z], s, n_classes, ignore, params, out_ignore=out_ignore, spacing=sp)
        walked += int(np.unique(s[s != ignore]).size >= 2)
        yield Progress(i + 1, len(planes), "pseudo-labels", f"slice {i + 1}/{len(planes)}")
    labelled = float(np.count_nonzero(out != out_ignore)) / max(out.size, 1)
    return PseudoLabelResult(out, labelled, walked, time.perf_counter() - t0)


def pseudo_labels(image: Any, scribbles: Any, n_classes: int, ignore: int,
                  params: PseudoLabelParams | None = None, *, out_ignore: int = 255,
                  spacing: Sequence[float] | None = None) -> PseudoLabelResult:
    """:func:`pseudo_labels_job` run to the end."""
    from .._progress import drain

    return drain(pseudo_labels_job(image, scribbles, n_classes, ignore, params,
                                   out_ignore=out_ignore, spacing=spacing))
