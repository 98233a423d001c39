"""npe2 writers for a Labels layer in the formats other tools open with names and colours:
3D Slicer ``.seg.nrrd``, DICOM-SEG (``.dcm``) and RTSTRUCT (``.rtstruct.dcm``), the last two
for a layer on a DICOM series' grid.

The layer is rebuilt like the NIfTI writer does (:func:`~napari_attnseg._napari.writer.
meta_to_volume`); its names come from the ``features`` table or the plugin's metadata and its
colours from the layer's colormap (:func:`~napari_attnseg._napari.label_style.
label_metadata_from_layer`), so what the canvas shows is what Slicer shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .label_style import label_metadata_from_layer
from .writer import meta_to_volume


def _with_suffix(path: str, suffix: str) -> Path:
    p = Path(path)
    return p if p.name.lower().endswith(suffix) else p.with_name(p.name + suffix)


def _labels_volume(data: Any, meta: dict) -> tuple[Any, dict[str, Any]]:
    vol = meta_to_volume(data, meta, is_labels=True)
    provenance = {"layer_name": meta.get("name"), **label_metadata_from_layer(meta, data)}
    return vol, provenance


def write_seg_nrrd(path: str, data: Any, meta: dict) -> list[str]:
    """Save a Labels layer as a 3D Slicer segmentation with its names and colours."""
    from ..io.seg_nrrd import write_seg_nrrd as _write

    vol, provenance = _labels_volume(data, meta)
    return [str(_write(vol, _with_suffix(path, ".seg.nrrd"), provenance=provenance))]


def write_dicom_seg(path: str, data: Any, meta: dict) -> list[str]:
    """Save a Labels layer drawn on a DICOM series as a DICOM-SEG referencing that series."""
    from ..io.dicom_seg import write_dicom_seg as _write

    vol, provenance = _labels_volume(data, meta)
    return [str(_write(vol, _with_suffix(path, ".dcm"), provenance=provenance))]


def write_rtstruct(path: str, data: Any, meta: dict) -> list[str]:
    """Save a Labels layer drawn on a DICOM series as an RTSTRUCT (one named, coloured ROI per
    label) referencing that series."""
    from ..io.rtstruct import write_rtstruct as _write

    vol, provenance = _labels_volume(data, meta)
    return [str(_write(vol, _with_suffix(path, ".rtstruct.dcm"), provenance=provenance))]
