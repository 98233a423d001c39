"""The scribble widget's parts without a form: the snapshot a job gets, the jobs (core calls
only), the voxels painted by hand, the class probabilities of a snapshot, and the one undoable
write of corrected slices into a labels layer."""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._progress import Job, Progress

#: The scribbles layer's value for a background stroke (0 is napari's "nothing drawn").
BACKGROUND_VALUE = 255
FROM_LABELS = "(from the labels)"


@dataclass(frozen=True)
class Request:
    """A snapshot taken on the GUI thread: the result layer (object), the arrays of the job
    (3D: a 2D scan is one slice), the labels as they were (``base``: before the first stroke for
    a stroke's slice), the voxels to keep, the parameters, the target slices."""

    result: Any
    image: np.ndarray
    spacing: tuple[float, ...]
    probabilities: np.ndarray
    scribbles: np.ndarray
    base: np.ndarray
    keep: np.ndarray | None
    params: Any
    targets: tuple[int, ...]
    what: str


def volume3d(a: Any) -> np.ndarray:
    """``a`` as (z, y, x): a 2D array becomes one slice (a view)."""
    a = np.asarray(a)
    return a[None] if a.ndim == 2 else a


def to_core_scribbles(data: Any) -> np.ndarray:
    """Scribbles-layer values -> a core scribble array (class index, ``IGNORE`` elsewhere)."""
    from ..interactive import IGNORE

    d = np.asarray(data)
    out = d.astype(np.uint8, copy=True)
    out[d == 0] = IGNORE
    out[d == BACKGROUND_VALUE] = 0
    return out


def slice_job(req: Request) -> Job[dict]:
    """Correct the one target slice with its strokes; returns ``{z: labels}``."""
    from ..interactive import correct_slice

    yield Progress(0, 1, "scribbles", "Correcting the slice")
    z = req.targets[0]
    res = correct_slice(req.probabilities[:, z], req.image[z], req.scribbles[z], req.spacing[-2:],
                        req.params, base_labels=req.base[z],
                        keep=None if req.keep is None else req.keep[z])
    yield Progress(1, 1, "scribbles", f"Slice {z}: {res.n_changed} voxels differ from before "
                                      "its first stroke")
    return {z: res.labels}


def propagation_job(req: Request) -> Job[dict]:
    """Carry the strokes to the target slices; returns the changed slices."""
    from ..interactive import propagate_job

    res = yield from propagate_job(req.probabilities, req.image, req.scribbles, req.spacing,
                                   req.params, base_labels=req.base, targets=req.targets,
                                   keep=req.keep)
    return {z: res.labels[z] for z in res.changed}


def fill_job(req: Request) -> Job[dict]:
    """Interpolate between the target (key) slices; returns the filled slices."""
    from ..interactive import fill_between

    yield Progress(0, 1, "fill", "Interpolating between slices")
    out, filled = fill_between(req.base, req.targets, req.spacing, keep=req.keep)
    yield Progress(1, 1, "fill", f"Filled {len(filled)} slices")
    return {z: out[z] for z in filled}


def snapshot_probabilities(prob_layer: Any, base: np.ndarray, scribbles: np.ndarray,
                           confidence: float, slices: list[int] | None) -> np.ndarray:
    """(C, Z, H, W) class probabilities for a snapshot: the probability layer's (the class
    probabilities in its metadata, or a foreground map for two classes), else the labels
    ``base`` at ``confidence``. Without a probability layer only ``slices`` are filled when
    given (a stroke needs its own slice only)."""
    from ..interactive import IGNORE, probabilities_from_labels
    from .refine import class_probabilities

    shape3 = base.shape
    n = int(max(int(base.max(initial=0)) + 1, 2,
                int(scribbles[scribbles != IGNORE].max(initial=0)) + 1))
    if prob_layer is not None and not isinstance(prob_layer, str):
        spatial = tuple(np.shape(prob_layer.data))
        cp = class_probabilities(prob_layer, spatial)
        if cp is not None and cp.shape[0] >= n:
            return np.asarray(cp, np.float32).reshape((cp.shape[0],) + shape3)
        if cp is None and n <= 2 and int(np.prod(spatial)) == base.size:
            fg = np.asarray(prob_layer.data, np.float32).reshape(shape3)
            return np.stack([1.0 - fg, fg])
    if slices is None:
        return probabilities_from_labels(base, n, confidence)
    out = np.zeros((n,) + shape3, np.float32)
    for z in slices:
        out[:, z] = probabilities_from_labels(base[z], n, confidence)
    return out


class PaintedVoxels:
    """Which voxels of each watched labels layer were painted by hand (napari's brush, fill,
    polygon, ``data_setitem``), i.e. not by :meth:`write` of this object."""

    def __init__(self) -> None:
        self._masks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._watched: weakref.WeakSet = weakref.WeakSet()
        self._writing = False

    def watch(self, layer: Any) -> None:
        if layer in self._watched:
            return
        ref = weakref.ref(layer)
        layer.events.paint.connect(lambda event: self._on_paint(ref(), event))
        self._watched.add(layer)

    def _on_paint(self, layer: Any, event: Any) -> None:
        if layer is None or self._writing:
            return
        mask = self.mask(layer)
        for atom in getattr(event, "value", None) or []:
            key = getattr(atom, "slice_key", None)
            if key is not None:
                m = getattr(atom, "mask", None)
                mask[tuple(key)] |= True if m is None else np.asarray(m, bool)
            elif isinstance(atom, tuple) and len(atom) == 3:
                mask[tuple(atom[0])] = True

    def mask(self, layer: Any) -> np.ndarray:
        """The live painted mask of ``layer`` (layer-shaped bool; reset when the shape changes)."""
        mask = self._masks.get(layer)
        if mask is None or mask.shape != tuple(layer.data.shape):
            mask = np.zeros(layer.data.shape, bool)
            self._masks[layer] = mask
        return mask

    @contextlib.contextmanager
    def own_edit(self):
        """Edits made inside are not hand painting."""
        self._writing = True
        try:
            yield
        finally:
            self._writing = False

    def write(self, layer: Any, slices: dict, snapshot: np.ndarray | None,
              keep: np.ndarray | None) -> tuple[list[int], int]:
        """Write ``{z: labels}`` into ``layer`` as ONE undoable edit (napari's labels history:
        ``layer.undo()`` restores every slice). Slices that differ from ``snapshot`` (edited
        since) are skipped; ``keep`` voxels keep their value. Returns (written slices, voxels)."""
        data = volume3d(layer.data)
        zs, ys, xs, values, written = [], [], [], [], []
        for z, new in sorted(slices.items()):
            cur = data[z]
            if snapshot is not None and not np.array_equal(cur, snapshot[z]):
                continue
            new = np.asarray(new).astype(data.dtype, copy=True)
            if keep is not None:
                new[keep[z]] = cur[keep[z]]
            diff = np.nonzero(new != cur)
            if diff[0].size:
                zs.append(np.full(diff[0].size, z))
                ys.append(diff[0])
                xs.append(diff[1])
                values.append(new[diff])
                written.append(int(z))
        if written:
            idx = (np.concatenate(ys), np.concatenate(xs))
            if np.ndim(layer.data) == 3:
                idx = (np.concatenate(zs),) + idx
            with self.own_edit():
                layer.data_setitem(idx, np.concatenate(values))
        return written, int(sum(v.size for v in values))
