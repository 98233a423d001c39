"""Which writer a result's file name asks for, beyond NIfTI (the default in :mod:`.writers`).

``*.seg.nrrd`` -> :func:`napari_attnseg.io.seg_nrrd.write_seg_nrrd` (3D Slicer, names and
colours); ``*.rtstruct.dcm`` -> :func:`napari_attnseg.io.rtstruct.write_rtstruct` (RTSTRUCT
contours referencing the source series); any other ``*.dcm`` ->
:func:`napari_attnseg.io.dicom_seg.write_dicom_seg` (DICOM-SEG referencing the source series).
Each writer takes ``(volume, path, *, reference=None, provenance=None)`` and returns the path
written. Nothing heavy is imported until a writer runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

Writer = Callable[..., Path]


def _seg_nrrd(volume: Any, path: Any, **kwargs: Any) -> Path:
    from .seg_nrrd import write_seg_nrrd

    return write_seg_nrrd(volume, path, **kwargs)


def _dicom_seg(volume: Any, path: Any, **kwargs: Any) -> Path:
    from .dicom_seg import write_dicom_seg

    return write_dicom_seg(volume, path, **kwargs)


def _rtstruct(volume: Any, path: Any, **kwargs: Any) -> Path:
    from .rtstruct import write_rtstruct

    return write_rtstruct(volume, path, **kwargs)


def special_writer(path: str | Path) -> Writer | None:
    """The writer for ``path``'s name, or None for NIfTI (and anything the NIfTI writer
    rejects with its own message)."""
    low = Path(str(path)).name.lower()
    if low.endswith(".seg.nrrd"):
        return _seg_nrrd
    if low.endswith(".rtstruct.dcm"):
        return _rtstruct
    if low.endswith(".dcm"):
        return _dicom_seg
    return None
