"""Traditional segmentation baselines (the seed paper's comparison): Otsu thresholding, seeded
region growing and morphological active contours (Chan-Vese, geodesic), 2D and 3D, each
returning a uint8 label volume (0 background, 1 object) on the input's grid.

:func:`baseline_job` runs any of them by name as a progress generator (widget and CLI)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._options import choose
from .._progress import Job, Progress
from .active_contours import ACTIVE_CONTOUR_METHODS, active_contours, active_contours_job
from .otsu import otsu
from .region_growing import region_growing

#: Method names accepted by the widget and the command line.
METHODS = ("otsu", "region_growing", "chan_vese", "geodesic")


def canonical_method(name: str) -> str:
    """'Region growing', 'region-growing', 'Chan-Vese' ... → the name in :data:`METHODS`."""
    return choose(str(name).strip().replace("-", "_").replace(" ", "_"), METHODS, "baseline method")


def baseline_job(method: str, image: np.ndarray, *, seed: Any = None, tolerance: float | None = None,
                 iterations: int = 100, init: np.ndarray | None = None,
                 **params: Any) -> Job[np.ndarray]:
    """Run one baseline by name; yields :class:`Progress`, returns uint8 labels.

    ``seed`` (region growing): a point index or a seed mask. ``tolerance`` (region growing):
    intensity tolerance, default 10 % of the image's intensity range. ``iterations``/``init``
    and extra ``params`` go to :func:`active_contours_job`.
    """
    method = canonical_method(method)
    image = np.asarray(image)
    if method in ACTIVE_CONTOUR_METHODS:
        result = yield from active_contours_job(image, method, iterations, init, **params)
        return result
    if params:
        raise ValueError(f"unexpected parameters for {method}: {', '.join(sorted(params))}")
    yield Progress(0, 1, method, f"running {method}")
    if method == "otsu":
        out = otsu(image)
    else:
        if seed is None:
            raise ValueError("region growing needs a seed: a point (z, y, x) or a seed mask")
        if tolerance is None:
            finite = image[np.isfinite(image)] if image.dtype.kind == "f" else image
            tolerance = 0.1 * float(finite.max() - finite.min()) if finite.size else 0.0
        out = region_growing(image, seed, tolerance)
    yield Progress(1, 1, method, "done")
    return out


__all__ = [
    "ACTIVE_CONTOUR_METHODS",
    "METHODS",
    "active_contours",
    "active_contours_job",
    "baseline_job",
    "canonical_method",
    "otsu",
    "region_growing",
]
