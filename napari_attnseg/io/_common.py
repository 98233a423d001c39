"""Helpers shared by the readers: path checks, label detection, non-finite voxels, squeezing."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import ReadError

log = logging.getLogger(__name__)


def check_file(path: Path) -> None:
    """Raise ReadError for a missing path, or a file that is empty or not a regular file (a
    FIFO would block the reader forever); folders pass (the DICOM reader walks them)."""
    from .validate import require_regular_file

    if not path.exists():
        raise ReadError(path, "file or folder does not exist")
    if not path.is_dir():
        require_regular_file(path)


def looks_like_labels(data: np.ndarray, hint: bool | None = None) -> bool:
    """The label-map policy of :func:`napari_attnseg.io.validate.looks_like_labels`."""
    from .validate import looks_like_labels as policy

    return policy(data, hint)


def smallest_uint(data: np.ndarray) -> np.dtype:
    """The smallest unsigned integer dtype holding ``data`` (non-negative integers)."""
    hi = int(data.max()) if data.size else 0
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if hi <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise ValueError(f"label value {hi} does not fit in uint64")


def as_label_array(data: np.ndarray) -> np.ndarray:
    """Integer-valued labels in the smallest unsigned dtype (signed if negative values exist)."""
    if data.size and np.issubdtype(data.dtype, np.integer) and int(data.min()) < 0:
        return data
    return data.astype(smallest_uint(data), copy=False)


def replace_nonfinite(data: np.ndarray, path: Path) -> tuple[np.ndarray, list[str]]:
    """Replace NaN/Inf voxels by the smallest finite value (0 if none) and say how many."""
    if not np.issubdtype(data.dtype, np.floating):
        return data, []
    bad = ~np.isfinite(data)
    n_bad = int(np.count_nonzero(bad))
    if n_bad == 0:
        return data, []
    finite = data[~bad]
    fill = float(finite.min()) if finite.size else 0.0
    data = np.array(data, copy=True)
    data[bad] = fill
    msg = (f"{n_bad} of {data.size} voxels in {path.name} were NaN or infinite; "
           f"replaced by {fill:g} (the smallest finite value)")
    log.warning(msg)
    return data, [msg]


def squeeze_trailing(shape: tuple[int, ...], keep: int = 2) -> tuple[int, ...]:
    """Drop trailing singleton dimensions while more than ``keep`` remain."""
    shape = tuple(int(s) for s in shape)
    while len(shape) > keep and shape[-1] == 1:
        shape = shape[:-1]
    return shape
