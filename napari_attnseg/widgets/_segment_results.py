"""The Segment widget's result arrays: a slice preview merged into the full-size result (in the
worker, as new arrays), the foreground probability shown as a layer, the labels layer's names
and colours (the model's, see :mod:`._result_style`), and the small layer helpers the widget
uses when it writes results. No Qt at module level; numpy only."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._napari.layers import META_KEY
from ._result_style import (apply_style, model_label_colors,  # noqa: F401 (re-exported)
                            result_style, upsert_styled_labels)

logger = logging.getLogger(__name__)


def foreground_probability(probabilities: np.ndarray) -> np.ndarray:
    """(C, *spatial) class probabilities -> (*spatial) foreground probability: class 1 for two
    classes, else 1 - p(background) (the probability of any structure)."""
    p = np.asarray(probabilities, dtype=np.float32)
    if p.shape[0] == 2:
        return p[1]
    return np.clip(1.0 - p[0], 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class _Merged:
    """Full-size result arrays with a preview slice merged in."""

    name: str
    shape: tuple
    labels: np.ndarray
    probabilities: np.ndarray  #: foreground probability, ``shape``
    classes: np.ndarray | None  #: (C, *shape) for more than two classes


@dataclass(frozen=True)
class _PreviewBase:
    """The current result arrays a slice preview is merged into (``None``: not there yet)."""

    name: str
    shape: tuple
    labels: np.ndarray | None
    probabilities: np.ndarray | None
    classes: np.ndarray | None

    def merge(self, pred: Any, index: int) -> _Merged:
        """New full-size arrays: copies of the current ones (zeros where there are none, or
        where the shape or dtype changed) with slice ``index`` replaced by ``pred``'s."""
        part = np.asarray(pred.probabilities, dtype=np.float32)

        def into(old: np.ndarray | None, new: np.ndarray, shape: tuple, dtype: Any) -> np.ndarray:
            full = old.copy() if old is not None and old.shape == shape and old.dtype == dtype \
                else np.zeros(shape, dtype=dtype)
            full[(slice(None),) * (len(shape) - 3) + (index,)] = new
            return full

        labels = into(self.labels, pred.labels, self.shape, pred.labels.dtype)
        probs = into(self.probabilities, foreground_probability(part), self.shape, np.float32)
        classes = None
        if part.shape[0] > 2:
            classes = into(self.classes, part, (part.shape[0],) + self.shape, np.float32)
        return _Merged(self.name, self.shape, labels, probs, classes)


def preview_base(viewer: Any, name: str, shape: tuple) -> _PreviewBase | None:
    """What a slice preview of a 3D image is merged into: the current result arrays of layer
    ``name`` and its probabilities (references, read on the GUI thread; the merge copies them
    in the worker, so nothing shared is written). ``None`` for 2D images."""
    if len(shape) != 3:
        return None
    prob_name = f"{name} probabilities"

    def current(layer_name: str) -> np.ndarray | None:
        if layer_name not in viewer.layers:
            return None
        data = viewer.layers[layer_name].data
        return data if isinstance(data, np.ndarray) and data.shape == shape else None

    classes = None
    if prob_name in viewer.layers:
        meta = viewer.layers[prob_name].metadata.get(META_KEY) or {}
        classes = meta.get("class_probabilities")
    return _PreviewBase(name, shape, current(name), current(prob_name),
                        classes if isinstance(classes, np.ndarray) else None)


def target_name(viewer: Any, image_name: str) -> str:
    """``"<image> [attnseg]"``, or ``"... (new)"`` when that layer was edited by the user."""
    name = f"{image_name} [attnseg]"
    if name in viewer.layers:
        meta = viewer.layers[name].metadata.get(META_KEY) or {}
        if meta.get("edited"):
            return f"{name} (new)"
    return name


def unchanged_dropped(viewer: Any, kwargs: dict) -> dict:
    """Drop scale/translate/affine that an existing layer already has (setting them costs
    ~50 ms each in napari, on the GUI thread, even when unchanged)."""
    name = kwargs["name"]
    if name not in viewer.layers:
        return kwargs
    layer = viewer.layers[name]
    kw = dict(kwargs)
    for key in ("scale", "translate"):
        cur = np.asarray(getattr(layer, key), dtype=float)
        new = np.asarray(kw[key], dtype=float)
        if cur.shape == new.shape and np.allclose(cur, new):
            del kw[key]
    n = np.asarray(layer.scale).size
    new_aff = np.asarray(kw.get("affine", np.eye(n + 1)), dtype=float)
    cur_aff = np.asarray(layer.affine.affine_matrix, dtype=float)
    if cur_aff.shape == new_aff.shape and np.allclose(cur_aff, new_aff):
        kw.pop("affine", None)
    elif "affine" not in kw:
        kw["affine"] = new_aff  # the source lost its rotation: reset ours too
    return kw


