"""Seeded region growing: the connected region of voxels whose intensity lies within a tolerance
of the seed's intensity (a point's value, or the mean over a seed mask)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .otsu import _finite_image


def region_growing(image: np.ndarray, seed: Sequence[int] | np.ndarray, tolerance: float,
                   connectivity: int = 1) -> np.ndarray:
    """uint8 labels (1 = grown region).

    Parameters
    ----------
    image : 2D or 3D array.
    seed : a point index ``(z, y, x)`` / ``(y, x)``, or a boolean/label mask of the image's shape
        (nonzero voxels are seeds; the reference intensity is their mean).
    tolerance : voxels with ``|image - reference| <= tolerance`` can join the region.
    connectivity : 1 = face neighbours (6 in 3D, 4 in 2D) up to ``ndim`` = all neighbours.

    The region is every within-tolerance connected component touching a seed voxel (so a point
    seed gives the same result as ``skimage.segmentation.flood``).
    """
    from scipy import ndimage

    image = _finite_image(image)
    if not np.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
    if not 1 <= int(connectivity) <= image.ndim:
        raise ValueError(f"connectivity must be 1..{image.ndim}, got {connectivity}")
    seed_arr = np.asarray(seed)
    if seed_arr.shape == image.shape and image.ndim > 1 and seed_arr.ndim == image.ndim:
        seeds = seed_arr.astype(bool)
        if not seeds.any():
            raise ValueError("the seed mask is empty: paint or place at least one seed voxel")
    else:
        idx = tuple(int(round(float(v))) for v in seed_arr.ravel())
        if len(idx) != image.ndim:
            raise ValueError(f"seed {tuple(seed_arr.ravel())} needs {image.ndim} coordinates")
        if not all(0 <= i < n for i, n in zip(idx, image.shape)):
            raise ValueError(f"seed {idx} lies outside the image of shape {image.shape}")
        seeds = np.zeros(image.shape, dtype=bool)
        seeds[idx] = True
    img = image.astype(np.float64, copy=False)
    ref = float(img[seeds].mean())
    within = np.abs(img - ref) <= tolerance
    within |= seeds  # seeds always belong to the region
    structure = ndimage.generate_binary_structure(image.ndim, int(connectivity))
    comp, _ = ndimage.label(within, structure=structure)
    keep = np.unique(comp[seeds])
    keep = keep[keep != 0]
    return np.isin(comp, keep).astype(np.uint8)
