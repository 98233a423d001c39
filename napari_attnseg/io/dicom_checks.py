"""Input checks of a DICOM series before its pixels are decoded (part of the input gate of
:mod:`napari_attnseg.io.validate`): slices without a position, rescale values, declared sizes.

A slice without ImagePositionPatient must never decide the geometry of the series: stacking by
InstanceNumber from the first instance mirrors a series whose numbers run against the table.
Its position is interpolated from the other slices when their positions follow InstanceNumber
evenly, else the series is refused with a message saying which files to fix.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ReadError
from .validate import check_memory


def _normal(ori: np.ndarray) -> np.ndarray:
    n = np.cross(ori[:3], ori[3:])
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else np.array([0.0, 0.0, 1.0])


def place_missing_positions(frames: list[Any], where: Path) -> tuple[list[Any], list[str]]:
    """Frames with every position known: the missing ones interpolated from the others by
    InstanceNumber (a linear fit that must be exact to 1 % of a slice), else ReadError. A series
    where no slice has a position is returned as it is (the reader stacks it by InstanceNumber,
    with a warning)."""
    missing = [f for f in frames if f.position is None or f.orientation is None]
    if not missing or len(missing) == len(frames):
        return frames, []
    known = [f for f in frames if f.position is not None and f.orientation is not None]
    n = len(frames)
    names = ", ".join(sorted({f.path.name for f in missing})[:3])
    more = "" if len(missing) <= 3 else f" and {len(missing) - 3} more"
    head = (f"{len(missing)} of {n} slices have no ImagePositionPatient/ImageOrientationPatient "
            f"({names}{more})")
    ori = known[0].orientation
    if any(not np.allclose(f.orientation, ori, atol=1e-4) for f in known):
        raise ReadError(where, f"{head} and the others have different orientations; remove or "
                               "fix those files")
    inst = np.array([f.instance for f in known], dtype=float)
    pos = np.array([f.position for f in known], dtype=float)
    miss_inst = [f.instance for f in missing]
    all_inst = [f.instance for f in frames]
    problem = None
    if len(known) < 2:
        problem = "only one slice has a position, so the slice direction is unknown"
    elif len(set(all_inst)) != len(all_inst) or not any(all_inst):
        problem = "their InstanceNumbers are missing or repeated"
    if problem is None:
        design = np.stack([np.ones_like(inst), inst], axis=1)
        coef, *_ = np.linalg.lstsq(design, pos, rcond=None)
        step = float(np.linalg.norm(coef[1]))
        resid = float(np.max(np.linalg.norm(design @ coef - pos, axis=1)))
        if step == 0 or resid > 0.01 * step + 1e-3:
            problem = ("the other slices' positions do not follow their InstanceNumbers evenly, "
                       "so where the unplaced slices go is unknown")
    if problem is not None:
        raise ReadError(where, f"{head}; {problem}. Stacking by InstanceNumber could mirror the "
                               "series: fix or remove those files")
    placed = []
    for f in frames:
        if f.position is None or f.orientation is None:
            f = replace(f, position=coef[0] + coef[1] * f.instance, orientation=ori)
        placed.append(f)
    return placed, [f"{head}; their positions were interpolated from the other {len(known)} "
                    f"slices by InstanceNumber (instances {sorted(miss_inst)[:5]})"]


def _raw_float(value: Any) -> float:
    """The number a DICOM value holds, NaN when it holds none."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def check_rescale(frames: list[Any]) -> None:
    """A RescaleSlope of 0 (every voxel the same value) or a non-numeric / infinite slope or
    intercept is a ReadError naming the file."""
    seen: set[Path] = set()
    for f in frames:
        if f.slope == 0 or not math.isfinite(f.slope) or not math.isfinite(f.intercept):
            raise ReadError(f.path, f"RescaleSlope {f.slope:g} / RescaleIntercept "
                                    f"{f.intercept:g} would make every voxel the same value; "
                                    "the header is broken")
        if f.path in seen:
            continue
        seen.add(f.path)
        for tag in ("RescaleSlope", "RescaleIntercept"):
            raw = f.ds.get(tag)
            if raw is not None and str(raw).strip() != "":
                v = _raw_float(raw)
                if not math.isfinite(v) or (tag == "RescaleSlope" and v == 0):
                    raise ReadError(f.path, f"{tag} is {str(raw)!r}, not a usable number; the "
                                            "header is broken")


def check_declared_size(frames: list[Any], where: Path) -> None:
    """Rows x Columns x slices (as float32) must fit in memory, before any decoding."""
    bad = [f for f in frames if f.rows < 1 or f.cols < 1]
    if bad:
        raise ReadError(bad[0].path, f"declares an image of {bad[0].rows} x {bad[0].cols} "
                                     "pixels; the header is broken")
    rows = max(f.rows for f in frames)
    cols = max(f.cols for f in frames)
    check_memory(where, (len(frames), rows, cols), 4, "the DICOM headers declare")
