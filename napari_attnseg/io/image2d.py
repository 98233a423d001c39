"""Plain 2D images (PNG, JPEG, TIFF; a multi-page TIFF becomes a (z, y, x) stack)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import ReadError
from ..volume import Volume
from ._common import as_label_array, check_file, looks_like_labels

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: 2D images count as labels only with very few values (a grayscale PNG has up to 256)
MAX_IMAGE_LABEL_VALUES = 16


def is_image2d(path: str | Path) -> bool:
    """True when the name ends in a plain image suffix (no file access; never raises)."""
    return str(path).lower().endswith(IMAGE_SUFFIXES)


def _to_gray(arr: np.ndarray, path: Path) -> tuple[np.ndarray, list[str]]:
    """(..., y, x, 3|4) colour -> grayscale luminance; identical channels are taken as is."""
    rgb = arr[..., :3]
    if all(np.array_equal(rgb[..., 0], rgb[..., c]) for c in (1, 2)):
        return rgb[..., 0], []
    gray = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return gray, [f"{path.name} is a colour image; converted to grayscale (luminance)"]


def read_image2d(path: str | Path, *, pixel_size_mm: float | None = None) -> Volume:
    """Read a PNG/JPEG/TIFF as a (y, x) Volume (a multi-page TIFF as (z, y, x)).

    ``pixel_size_mm`` sets the isotropic pixel size; without it 1.0 mm is used and the volume
    carries a warning saying so.
    """
    path = Path(path)
    check_file(path)
    warnings: list[str] = []
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(str(path))
        else:
            import imageio.v3 as iio

            arr = iio.imread(str(path))
    except Exception as exc:  # imageio/tifffile raise many types for corrupt files
        raise ReadError(path, f"not a readable image ({type(exc).__name__}: {exc})") from exc
    arr = np.asarray(arr)
    if arr.ndim >= 3 and arr.shape[-1] in (3, 4):
        arr, w = _to_gray(arr, path)
        warnings += w
    arr = np.squeeze(arr) if arr.ndim > 2 else arr
    if arr.ndim not in (2, 3):
        raise ReadError(path, f"image has shape {arr.shape}; a 2D image or a 3D stack is needed")
    if pixel_size_mm is None:
        size = 1.0
        warnings.append(f"{path.name} has no pixel size; 1.0 mm assumed (pass pixel_size_mm)")
    else:
        size = float(pixel_size_mm)
        if not np.isfinite(size) or size <= 0:
            raise ValueError(f"pixel_size_mm must be positive, got {pixel_size_mm!r}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    is_labels = (np.issubdtype(arr.dtype, np.integer) and looks_like_labels(arr)
                 and len(np.unique(arr)) <= MAX_IMAGE_LABEL_VALUES)
    if is_labels:
        arr = as_label_array(arr)
    return Volume(data=np.ascontiguousarray(arr), spacing=(size,) * arr.ndim, is_labels=is_labels,
                  source=str(path), header={"format": "image", "pixel_size_mm": size},
                  warnings=tuple(warnings))
