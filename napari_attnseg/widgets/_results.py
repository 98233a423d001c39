"""What the GUI does with a job's results: add or update layers in place, and prepare napari's
layer machinery off the GUI thread. Used by :mod:`._worker` (which re-exports both helpers)."""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import time
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: Modules napari and vispy import on first use when the first Labels / Image layer is added:
#: pandas (layer features), skimage.color (the labels colormap), scipy.linalg (transforms) and
#: the vispy layer/overlay visuals. Importing them on the GUI thread stalls it ~0.35 s once.
_LAYER_MODULES = (
    "pandas", "skimage.color", "scipy.linalg", "napari._vispy.layers.labels",
    "napari._vispy.layers.image", "napari._vispy.overlays.labels_polygon",
    "vispy.visuals.line.dash_atlas",
)


@functools.cache
def warm_layer_machinery() -> None:
    """Do, once per process and off the GUI thread, what napari otherwise does on the GUI
    thread when a worker's first result layer is added: import the modules above and fill
    vispy's dash-pattern cache (every Labels layer's polygon overlay builds a ``DashAtlas``;
    its 13 patterns cost ~0.1 s the first time and are cached by vispy). Pure Python/numpy, no
    OpenGL; safe in a worker thread. Failures are logged and ignored: this only saves time."""
    t0 = time.perf_counter()
    try:
        for name in _LAYER_MODULES:
            importlib.import_module(name)
        from vispy.visuals.line.dash_atlas import DashAtlas

        DashAtlas()
    except Exception as exc:  # an optional speed-up; napari does the same work later anyway
        logger.debug("warming napari's layer machinery failed: %s", exc)
    logger.debug("napari layer machinery warmed in %.0f ms", (time.perf_counter() - t0) * 1e3)


@contextlib.contextmanager
def inactive_additions(viewer: Any):
    """Layers added inside the block do not become the active layer and the active one stays
    (an overlay must not take the brush). napari activates every inserted layer and switches its
    layer controls twice when the caller then restores the selection (~0.1-0.2 s of GUI-thread
    CPU per layer): its list's ``_activate_on_insert`` flag is cleared for the block; without that
    flag (another napari), the previous active layer is restored afterwards instead."""
    layers = viewer.layers
    active = layers.selection.active
    flag = getattr(layers, "_activate_on_insert", None)
    if isinstance(flag, bool):
        layers._activate_on_insert = False
    try:
        yield
    finally:
        if isinstance(flag, bool):
            layers._activate_on_insert = flag
        if active is not None and active in layers and layers.selection.active is not active:
            layers.selection.active = active


def _same_geometry(layer: Any, key: str, value: Any) -> bool:
    """Whether ``layer.<key>`` (scale / translate / affine) already equals ``value``."""
    try:
        current = layer.affine.affine_matrix if key == "affine" else getattr(layer, key)
        if key == "affine" and hasattr(value, "affine_matrix"):
            value = value.affine_matrix
        cur = np.asarray(current, dtype=float)
        new = np.asarray(value, dtype=float)
    except (TypeError, ValueError, AttributeError):
        return False
    return cur.shape == new.shape and bool(np.allclose(cur, new, rtol=0.0, atol=1e-12))


def upsert_layer(viewer: Any, data: Any, kwargs: dict, layer_type: str) -> Any:
    """Update the layer named ``kwargs['name']`` in place when it exists with the same type and
    shape (results re-run in place), else add a new one. Returns the layer."""
    name = kwargs["name"]
    existing = viewer.layers[name] if name in viewer.layers else None
    if existing is not None and type(existing).__name__.lower() == layer_type.lower() and \
            tuple(existing.data.shape) == tuple(data.shape):
        existing.data = data
        for key in ("scale", "translate", "affine"):
            if key in kwargs and not _same_geometry(existing, key, kwargs[key]):
                setattr(existing, key, kwargs[key])  # ~50 ms each in napari: only when changed
        for key, value in kwargs.get("metadata", {}).items():
            old = existing.metadata.get(key)
            if isinstance(old, dict) and isinstance(value, dict):
                merged = dict(old)  # keep what others added (e.g. reviewed slices)
                merged.update(value)
                existing.metadata[key] = merged
            else:
                existing.metadata[key] = value
        return existing
    if existing is not None:
        viewer.layers.remove(existing)
    add = getattr(viewer, f"add_{layer_type.lower()}")
    return add(data, **kwargs)
