"""The ONE mapping between :class:`~napari_attnseg.volume.Volume` and napari layer kwargs.

Every reader, widget and writer goes through these functions, so that a derived layer always
sits exactly on its source (same scale, translate, affine) and carries the source header a
writer needs. Nothing here imports napari: layers are duck-typed (``.data``, ``.scale``,
``.translate``, ``.affine``, ``.metadata``, ``.name``), so the mapping is testable without Qt.

napari composes ``world = affine @ (scale * index + translate)``, and its 2D slicing cannot take
an affine that permutes axes (a scan stored PSR or LIP aborted in ``paintGL``). So a layer shows
the volume's axes in world order: ``layer.data = np.transpose(volume.data, perm)`` with
:func:`napari_attnseg.orientation.axis_permutation` (a numpy view: no copy, painting writes
through), and the layer's transform is the volume's with its columns in the same order. For an
identity direction we emit ``scale = spacing, translate = origin``; for any other (flips,
oblique) ``translate`` is zero and ``affine = [direction | origin]`` (a flip or a small rotation,
which napari slices). World coordinates are unchanged, and ``metadata["attnseg"]["storage_axes"]``
(layer axis ``i`` = stored axis ``storage_axes[i]``) lets :func:`layer_to_source_volume` (the
writers) give back the stored array order and affine exactly.

:func:`layer_to_volume` returns the volume in the layer's own axis order (what widgets compute
on: results go back on the same layer grid); :func:`layer_to_source_volume` the stored one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..orientation import axis_permutation, compose, inverse_permutation
from ..volume import DIRECTION_NOMINAL, SPACING_NOMINAL, Volume, volume_from_affine

logger = logging.getLogger(__name__)

#: Key under which the plugin keeps geometry, header and provenance in ``layer.metadata``.
META_KEY = "attnseg"
#: Header key of a layer-order volume: its axis ``i`` is the stored array's axis ``[i]``.
STORAGE_AXES = "storage_axes"


def layer_role(layer: Any) -> str:
    """The plugin's role of a layer (``metadata["attnseg"]["role"]``: prediction,
    probabilities, crf, errors, scribbles, ...); "" when it has none."""
    meta = (getattr(layer, "metadata", None) or {}).get(META_KEY)
    return str(meta.get("role", "")) if isinstance(meta, dict) else ""


def _storage_axes(volume: Volume) -> tuple[int, ...]:
    axes = (volume.header or {}).get(STORAGE_AXES)
    n = volume.ndim
    if axes is None or sorted(int(a) for a in axes) != list(range(n)):
        return tuple(range(n))
    return tuple(int(a) for a in axes)


def to_layer_order(volume: Volume) -> Volume:
    """``volume`` with its axes in world order (what a layer shows; a view of the same data).

    The stored order is kept in ``header["storage_axes"]`` (composed with any earlier one), so
    :func:`to_storage_order` undoes it exactly. Identity (the same object) when already in order.
    """
    perm = axis_permutation(volume.direction)
    if perm == tuple(range(volume.ndim)):
        return volume
    header = dict(volume.header)
    header[STORAGE_AXES] = list(compose(_storage_axes(volume), perm))
    return _permuted(volume, perm, header)


def _permuted(volume: Volume, perm: Sequence[int], header: dict) -> Volume:
    """``volume`` with its array axes permuted by ``perm`` (a view; spacing and direction
    columns follow, the world geometry is unchanged) and ``header``."""
    return Volume(
        data=np.transpose(volume.data, perm),
        spacing=tuple(volume.spacing[p] for p in perm), origin=volume.origin,
        direction=np.asarray(volume.direction)[:, list(perm)], modality=volume.modality,
        is_labels=volume.is_labels, source=volume.source, header=header,
        warnings=volume.warnings, metadata=volume.metadata,
    )


def to_storage_order(volume: Volume) -> Volume:
    """Inverse of :func:`to_layer_order`: the stored array order and affine (exact: only
    entries are permuted), ``header["storage_axes"]`` removed."""
    axes = _storage_axes(volume)
    header = {k: v for k, v in dict(volume.header).items() if k != STORAGE_AXES}
    if axes == tuple(range(volume.ndim)):
        if STORAGE_AXES not in (volume.header or {}):
            return volume
        inv = axes
    else:
        inv = inverse_permutation(axes)
    return _permuted(volume, inv, header)


def volume_to_layer_kwargs(volume: Volume, name: str | None = None,
                           provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Layer kwargs (``scale``, ``translate``, optional ``affine``, ``metadata``, ``name``) for
    ``volume.data`` in its own axis order. A volume read from a file may store its axes in a
    permuted order that napari cannot slice: :func:`layer_data_tuple` (which readers use)
    reorders it first; derived layers keep the order of the layer they come from."""
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
    header = dict(volume.header)
    storage_axes = header.pop(STORAGE_AXES, None)
    kwargs["metadata"] = {
        META_KEY: {
            "spacing": tuple(volume.spacing),
            "origin": tuple(volume.origin),
            "direction": np.array(volume.direction).tolist(),
            "modality": volume.modality,
            "source": volume.source,
            "header": header,
            "warnings": list(volume.warnings),
            "provenance": meta,
            "shape": tuple(volume.shape),
            STORAGE_AXES: list(storage_axes) if storage_axes is not None else list(range(n)),
            # world axes of a 3D layer (the display convention and orientation letters use it)
            "world_axes": ["S", "A", "R"] if n == 3 else None,
        }
    }
    if name is not None:
        kwargs["name"] = name
    return kwargs


