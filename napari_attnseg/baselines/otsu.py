"""Otsu's threshold (N. Otsu, IEEE Trans. SMC 1979) on the whole image or inside a mask."""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


def _finite_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(
            f"baselines need a 2D (y, x) or 3D (z, y, x) image, got shape {image.shape}")
    if image.dtype.kind not in "biuf":
        raise ValueError(f"baselines need a numeric image, got dtype {image.dtype}")
    return image


def otsu(image: np.ndarray, mask: np.ndarray | None = None, nbins: int = 256) -> np.ndarray:
    """uint8 labels: 1 where ``image`` is above Otsu's threshold (computed over the finite voxels,
    inside ``mask`` when given), else 0. A constant image gives an empty result (logged)."""
    image = _finite_image(image)
    finite = np.isfinite(image) if image.dtype.kind == "f" else np.ones(image.shape, bool)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != image.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the image shape {image.shape}")
        finite &= mask
    values = image[finite]
    if values.size == 0 or values.min() == values.max():
        logger.warning("Otsu: the image is constant (or empty) where scored; result is empty")
        return np.zeros(image.shape, dtype=np.uint8)
    from skimage.filters import threshold_otsu

    t = threshold_otsu(values.astype(np.float64, copy=False), nbins=nbins)
    out = (image > t) & finite
    return out.astype(np.uint8)
