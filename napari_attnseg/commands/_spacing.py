"""``--spacing`` for the commands that read 2D images (predict, refine, finetune): the pixel size
of PNG / JPEG / TIFF files, which carry none.

Without it the reader takes the pixel size from a ``filename,pixel_size_mm`` CSV beside the
images (HC18's ``pixel_size_and_hc.csv``), else assumes 1 mm with a warning. NIfTI / DICOM /
NRRD files keep their own spacing: a different ``--spacing`` for them is refused rather than
silently changing the geometry the output is written with.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

SPACING_HELP = ("pixel size in mm of 2D images (PNG, JPEG, TIFF): one value (square pixels) or "
                "one per array axis (y x). Default: a filename,pixel_size_mm CSV beside the "
                "images (as HC18's), else 1 mm with a warning. Files with their own spacing "
                "(NIfTI, DICOM, NRRD) keep it")


def add_spacing_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spacing", type=float, nargs="+", metavar="MM", default=None,
                        help=SPACING_HELP)


def apply_spacing(volume: Any, spacing: Any, path: str | Path = "") -> Any:
    """``volume`` with ``spacing`` (mm; one value or one per axis) as its pixel size; unchanged
    for ``None``. ValueError for a bad value or a file that has a different spacing of its own."""
    if not spacing:
        return volume
    values = tuple(float(s) for s in spacing)
    bad = [v for v in values if not (np.isfinite(v) and v > 0)]
    if bad:
        raise ValueError(f"--spacing must be positive millimetres, got {list(spacing)}")
    if len(values) == 1:
        values = values * volume.ndim
    if len(values) != volume.ndim:
        axes = "y x" if volume.ndim == 2 else "z y x"
        raise ValueError(f"--spacing needs 1 or {volume.ndim} values ({axes}) for {path} "
                         f"(shape {volume.shape}), got {len(values)}")
    header = dict(volume.header)
    if header.get("format") != "image":
        if np.allclose(values, volume.spacing, rtol=1e-4):
            return volume
        raise ValueError(f"--spacing is for 2D images without a pixel size; {path} is a "
                         f"{header.get('format', 'scan')} file with its own spacing "
                         f"{tuple(round(s, 6) for s in volume.spacing)} mm")
    header.update(pixel_size_mm=values[-1], pixel_size_source="given")
    warnings = tuple(w for w in volume.warnings if "no pixel size" not in w)
    return replace(volume, spacing=values, header=header, warnings=warnings)


def read_with_spacing(path: str | Path, spacing: Any = None, **kwargs: Any) -> Any:
    """:func:`napari_attnseg.io.read_volume` then :func:`apply_spacing`."""
    from ..io import read_volume

    return apply_spacing(read_volume(path, **kwargs), spacing, path)
