"""Morphological active contours (Márquez-Neila, Baumela & Álvarez, IEEE TPAMI 2014) from
scikit-image: Chan-Vese (region based, no edges) and geodesic (edge based, with a balloon force).

The iterations run in chunks so that the job yields progress and can be cancelled; a chunked
run equals one uninterrupted run because the level set is the whole state of the evolution
(scikit-image alternates its two smoothing operators through a module-level cycle, so a result
can depend on the parity of earlier calls' iteration counts; chunking does not change it).
"""

from __future__ import annotations

import numpy as np

from .._options import choose
from .._progress import Job, Progress, drain
from .otsu import _finite_image

ACTIVE_CONTOUR_METHODS = ("chan_vese", "geodesic")


def _normalise(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(img)
    if not finite.all():
        img = np.where(finite, img, np.nanmin(img[finite]) if finite.any() else 0.0)
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def active_contours_job(image: np.ndarray, method: str = "chan_vese", iterations: int = 100,
                        init: np.ndarray | None = None, smoothing: int = 1,
                        lambda1: float = 1.0, lambda2: float = 1.0,
                        balloon: float | None = None, threshold: float | str = "auto",
                        sigma: float = 1.0, alpha: float = 100.0,
                        chunk: int = 10) -> Job[np.ndarray]:
    """Generator: yields :class:`Progress` every ``chunk`` iterations, returns uint8 labels.

    Without ``init``, Chan-Vese labels the brighter phase 1.
    ``init``: initial mask (default: checkerboard for Chan-Vese; for geodesic the whole image
    minus a 2-voxel border, shrinking). ``balloon`` (geodesic only): default -1 without ``init``
    (shrink), +1 with one (grow). ``sigma``/``alpha`` shape the edge map
    (``inverse_gaussian_gradient`` of the image scaled to [0, 1]).
    """
    from skimage.segmentation import (
        checkerboard_level_set,
        inverse_gaussian_gradient,
        morphological_chan_vese,
        morphological_geodesic_active_contour,
    )

    method = choose(method.replace("-", "_").replace(" ", "_"), ACTIVE_CONTOUR_METHODS,
                    "active-contour method")
    image = _finite_image(image)
    if int(iterations) < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if int(chunk) < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    img = _normalise(image)
    if init is not None:
        level = np.asarray(init)
        if level.shape != image.shape:
            raise ValueError(f"init shape {level.shape} differs from the image shape {image.shape}")
        level = (level > 0).astype(np.int8)
    elif method == "chan_vese":
        level = checkerboard_level_set(image.shape, 5).astype(np.int8)
    else:
        level = np.zeros(image.shape, dtype=np.int8)
        level[tuple(slice(2, -2) for _ in image.shape)] = 1
    if method == "geodesic":
        gimage = inverse_gaussian_gradient(img, alpha=alpha, sigma=sigma)
        if balloon is None:
            balloon = -1.0 if init is None else 1.0
    total = int(iterations)
    done = 0
    yield Progress(0, total, method, "starting")
    while done < total:
        n = min(int(chunk), total - done)
        if method == "chan_vese":
            level = morphological_chan_vese(img, n, init_level_set=level, smoothing=smoothing,
                                            lambda1=lambda1, lambda2=lambda2)
        else:
            level = morphological_geodesic_active_contour(
                gimage, n, init_level_set=level, smoothing=smoothing, threshold=threshold,
                balloon=balloon)
        done += n
        yield Progress(done, total, method, f"iteration {done}/{total}")
    out = np.asarray(level) > 0
    if method == "chan_vese" and init is None and out.any() and not out.all():
        # the two Chan-Vese phases are symmetric: call the brighter one the object
        if img[out].mean() < img[~out].mean():
            out = ~out
    return out.astype(np.uint8)


def active_contours(image: np.ndarray, method: str = "chan_vese", iterations: int = 100,
                    init: np.ndarray | None = None, **kwargs) -> np.ndarray:
    """Plain wrapper of :func:`active_contours_job` (uint8 labels)."""
    return drain(active_contours_job(image, method, iterations, init, **kwargs))
