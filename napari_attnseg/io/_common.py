"""Helpers shared by the readers: path checks, label detection, non-finite voxels, squeezing."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import ReadError

log = logging.getLogger(__name__)

#: Label volumes have at most this many distinct values (background included).
MAX_LABEL_VALUES = 256
#: Float arrays whose values are all integers count as labels only with at most this many values.
MAX_FLOAT_LABEL_VALUES = 32


def check_file(path: Path) -> None:
    """Raise ReadError for a missing or empty file (cheap checks before any parsing)."""
    if not path.exists():
        raise ReadError(path, "file or folder does not exist")
    if path.is_file() and path.stat().st_size == 0:
        raise ReadError(path, "file is empty (0 bytes)")


def count_unique(data: np.ndarray, limit: int) -> int | None:
    """Number of distinct values, or None when it exceeds ``limit`` (stops early on big ranges)."""
    if data.size == 0:
        return 0
    if np.issubdtype(data.dtype, np.integer) or data.dtype == bool:
        lo, hi = int(data.min()), int(data.max())
        if hi - lo > 10_000_000:
            return None
        n = int(np.count_nonzero(np.bincount((data.ravel().astype(np.int64) - lo))))
        return n if n <= limit else None
    # float: a sample first, so that a 16M-voxel image exits quickly
    flat = data.ravel()
    sample = flat[:: max(1, flat.size // 100_000)]
    if len(np.unique(sample)) > limit:
        return None
    n = len(np.unique(flat))
    return n if n <= limit else None


def looks_like_labels(data: np.ndarray) -> bool:
    """True for non-negative integer-valued arrays with few distinct values.

    Integer arrays: fewer than :data:`MAX_LABEL_VALUES` values. Float arrays: every value an
    integer and at most :data:`MAX_FLOAT_LABEL_VALUES` values (masks saved as float).
    """
    if data.size == 0 or data.dtype == bool:
        return data.dtype == bool
    if np.issubdtype(data.dtype, np.integer):
        if int(data.min()) < 0:
            return False
        n = count_unique(data, MAX_LABEL_VALUES - 1)
        return n is not None
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)) or float(data.min()) < 0:
            return False
        n = count_unique(data, MAX_FLOAT_LABEL_VALUES)
        if n is None:
            return False
        return bool(np.all(np.mod(data, 1) == 0))
    return False


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
