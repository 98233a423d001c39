"""What the sidecar of saved corrected labels says about the user's corrections.

A result layer the user painted on or reviewed (``metadata["attnseg"]``: ``edited``, or a
non-empty ``reviewed`` list, kept by :class:`napari_attnseg.widgets._review.ReviewTracker`)
is saved with a provenance of its own instead of the model's::

    "provenance": {
      "kind": "attnseg corrected labels",
      "edited_by_user": true,
      "correction": {
        "reviewed_slices": [3, 5],     # indices along slice_axis of the saved array
        "slice_axis": 0,               # axis of the (z, y, x) array napari-attnseg reads back
        "n_slices": 40,
        "edited_voxels": 812,          # voxels differing from `compared_with`; null: unknown
        "compared_with": "the model's prediction (ct@1:...)"
      },
      "original": {"kind": "attnseg prediction", "model_id": ..., ...},
      "label_names": ..., "label_colors": ..., "model_name": ...   # kept for readers/writers
    }

The writers add ``layer_name`` / ``label_names`` / ``label_colors`` as before, so the readers of
names and colours (:func:`napari_attnseg.io.labeltable.read_label_info`) are unchanged. The
NIfTI writer also names the NIfTI voxel axis (i, j, k) of the slices (``nifti_voxel_axis``).
Nothing here imports napari or Qt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

CORRECTED_KIND = "attnseg corrected labels"

#: keys of the original provenance also kept at the top level: label names/colours (read back
#: by the readers) and the model name (DICOM-SEG / RTSTRUCT writers name the series from it)
_KEPT = ("label_names", "label_colors", "model_name")


def corrected_provenance(original: Mapping[str, Any], plugin_meta: Mapping[str, Any] | None,
                         shape: Sequence[int]) -> dict[str, Any] | None:
    """The sidecar provenance of a corrected labels layer, or None when the layer was neither
    edited nor reviewed. ``original``: the layer's provenance (the prediction's);
    ``plugin_meta``: its ``metadata["attnseg"]``; ``shape``: the layer's data shape."""
    meta = plugin_meta if isinstance(plugin_meta, Mapping) else {}
    reviewed = sorted({int(i) for i in meta.get("reviewed") or ()})
    edited = bool(meta.get("edited"))
    if not reviewed and not edited:
        return None
    ndim = len(shape)
    layer_axis = meta.get("reviewed_axis", 0) if ndim == 3 else None
    axes = list(meta.get("storage_axes") or range(ndim))
    if layer_axis is None:
        slice_axis, n_slices = None, 1
    else:  # layer axis i is the stored array's axis storage_axes[i] (a permutation, no flip)
        slice_axis = int(axes[int(layer_axis)]) if len(axes) == ndim else int(layer_axis)
        n_slices = int(shape[int(layer_axis)])
    voxels = meta.get("edited_voxels")
    correction = {
        "reviewed_slices": reviewed,
        "slice_axis": slice_axis,
        "n_slices": n_slices,
        "edited_voxels": None if voxels is None else int(voxels),
        "compared_with": meta.get("edit_baseline") if voxels is not None else None,
    }
    if voxels is None and edited:
        correction["edited_voxels_unknown"] = ("edits were made before review tracking began; "
                                               "the original content is not known")
    out: dict[str, Any] = {"kind": CORRECTED_KIND, "edited_by_user": edited,
                           "correction": correction, "original": dict(original)}
    for key in _KEPT:
        if key in original:
            out[key] = original[key]
    return out


def nifti_voxel_axis(slice_axis: int | None, ndim: int) -> str | None:
    """The NIfTI voxel axis (i, j, k) of a (z, y, x) array axis (the writer stores ``data.T``)."""
    if slice_axis is None:
        return None
    return "ijk"[ndim - 1 - int(slice_axis)]
