"""The ONE mapping between :class:`~napari_attnseg.volume.Volume` and napari layer kwargs.

Every reader, widget and writer goes through these functions, so that a derived layer always
sits exactly on its source (same scale, translate, affine) and carries the source header a
writer needs. Nothing here imports napari: layers are duck-typed (``.data``, ``.scale``,
``.translate``, ``.affine``, ``.metadata``, ``.name``), so the mapping is testable without Qt.

napari composes ``world = affine @ (scale * index + translate)``. For an identity direction we
emit ``scale = spacing, translate = origin`` (what users expect to see in the layer controls);
for any other direction ``translate`` is zero and ``affine = [direction | origin]``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..volume import Volume, volume_from_affine

logger = logging.getLogger(__name__)

#: Key under which the plugin keeps geometry, header and provenance in ``layer.metadata``.
META_KEY = "attnseg"


def volume_to_layer_kwargs(volume: Volume, name: str | None = None,
                           provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Layer kwargs (``scale``, ``translate``, optional ``affine``, ``metadata``, ``name``)."""
    n = volume.ndim
    kwargs: dict[str, Any] = {"scale": tuple(volume.spacing)}
    if volume.is_identity_direction:
        kwargs["translate"] = tuple(volume.origin)
    else:
        kwargs["translate"] = (0.0,) * n
        aff = np.eye(n + 1)
        aff[:n, :n] = volume.direction
        aff[:n, n] = volume.origin
        kwargs["affine"] = aff
    meta = dict(volume.metadata)
    if provenance:
        meta.update(provenance)
    kwargs["metadata"] = {
        META_KEY: {
            "spacing": tuple(volume.spacing),
            "origin": tuple(volume.origin),
            "direction": np.array(volume.direction).tolist(),
            "modality": volume.modality,
            "source": volume.source,
            "header": dict(volume.header),
            "warnings": list(volume.warnings),
            "provenance": meta,
            "shape": tuple(volume.shape),
        }
    }
    if name is not None:
        kwargs["name"] = name
    return kwargs


def layer_data_tuple(volume: Volume, name: str | None = None,
                     provenance: Mapping[str, Any] | None = None,
                     layer_type: str | None = None) -> tuple[np.ndarray, dict[str, Any], str]:
    """A napari LayerDataTuple for ``volume`` (Labels for label volumes, else Image)."""
    kind = layer_type or ("labels" if volume.is_labels else "image")
    kwargs = volume_to_layer_kwargs(volume, name, provenance)
    if kind == "labels":  # known names/colours: a direct colormap and a features table
        from .label_style import label_layer_style

        kwargs.update(label_layer_style({**dict(volume.metadata), **dict(provenance or {})},
                                        volume.data))
    return (volume.data, kwargs, kind)


def _linear_part(value: Any, n: int, what: str) -> np.ndarray:
    """A layer's ``rotate`` or ``shear`` as an n x n matrix (identity when absent)."""
    if value is None:
        return np.eye(n)
    arr = np.asarray(value, dtype=float)
    if arr.shape == (n, n):
        return arr
    if what == "shear" and arr.size == n * (n - 1) // 2:  # napari: upper-triangular coefficients
        mat = np.eye(n)
        mat[np.triu_indices(n, 1)] = arr.ravel()
        return mat
    if what == "rotate" and arr.size == 1 and n == 2:  # degrees
        t = np.deg2rad(float(arr.ravel()[0]))
        return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    raise ValueError(f"cannot interpret the layer's {what} {value!r} for a {n}D layer")


def _layer_affine_matrix(layer: Any) -> np.ndarray:
    """index -> world matrix from a layer's scale, translate, rotate, shear and affine
    (napari: ``world = affine @ (rotate @ shear @ diag(scale) @ index + translate)``)."""
    scale = np.asarray(layer.scale, dtype=float)
    translate = np.asarray(layer.translate, dtype=float)
    n = scale.size
    st = np.eye(n + 1)
    st[:n, :n] = (_linear_part(getattr(layer, "rotate", None), n, "rotate")
                  @ _linear_part(getattr(layer, "shear", None), n, "shear") @ np.diag(scale))
    st[:n, n] = translate
    aff = getattr(layer, "affine", None)
    if aff is None:
        return st
    mat = np.asarray(getattr(aff, "affine_matrix", aff), dtype=float)
    return mat @ st


def layer_to_volume(layer: Any, data: np.ndarray | None = None) -> Volume:
    """Rebuild a Volume from a layer: the plugin's metadata when present and matching, else the
    layer's own scale/translate/affine (so layers from other readers work too)."""
    arr = np.asarray(layer.data if data is None else data)
    meta = (getattr(layer, "metadata", None) or {}).get(META_KEY)
    # napari layers from other plugins may have more than 3 dims (channels/time): refuse clearly
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"Layer '{getattr(layer, 'name', '?')}' has {arr.ndim} dimensions {arr.shape}; "
            "a 2D (y, x) or 3D (z, y, x) layer is needed"
        )
    is_labels = type(layer).__name__ == "Labels"
    affine = _layer_affine_matrix(layer)
    if meta is not None and tuple(meta.get("shape", ())) == arr.shape:
        header = dict(meta.get("header", {}))
        modality = meta.get("modality", "")
        source = meta.get("source")
        provenance = dict(meta.get("provenance", {}))
        warnings = tuple(meta.get("warnings", ()))
    else:
        header, modality, source, provenance, warnings = {}, "", None, {}, ()
    return volume_from_affine(
        arr, affine, modality=modality, is_labels=bool(is_labels), source=source,
        header=header, metadata=provenance, warnings=warnings,
    )


def derived_layer_kwargs(source_layer: Any, name: str,
                         provenance: Mapping[str, Any] | None = None,
                         shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Kwargs for a new layer on ``source_layer``'s grid (its geometry and header copied)."""
    vol = layer_to_volume(source_layer)
    if shape is not None and tuple(shape) != vol.shape:
        raise ValueError(f"derived layer shape {shape} differs from the source {vol.shape}")
    return volume_to_layer_kwargs(vol, name=name, provenance=provenance)


def _names_from(value: Any) -> dict[int, str]:
    """``{index: name}`` from a dict (int or str keys) or a list of names; {} otherwise."""
    out: dict[int, str] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            try:
                out[int(k)] = str(v)
            except (TypeError, ValueError):
                continue
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        out = dict(enumerate(value))
    return out


def layer_label_names(layer: Any) -> dict[int, str]:
    """Label names of a layer (labels, or a probability image): its
    ``metadata["attnseg"]["label_names"]``, else the provenance's ``label_names`` (sample data,
    predictions), else the ``label_names`` of the model folder named in the provenance (its small
    config.json); ``{}`` when none is known."""
    meta = (getattr(layer, "metadata", None) or {}).get(META_KEY)
    if not isinstance(meta, dict):
        return {}
    prov = meta.get("provenance") if isinstance(meta.get("provenance"), dict) else {}
    for value in (meta.get("label_names"), prov.get("label_names")):
        names = _names_from(value)
        if names:
            return names
    folder = prov.get("model_folder")
    if folder:
        try:
            config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
            return _names_from(config.get("label_names") if isinstance(config, dict) else None)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            logger.debug("no label names from %s: %s", folder, exc)
    return {}
