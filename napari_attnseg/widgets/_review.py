"""Which slices of a labels layer has the user corrected? (the "reviewed" set used for training)

A :class:`ReviewTracker` watches one napari Labels layer:

* every paint / fill / polygon edit (napari's ``layer.events.paint``, emitted once per undoable
  stroke) marks the edited slices along ``axis`` (0 = z) as reviewed and sets
  ``layer.metadata["attnseg"]["edited"] = True`` — the segment widget checks that flag so it
  never overwrites corrected labels without consent;
* undoing that edit (``layer.undo()``, Ctrl-Z) un-marks the slices it marked, redoing it marks
  them again: the tracker follows napari's undo/redo history (:mod:`._review_history`) on the
  layer's ``set_data`` events and whenever the set is read;
* :meth:`ReviewTracker.mark` / :meth:`unmark` / :meth:`mark_current` / :meth:`unmark_current`
  change the set by hand (the fine-tune widget's buttons, and the ``Shift-R`` shortcut bound
  on the layer). A slice unmarked by hand stays unmarked when the edit that marked it is undone
  and redone;
* the set is persisted as a sorted list of ints in ``layer.metadata["attnseg"]["reviewed"]``,
  so it survives closing the widget and is read back when a tracker is attached again; with it
  ``reviewed_axis`` (the layer axis the indices run along, None for 2D), ``edited_voxels``
  (voxels differing from the layer as first tracked - the model's prediction for a result
  layer; None when edits came before tracking) and ``edit_baseline`` (what that count compares
  with). The writers put these in the sidecar of saved corrected labels
  (:mod:`napari_attnseg._napari.corrected`).

A 2D (y, x) layer counts as a single slice (index 0). Nothing here runs in a worker thread.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .._napari.layers import META_KEY
from ._review_history import (APPLIED, GONE, UNDONE, EditBaseline, Step, history_signature,
                              step_states)

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
        meta["reviewed_axis"] = self.axis
        self._steps: list[Step] = []
        self._signature = history_signature(layer)
        # edits before tracking began cannot be counted (their pre-edit content is unknown)
        self._baseline = EditBaseline(self.axis, known=not meta["edited"])
        self._publish_edits()
        layer.events.paint.connect(self._on_paint)
        layer.events.set_data.connect(self._on_refresh)
        layer.events.data.connect(self._on_data_replaced)
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
        self.sync()
        return sorted(self._reviewed)

    def reviewed_mask(self) -> np.ndarray:
        """(n_slices,) bool flags, True for reviewed slices."""
        self.sync()
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

    @property
    def edited_voxels(self) -> int | None:
        """Voxels that differ from the layer as first tracked (None: edits before tracking)."""
        self.sync()
        return self._baseline.edited_voxels()

    def mark(self, *indices: int) -> None:
        self.sync()
        self._update(add=indices)

    def unmark(self, *indices: int) -> None:
        """Unmark by hand: undoing and redoing the edit that marked them does not re-mark."""
        self.sync()
        gone = {self._check(i) for i in indices}
        for step in self._steps:
            step.added -= gone
        self._update(remove=gone)

    def clear(self) -> None:
        self.unmark(*self._reviewed)

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

    def unmark_current(self) -> int:
        """Remove the shown slice from the reviewed set; returns its index."""
        i = self.current_slice()
        self.unmark(i)
        return i

    # ------------------------------------------------------------------ undo / redo
    def sync(self) -> None:
        """Follow napari's undo/redo since the last look: an undone edit un-marks the slices it
        marked, a redone one marks them again (napari emits no event for either)."""
        layer = self._layer_ref()
        if layer is None or not self._steps:
            return
        signature = history_signature(layer)
        if signature == self._signature:
            return
        self._signature = signature
        states = step_states(layer, self._steps)
        add: set[int] = set()
        remove: set[int] = set()
        recount: set[int] = set()
        for step, state in zip(self._steps, states):
            if state == UNDONE and step.applied:
                step.applied = False
                remove |= step.added
                recount |= step.touched
            elif state == APPLIED and not step.applied:
                step.applied = True
                step.added = set(step.added) - self._reviewed  # a mark by hand stays
                add |= step.added
                recount |= step.touched
        self._steps = [s for s, st in zip(self._steps, states) if st != GONE]
        if recount:
            self._baseline.recount(layer.data, recount)
            self._publish_edits()
        if add or remove:
            self._update(add=add - remove, remove=remove - add)

    def _publish_edits(self) -> None:
        meta = self._meta()
        meta["edited_voxels"] = self._baseline.edited_voxels()
        meta["edit_baseline"] = self._baseline_name() if self._baseline.known else None

    def _baseline_name(self) -> str:
        meta = self._meta()
        prov = meta.get("provenance") if isinstance(meta.get("provenance"), dict) else {}
        if prov.get("model_id"):
            return f"the model's prediction ({prov['model_id']})"
        if prov.get("kind") or meta.get("role"):
            return f"the layer as created ({prov.get('kind') or meta.get('role')})"
        return "the layer's content when review tracking began"

    # ------------------------------------------------------------------ napari hooks
    def _on_paint(self, event: Any) -> None:
        self.sync()  # undone edits whose redo this edit discarded are final now
        self._meta()["edited"] = True
        item = list(getattr(event, "value", None) or [])
        touched: set[int] = set()
        if self.axis is None:
            touched = {0}
        else:
            for atom in item:
                touched |= edited_slices(atom, self.axis, self.n_slices)
        layer = self.layer
        if item and touched:
            self._baseline.record(layer.data, item, touched)
            added = touched - self._reviewed if self.mark_on_paint else set()
            self._steps.append(Step(key=item[0], touched=frozenset(touched), added=set(added)))
        self._signature = history_signature(layer)
        self._publish_edits()
        if touched and self.mark_on_paint:
            self._update(add=touched)

    def _on_refresh(self, event: Any = None) -> None:
        self.sync()

    def _on_data_replaced(self, event: Any = None) -> None:
        """New data (a re-run written in place): it is the baseline edits count against."""
        self._baseline.reset()
        self._publish_edits()

    def _on_shortcut(self, layer: Any = None) -> None:
        i = self.mark_current()
        logger.info("slice %d of '%s' marked reviewed", i, self.layer.name)

    def detach(self) -> None:
        """Stop listening to the layer (the metadata stays)."""
        layer = self._layer_ref()
        if layer is None:
            return
        for emitter, callback in ((layer.events.paint, self._on_paint),
                                  (layer.events.set_data, self._on_refresh),
                                  (layer.events.data, self._on_data_replaced)):
            try:
                emitter.disconnect(callback)
            except (TypeError, ValueError, RuntimeError):
                logger.debug("review callback was already disconnected")
        if self.shortcut:
            layer.bind_key(self.shortcut, None)
        if _TRACKERS.get(layer) is self:
            del _TRACKERS[layer]