def watch_edits(layer: Any) -> None:
    """Mark ``metadata["attnseg"]["edited"]`` on the first brush stroke (once per layer)."""
    if getattr(layer, "_attnseg_watch", False):
        return

    def mark(*_: Any) -> None:
        layer.metadata.setdefault(META_KEY, {})["edited"] = True

    layer.events.paint.connect(mark)
    layer._attnseg_watch = True
    if np.ndim(layer.data) in (2, 3):  # reviewed slices, undo and edited voxels from stroke one
        from ._review import ReviewTracker
        ReviewTracker.for_layer(layer)


#: The result layers' ``metadata["attnseg"]["role"]``: other widgets find them by role, not name.
PREDICTION_ROLE = "prediction"
PROBABILITIES_ROLE = "probabilities"
#: Pause between adding two new result layers (ms): the viewer redraws in between.
LAYER_GAP_MS = 40


def write_result(viewer: Any, req: Any, pred: Any, merged: dict | None, defer: bool,
                 on_deferred: Any = None) -> tuple[Any, float | None]:
    """Write the labels and probability layers of a run (GUI thread); returns (labels layer,
    the preview's seconds or None). For a slice preview ``merged["arrays"]`` holds the
    full-size arrays the worker built (:meth:`_PreviewBase.merge`). With ``defer`` (a threaded
    run) a new probability layer is added :data:`LAYER_GAP_MS` after the labels, and
    ``on_deferred(+1 / -1)`` counts it; otherwise both exist when this returns."""
    from qtpy.QtCore import QTimer

    from .._napari.layers import derived_layer_kwargs, layer_to_volume
    from ._worker import upsert_layer

    if req.image_name not in viewer.layers:
        raise ValueError(f"the image layer '{req.image_name}' was removed during the run")
    source = viewer.layers[req.image_name]
    name = target_name(viewer, req.image_name)
    prob_name = f"{name} probabilities"
    shape = tuple(source.data.shape)
    seconds = None
    if req.slice_index is not None and len(shape) == 3:
        merged = merged or {}
        seconds = merged.get("seconds", pred.seconds)
        arrays = merged.get("arrays")
        if arrays is None or arrays.name != name or arrays.shape != shape:
            # the target changed during the run (painted on, reshaped): merge here
            base = preview_base(viewer, name, tuple(layer_to_volume(source).shape))
            arrays = base.merge(pred, req.slice_index)
        labels, probs, classes = arrays.labels, arrays.probabilities, arrays.classes
    else:
        labels, classes = pred.labels, np.asarray(pred.probabilities, dtype=np.float32)
        probs = (merged or {}).get("foreground")
        if probs is None:
            probs = foreground_probability(classes)
        classes = classes if classes.shape[0] > 2 else None
    kw = derived_layer_kwargs(source, name, provenance=pred.provenance)
    kw["metadata"][META_KEY]["role"] = PREDICTION_ROLE
    style = (merged or {}).get("style")
    if style is None:
        style = result_style(pred.provenance)
    layer = upsert_styled_labels(viewer, labels, unchanged_dropped(viewer, kw), style)
    watch_edits(layer)
    pkw = derived_layer_kwargs(source, prob_name, provenance=pred.provenance)
    # None for two classes, so a stale array of an earlier multi-class run is dropped
    pkw["metadata"][META_KEY]["class_probabilities"] = classes
    pkw["metadata"][META_KEY]["role"] = PROBABILITIES_ROLE
    pkw.update(colormap="magma", contrast_limits=(0.0, 1.0), blending="additive", visible=False)
    if not defer or prob_name in viewer.layers:
        upsert_layer(viewer, probs, unchanged_dropped(viewer, pkw), "image")
        return layer, seconds
    # Creating a napari layer costs ~100 ms on the GUI thread (and its first draw as much
    # again): the new probability layer (hidden) is added a moment after the labels, so the
    # viewer draws the labels and handles input in between instead of freezing for both.
    # Deferred adds run in order: a later result still wins.
    if on_deferred is not None:
        on_deferred(+1)

    def add_probabilities() -> None:
        if on_deferred is not None:
            on_deferred(-1)
        if req.image_name in viewer.layers:
            upsert_layer(viewer, probs, unchanged_dropped(viewer, pkw), "image")

    QTimer.singleShot(LAYER_GAP_MS, add_probabilities)
    return layer, seconds
