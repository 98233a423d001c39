"""Segmentation files that open as several label layers in napari.

A 3D Slicer ``.seg.nrrd`` with overlapping segments keeps them in several layers, and a
DICOM-SEG may hold overlapping segments: :func:`read_label_layers` returns one label
:class:`~napari_attnseg.volume.Volume` per layer for those (one for the usual non-overlapping
file), each with its segments' names and colours (an RTSTRUCT: one volume on its series' grid,
the later ROI where ROIs overlap); ``None`` for any other file, which
:func:`napari_attnseg.io.read_volume` reads as one volume.
"""

from __future__ import annotations

from pathlib import Path

from ..volume import Volume


def read_label_layers(path: str | Path) -> list[Volume] | None:
    """The label layers of a segmentation file, or None when ``path`` is not one."""
    p = Path(path)
    if not p.is_file():
        return None
    low = p.name.lower()
    if low.endswith(".nrrd"):
        from .seg_nrrd import is_seg_nrrd, read_seg_nrrd_layers

        return read_seg_nrrd_layers(p) if is_seg_nrrd(p) else None
    from .dicom_seg import is_dicom_seg, read_dicom_seg_layers

    if is_dicom_seg(p):
        return read_dicom_seg_layers(p)
    from .rtstruct import is_rtstruct, read_rtstruct

    return [read_rtstruct(p)] if is_rtstruct(p) else None
