"""The review tracker's view of napari's Labels undo history, and what the edits changed.

napari 0.9 keeps a Labels layer's edits in ``layer._undo_history`` / ``layer._redo_history``
(deques of history *items*, each a list of atoms; ``undo()`` moves an item to the redo deque as
``list(reversed(item))``, so its atoms keep their identity) and emits ``events.paint`` only
when an item is committed - ``undo()`` and ``redo()`` emit no event of their own, only the
``set_data`` of the refresh that follows (none at all while the layer is hidden).

* :class:`Step` is one committed edit as the tracker saw it: the slices it touched and the
  slices it marked reviewed (un-marked again while it is undone).
* :func:`step_states` tells, from the two deques, whether each step is applied (in the undo
  deque), undone (in the redo deque) or gone (dropped from napari's bounded history, or its redo
  discarded by a new edit: final either way).
* :class:`EditBaseline` keeps the content of every slice an edit touched as it was before the
  first edit (rebuilt from the atoms' old values, so nothing is copied until the user edits)
  and counts the voxels that differ from it (after an edit from its atoms, after undo / redo
  from the data): the edited voxels versus the layer as first
  tracked (the model's prediction for a segmentation result).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

APPLIED, UNDONE, GONE = "applied", "undone", "gone"


@dataclass(eq=False)
class Step:
    """One committed history item: ``key`` is its first atom (kept alive, so its ``id`` cannot
    be reused while the step exists); ``added``: the slices this step marked reviewed."""

    key: Any
    touched: frozenset[int]
    added: set[int] = field(default_factory=set)
    applied: bool = True


def _ends(history: Any) -> set[int]:
    """ids of the first and last atom of every item (an undone item is stored reversed)."""
    out: set[int] = set()
    for item in history or ():
        if item:
            out.add(id(item[0]))
            out.add(id(item[-1]))
    return out


def history_signature(layer: Any) -> tuple:
    """Changes whenever an edit, undo or redo changes napari's history (cheap to compare)."""
    undo = getattr(layer, "_undo_history", None) or ()
    redo = getattr(layer, "_redo_history", None) or ()
    return (len(undo), len(redo), id(undo[-1]) if undo else None, id(redo[-1]) if redo else None)


def step_states(layer: Any, steps: list[Step]) -> list[str]:
    """APPLIED / UNDONE / GONE for each step, read from the layer's undo and redo deques."""
    if not hasattr(layer, "_undo_history"):  # another napari: no history to follow
        return [APPLIED if s.applied else UNDONE for s in steps]
    undo, redo = _ends(layer._undo_history), _ends(getattr(layer, "_redo_history", ()))
    return [APPLIED if id(s.key) in undo else UNDONE if id(s.key) in redo else GONE
            for s in steps]


# --------------------------------------------------------------------------- pre-edit content
def _block_key(axis: int | None, z: int, ndim: int) -> tuple:
    if axis is None:
        return (slice(None),) * ndim
    key = [slice(None)] * ndim
    key[axis] = slice(z, z + 1)
    return tuple(key)


def _replay_masked(block: np.ndarray, atom: Any, axis: int | None, z: int, n: int,
                   undoing: bool) -> None:
    key = list(atom.slice_key)
    mask = None if atom.mask is None else np.asarray(atom.mask)
    if undoing:  # old values: those under the mask (1D), or the whole box without a mask
        values = np.asarray(atom.old_values)
        if mask is not None:
            full = np.zeros(mask.shape, dtype=block.dtype)
            full[mask] = values
            values = full
    else:
        shape = mask.shape if mask is not None else np.shape(atom.old_values)  # (the box)
        values = np.full(shape, atom.new_value, dtype=block.dtype)
    if axis is not None:
        sl = key[axis]
        rng = range(*sl.indices(n)) if isinstance(sl, slice) else range(int(sl), int(sl) + 1)
        if z not in rng:
            return
        i = rng.index(z)
        key[axis] = slice(0, 1)
        values = np.take(values, [i], axis=axis)
        mask = None if mask is None else np.take(mask, [i], axis=axis)
    region = block[tuple(key)]
    if mask is None:
        region[...] = values
    else:
        region[mask] = values[mask]


def _replay_legacy(block: np.ndarray, atom: tuple, axis: int | None, z: int,
                   undoing: bool) -> None:
    indices, old_values, new_values = atom
    idx = np.broadcast_arrays(*(np.asarray(i) for i in indices))
    values = np.broadcast_to(np.asarray(old_values if undoing else new_values), idx[0].shape)
    if axis is None:
        block[tuple(idx)] = values
        return
    sel = idx[axis] == z
    sub = tuple(np.zeros(int(sel.sum()), int) if d == axis else ix[sel] for d, ix in enumerate(idx))
    block[sub] = values[sel]


def _replay(block: np.ndarray, item: list, axis: int | None, z: int, n: int,
            undoing: bool) -> None:
    for atom in (reversed(item) if undoing else item):
        if hasattr(atom, "slice_key"):
            _replay_masked(block, atom, axis, z, n, undoing)
        elif isinstance(atom, tuple) and len(atom) == 3:
            _replay_legacy(block, atom, axis, z, undoing)
        else:
            raise TypeError(f"unrecognised labels history atom {type(atom).__name__}")


def edit_blocks(data: Any, item: list, axis: int | None, z: int) -> tuple[np.ndarray, np.ndarray]:
    """Slice ``z`` along ``axis`` (a 1-thick block; the whole array when ``axis`` is None)
    before and after the history ``item``. Both are rebuilt from the atoms, so they are right
    whether or not napari has written the item yet (outside a brush stroke it emits ``paint``
    before writing; after a stroke, once written)."""
    ndim = np.ndim(data)
    n = int(np.shape(data)[axis]) if axis is not None else 1
    before = np.array(data[_block_key(axis, z, ndim)], copy=True)
    _replay(before, item, axis, z, n, undoing=True)
    after = before.copy()
    _replay(after, item, axis, z, n, undoing=False)
    return before, after


class EditBaseline:
    """The pre-edit content of every edited slice and the voxels differing from it now.

    ``known`` is False when edits happened before tracking began (the baseline is then not the
    layer's first content and no count is given)."""

    def __init__(self, axis: int | None, known: bool):
        self.axis = axis
        self.known = known
        self._original: dict[int, np.ndarray] = {}
        self._counts: dict[int, int] = {}

    def record(self, data: Any, item: list, touched: set[int]) -> None:
        """Keep the pre-``item`` content of the slices it touched for the first time and count
        the touched slices as they are after it."""
        if not self.known:
            return
        try:
            for z in sorted(touched):
                before, after = edit_blocks(data, item, self.axis, z)
                orig = self._original.setdefault(z, before)
                self._counts[z] = int(np.count_nonzero(after != orig))
        except (TypeError, ValueError, IndexError) as exc:  # an atom this code cannot replay
            logger.debug("edited voxels not counted any more: %s", exc)
            self.known = False

    def recount(self, data: Any, slices: set[int]) -> None:
        if not self.known:
            return
        ndim = np.ndim(data)
        for z in slices:
            orig = self._original.get(z)
            if orig is not None:
                self._counts[z] = int(np.count_nonzero(
                    np.asarray(data[_block_key(self.axis, z, ndim)]) != orig))

    def reset(self) -> None:
        """The layer's data was replaced: the new content is the baseline."""
        self._original.clear()
        self._counts.clear()
        self.known = True

    def edited_voxels(self) -> int | None:
        return sum(self._counts.values()) if self.known else None
