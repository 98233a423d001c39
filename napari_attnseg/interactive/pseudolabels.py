"""Dense pseudo-labels from scribbles, for training a model from scribbles only.

A scribble covers about 1 % of a slice (ACDC's published scribbles: 1.08 % of the voxels): a
network trained on the strokes alone learns each structure's centre and not its border (the
partial cross-entropy run of BENCHMARKS.md, left ventricle Dice 0.42). Before training, each
scribbled 2D slice is completed by the **random walker** of Grady (2006; scikit-image's
``random_walker``): every pixel gets, for each scribbled class, the probability that a random
walk from it first reaches a stroke of that class, on a graph whose edge weights
``exp(-beta (I_i - I_j)^2)`` fall across intensity edges (the image is normalized to 0..1 by
its 1st..99th percentiles first, as the dense CRF does: ``crf.dense_crf.normalize_intensity``). The pseudo-label is the most probable class where that
probability reaches ``confidence``; elsewhere (the uncertain band along borders) it is
``out_ignore``, which a partial loss skips. Scribbled pixels keep their class. A slice with no
stroke, or with strokes of one class only, keeps just its strokes (the walk needs two classes to
compete).

On ACDC's 128 training volumes (scored against their expert masks, which are never used to make
the labels): Dice 0.963 on the 92.9 % of the voxels kept at ``confidence`` 0.8, which hold 59 % of
the expert foreground (the border bands are left out); labelling every pixel (``confidence`` 0)
gives 0.805 (11 of the volumes). BENCHMARKS.md, session 9.
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
        raise ValueError("scribbles hold " + stray_values_message(bad, n_classes, ignore))
    return img, scr


def _walk(image: np.ndarray, scribbles: np.ndarray, ignore: int, params: PseudoLabelParams,
          spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray] | None:
    """(the scribbled classes, their random-walk probabilities (K, H, W)) of one checked 2D
    slice; None when fewer than two classes were scribbled (nothing for the walk to weigh)."""
    from skimage.segmentation import random_walker

    from ..crf.dense_crf import normalize_intensity

    drawn = scribbles != ignore
    present = np.unique(scribbles[drawn])
    if present.size < 2:
        return None
    markers = np.zeros(image.shape, np.int32)  # random_walker: 0 = unlabelled, 1..K the seeds
    for k, c in enumerate(present, start=1):
        markers[scribbles == c] = k
    with warnings.catch_warnings():  # "probability range is outside [0, 1]" by ~tol: harmless here
        warnings.simplefilter("ignore", UserWarning)
        prob = random_walker(normalize_intensity(image) / np.float32(255.0), markers,
                             beta=float(params.beta), mode="cg_j", tol=float(params.tol),
                             return_full_prob=True, spacing=np.asarray(spacing, dtype=float)[-2:])
    return present, prob


def _dtype(n_classes: int, out_ignore: int) -> type:
    return np.uint8 if max(out_ignore, n_classes) < 256 else np.uint16


def _slice_labels(image: np.ndarray, scribbles: np.ndarray, ignore: int, params: PseudoLabelParams,
                  out_ignore: int, spacing: Sequence[float], dtype: type) -> tuple[np.ndarray, bool]:
    """(pseudo-labels of one checked 2D slice, whether the walk ran on it)."""
    drawn = scribbles != ignore
    out = np.full(image.shape, out_ignore, dtype)
    out[drawn] = scribbles[drawn]
    walk = _walk(image, scribbles, ignore, params, spacing)
    if walk is None:
        return out, False
    present, prob = walk
    sure = prob.max(axis=0) >= float(params.confidence)
    out[sure] = present[prob.argmax(axis=0)[sure]].astype(dtype)
    out[drawn] = scribbles[drawn]
    return out, True


def pseudo_labels_slice(image: Any, scribbles: Any, n_classes: int, ignore: int,
                        params: PseudoLabelParams | None = None, *, out_ignore: int = 255,
                        spacing: Sequence[float] = (1.0, 1.0)) -> np.ndarray:
    """One 2D slice's pseudo-labels (uint8 or uint16: a class or ``out_ignore``); see the module
    docstring."""
    img, scr = _check(image, scribbles, n_classes, ignore, out_ignore)
    if img.ndim != 2:
        raise ValueError(f"pseudo_labels_slice needs a 2D slice, got shape {img.shape}")
    return _slice_labels(img, scr, ignore, params or PseudoLabelParams(), out_ignore, spacing,
                         _dtype(n_classes, out_ignore))[0]


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
    dtype = _dtype(n_classes, out_ignore)
    out = np.full(img.shape, out_ignore, dtype)
    walked = 0
    for i, z in enumerate(planes):
        out[z], ran = _slice_labels(img[z], scr[z], ignore, params, out_ignore, sp, dtype)
        walked += int(ran)
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
