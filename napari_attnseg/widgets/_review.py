"""Which slices of a labels layer has the user corrected? (the "reviewed" set used for training)

A :class:`ReviewTracker` watches one napari Labels layer:

* every paint / fill / polygon edit (napari's ``layer.events.paint``, emitted once per undoable
  stroke) marks the edited slices along ``axis`` (0 = z) as reviewed and sets
  ``layer.metadata["attnseg"]["edited"] = True`` — the segment widget checks that flag so it
  never overwrites corrected labels without consent;
* :meth:`ReviewTracker.mark` / :meth:`unmark` / :meth:`mark_current` change the set by hand
  (the fine-tune widget's button, and the ``Shift-R`` shortcut bound on the layer);
* the set is persisted as a sorted list of ints in ``layer.metadata["attnseg"]["reviewed"]``,
  so it survives closing the widget and is read back when a tracker is attached again.

A 2D (y, x) layer counts as a single slice (index 0). Nothing here runs in a worker thread.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .._napari.layers import META_KEY

logger = logging.getLogger(__name__)

#: Default shortcut (free in napari 0.9: Ctrl-R is reset view, R is a Shapes mode).
MARK_SHORTCUT = "Shift-R"

_TRACKERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _slice_range(sl: Any, n: int) -> range:
    if isinstance(sl, slice):
        return range(*sl.indices(n))
    return range(int(sl), int(sl) + 1)


def edited_slices(atom: Any, axis: int, n: int) -> set[int]:
    """Slices along ``axis`` touched by one napari Labels history atom.

    Atoms are either ``_MaskedPaintAtom(slice_key, mask, old_values, new_value)`` (paint, fill,
    polygon) or the legacy ``(indices, old_values, new_values)`` from ``data_setitem``.
    """
    slice_key = getattr(atom, "slice_key", None)
    if slice_key is not None:
        if len(slice_key) <= axis:
            return set()
        rng = _slice_range(slice_key[axis], n)
        mask = getattr(atom, "mask", None)
        if mask is not None and np.ndim(mask) == len(slice_key) and np.shape(mask)[axis] == len(rng):
            others = tuple(d for d in range(np.ndim(mask)) if d != axis)
            hit = np.asarray(mask).any(axis=others) if others else np.asarray(mask)
            return {rng[i] for i in np.flatnonzero(hit)}
        return set(rng)
    if isinstance(atom, tuple) and len(atom) == 3:
        indices = atom[0]
        if isinstance(indices, tuple) and len(indices) > axis:
            return {int(i) for i in np.unique(np.asarray(indices[axis]))}
    logger.debug("unrecognised labels history atom %r; no slice marked", type(atom))
    return set()


class ReviewTracker:
    """The reviewed-slice set of one Labels layer; see the module docstring.

    Use :meth:`for_layer` to get the tracker already attached to a layer (one per layer).
    """

    def __init__(self, layer: Any, viewer: Any = None, axis: int = 0,
                 shortcut: str | None = MARK_SHORTCUT, mark_on_paint: bool = True):
        ndim = np.ndim(layer.data) if not hasattr(layer.data, "ndim") else layer.data.ndim
        if ndim not in (2, 3):
            raise ValueError(f"Labels layer '{layer.name}' has {ndim} dimensions; "
                             "reviewed slices need a 2D or 3D layer")
        if ndim == 3 and not 0 <= axis < 3:
            raise ValueError(f"slice axis {axis} is out of range for a 3D layer")
        self._layer_ref = weakref.ref(layer)
        self.viewer = viewer
        self.axis = axis if ndim == 3 else None
        self.n_slices = int(layer.data.shape[axis]) if ndim == 3 else 1
        self.mark_on_paint = mark_on_paint
        self._callbacks: list[Callable[[ReviewTracker], Any]] = []
        meta = self._meta()
        stored = meta.get("reviewed", [])
        self._reviewed = {int(i) for i in stored if 0 <= int(i) < self.n_slices}
        meta["reviewed"] = sorted(self._reviewed)
        meta.setdefault("edited", False)
        layer.events.paint.connect(self._on_paint)
        self.shortcut = shortcut
        if shortcut:
            layer.bind_key(shortcut, self._on_shortcut, overwrite=True)
        _TRACKERS[layer] = self

    @classmethod
    def for_layer(cls, layer: Any, viewer: Any = None, **kwargs: Any) -> ReviewTracker:
        """The tracker attached to ``layer``, creating it on first use."""
        tracker = _TRACKERS.get(layer)
        if tracker is None:
            tracker = cls(layer, viewer, **kwargs)
        elif viewer is not None and tracker.viewer is None:
            tracker.viewer = viewer
        return tracker

    # ------------------------------------------------------------------ state
    @property
    def layer(self) -> Any:
        layer = self._layer_ref()
        if layer is None:
            raise RuntimeError("the labels layer of this review tracker no longer exists")
        return layer

    def _meta(self) -> dict:
        layer = self._layer_ref()
        md = layer.metadata
        sub = md.get(META_KEY)
        if not isinstance(sub, dict):
            sub = {} if sub is None else dict(sub)
            md[META_KEY] = sub
        return sub

    @property
    def edited(self) -> bool:
        """True once the user painted on the layer (set by edits, never cleared here)."""
        return bool(self._meta().get("edited", False))

    def reviewed_slices(self) -> list[int]:
        return sorted(self._reviewed)

    def reviewed_mask(self) -> np.ndarray:
        """(n_slices,) bool flags, True for reviewed slices."""
        flags = np.zeros(self.n_slices, dtype=bool)
        flags[list(self._reviewed)] = True
        return flags

    def connect(self, callback: Callable[[ReviewTracker], Any]) -> None:
        """Call ``callback(tracker)`` after every change of the reviewed set."""
        self._callbacks.append(callback)

    def disconnect(self, callback: Callable[[ReviewTracker], Any]) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    # ------------------------------------------------------------------ changes
    def _check(self, index: int) -> int:
        i = int(index)
        if not 0 <= i < self.n_slices:
            raise ValueError(f"slice {index} is outside 0..{self.n_slices - 1} of layer "
                             f"'{self.layer.name}'")
        return i

    def _update(self, add: Iterable[int] = (), remove: Iterable[int] = ()) -> None:
        before = set(self._reviewed)
        self._reviewed |= {self._check(i) for i in add}
        self._reviewed -= {self._check(i) for i in remove}
        self._meta()["reviewed"] = sorted(self._reviewed)
        if self._reviewed != before:
            for cb in list(self._callbacks):
                cb(self)

    def mark(self, *indices: int) -> None:
        self._update(add=indices)

    def unmark(self, *indices: int) -> None:
        self._update(remove=indices)

    def clear(self) -> None:
        self._update(remove=list(self._reviewed))

    def current_slice(self) -> int:
        """The slice index the viewer shows (0 for 2D layers or without a viewer/3D view)."""
        if self.axis is None:
            return 0
        layer = self.layer
        if self.viewer is not None:
            point = self.viewer.dims.point
            data_pt = layer.world_to_data(point[-layer.ndim:])
            idx = int(np.round(np.asarray(data_pt)[self.axis]))
        else:
            idx = int(np.round(layer._data_slice.point[self.axis]))  # no viewer: layer's own slice
        return int(np.clip(idx, 0, self.n_slices - 1))

    def mark_current(self) -> int:
        """Mark the shown slice reviewed; returns its index."""
        i = self.current_slice()
        self.mark(i)
        return i

    # ------------------------------------------------------------------ napari hooks
    def _on_paint(self, event: Any) -> None:
        self._meta()["edited"] = True
        if not self.mark_on_paint:
            return
        touched: set[int] = set()
        if self.axis is None:
            touched = {0}
        else:
            for atom in getattr(event, "value", None) or []:
                touched |= edited_slices(atom, self.axis, self.n_slices)
        if touched:
            self._update(add=touched)

    def _on_shortcut(self, layer: Any = None) -> None:
        i = self.mark_current()
        logger.info("slice %d of '%s' marked reviewed", i, self.layer.name)

    def detach(self) -> None:
        """Stop listening to the layer (the metadata stays)."""
        layer = self._layer_ref()
        if layer is None:
            return
        try:
            layer.events.paint.disconnect(self._on_paint)
        except (TypeError, ValueError, RuntimeError):
            logger.debug("paint callback was already disconnected")
        if self.shortcut:
            layer.bind_key(self.shortcut, None)
        if _TRACKERS.get(layer) is self:
            del _TRACKERS[layer]
