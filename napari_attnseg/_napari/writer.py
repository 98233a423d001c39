"""npe2 single-layer writers: a Labels or Image layer -> NIfTI with its source geometry.

napari passes ``(path, data, meta)`` where ``meta`` is the layer state (``scale``,
``translate``, ``rotate``, ``shear``, ``affine``, ``metadata``, ``name``). The volume is rebuilt
through :func:`napari_attnseg._napari.layers.layer_to_source_volume` - the plugin's metadata
(source header, modality, provenance, the stored axis order) when present, else the layer's own
transform - and saved by :func:`napari_attnseg.io.write_volume` (atomic, verified, JSON sidecar
beside it). A scan stored with permuted axes (PSR, LIP, ...) is shown in world axis order; the
writer transposes back, so the saved mask has the source's array order, header and affine.
Labels the user corrected (painted on or reviewed) are saved with a provenance that says so -
the reviewed slices, the edited voxels, the model's provenance nested under ``original``
(:mod:`.corrected`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from .corrected import corrected_provenance, nifti_voxel_axis
from .layers import META_KEY, layer_to_source_volume


def meta_to_volume(data: Any, meta: Mapping[str, Any], *, is_labels: bool):
    """Rebuild the stored :class:`~napari_attnseg.volume.Volume` (the source file's array order
    and affine) from napari writer arguments; a corrected labels layer gets the provenance of
    :func:`.corrected.corrected_provenance` as its metadata."""
    arr = np.asarray(data)
    n = arr.ndim
    scale = np.asarray(meta.get("scale", np.ones(n)), dtype=float)
    translate = np.asarray(meta.get("translate", np.zeros(n)), dtype=float)
    if scale.size != n or translate.size != n:
        raise ValueError(f"layer '{meta.get('name', '?')}' has scale {scale.tolist()} / translate "
                         f"{translate.tolist()} that do not fit its {n}D data")
    fake = SimpleNamespace(data=arr, scale=scale, translate=translate,
                           rotate=meta.get("rotate"), shear=meta.get("shear"),
                           affine=meta.get("affine"), metadata=dict(meta.get("metadata") or {}),
                           name=meta.get("name", "layer"))
    vol = layer_to_source_volume(fake)
    corrected = corrected_provenance(vol.metadata, fake.metadata.get(META_KEY), arr.shape) \
        if is_labels else None
    if corrected is not None:
        return replace(vol, is_labels=True, metadata=corrected)
    return replace(vol, is_labels=is_labels)


def _target(path: str) -> Path:
    p = Path(path)
    low = p.name.lower()
    if not (low.endswith(".nii") or low.endswith(".nii.gz")):
        p = p.with_name(p.name + ".nii.gz")
    return p


def _write(path: str, data: Any, meta: Mapping[str, Any], is_labels: bool) -> list[str]:
    from .. import io

    vol = meta_to_volume(data, meta, is_labels=is_labels)
    provenance = {"layer_name": meta.get("name")}
    plugin_meta = (meta.get("metadata") or {}).get(META_KEY)
    if not isinstance(plugin_meta, dict) or "shape" not in plugin_meta:  # (review keys only)
        provenance["geometry_from"] = "layer scale/translate/affine (no attnseg metadata)"
    correction = vol.metadata.get("correction")
    if isinstance(correction, dict) and correction.get("slice_axis") is not None:
        vol = replace(vol, metadata={**vol.metadata, "correction": {
            **correction,
            "nifti_voxel_axis": nifti_voxel_axis(correction["slice_axis"], vol.ndim)}})
    if is_labels:  # names (features / metadata) and colours (the layer's colormap)
        from .label_style import label_metadata_from_layer

        provenance.update(label_metadata_from_layer(meta, data))
    out = io.write_volume(vol, _target(path), provenance=provenance)
    return [str(out)]


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """Save a Labels layer as NIfTI (smallest unsigned integer type) with its source affine."""
    return _write(path, data, meta, is_labels=True)


def write_image(path: str, data: Any, meta: dict) -> list[str]:
    """Save an Image layer as NIfTI with its source affine."""
    return _write(path, data, meta, is_labels=False)