def layer_data_tuple(volume: Volume, name: str | None = None,
                     provenance: Mapping[str, Any] | None = None,
                     layer_type: str | None = None) -> tuple[np.ndarray, dict[str, Any], str]:
    """A napari LayerDataTuple for ``volume`` (Labels for label volumes, else Image), its axes
    in world order (:func:`to_layer_order`: a transposed view when stored permuted)."""
    kind = layer_type or ("labels" if volume.is_labels else "image")
    volume = to_layer_order(volume)
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
        axes = meta.get(STORAGE_AXES)
        if axes is not None and list(axes) != list(range(arr.ndim)):
            header[STORAGE_AXES] = [int(a) for a in axes]
        modality = meta.get("modality", "")
        source = meta.get("source")
        provenance = dict(meta.get("provenance", {}))
        warnings = tuple(meta.get("warnings", ()))
    else:
        header, modality, source, provenance, warnings = {}, "", None, {}, ()
        header[DIRECTION_NOMINAL] = True  # another reader's affine need not say where the patient lies
        # another reader's layer, or a bare array: napari's default scale 1 is not a voxel size
        lin = np.asarray(affine, dtype=float)[:-1, :-1]
        if np.allclose(np.linalg.norm(lin, axis=0), 1.0):
            header[SPACING_NOMINAL] = True
    return volume_from_affine(
        arr, affine, modality=modality, is_labels=bool(is_labels), source=source,
        header=header, metadata=provenance, warnings=warnings,
    )


def layer_to_source_volume(layer: Any, data: np.ndarray | None = None) -> Volume:
    """The layer as the stored volume: array order and affine of the file it came from (the
    writers' input), see :func:`to_storage_order`."""
    return to_storage_order(layer_to_volume(layer, data))


def derived_layer_kwargs(source_layer: Any, name: str,
                         provenance: Mapping[str, Any] | None = None,
                         shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Kwargs for a new layer on ``source_layer``'s grid (its geometry and header copied)."""
    vol = layer_to_volume(source_layer)
    if shape is not None and tuple(shape) != vol.shape:
        raise ValueError(f"derived layer shape {shape} differs from the source {vol.shape}")
    kwargs = volume_to_layer_kwargs(vol, name=name, provenance=provenance)
    # patient space only when the source is in it (not a (t, y, x) cine or another reader's)
    source_meta = (getattr(source_layer, "metadata", None) or {}).get(META_KEY) or {}
    kwargs["metadata"][META_KEY]["world_axes"] = source_meta.get("world_axes")
    return kwargs


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
