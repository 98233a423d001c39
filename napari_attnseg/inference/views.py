"""A model's further views (:mod:`napari_attnseg.model.views`) at inference: the volume cut
along each view's axes, each view's probabilities mapped back and averaged with the model's."""

from __future__ import annotations

from typing import Any, Generator

import numpy as np

from .._progress import Progress
from ..volume import Volume
from . import preprocess as pp


def view_volume(model: Any, volume: Volume, axes: tuple[int, ...]) -> Volume:
    """``volume`` as a view with ``axes`` cuts it: in the model's slice frame, permuted. Its
    geometry is the identity (a view has no orientation: it cuts the array as given); its
    spacing, permuted, is the scan's (a nominal one stays nominal: no resize from it)."""
    reo = pp.slice_reorientation(model.spec, volume)
    data = np.transpose(pp.to_canonical(np.asarray(volume.data), reo), axes)
    spacing = pp.reoriented_spacing(volume.spacing, reo)
    from ..volume import SPACING_NOMINAL, spacing_is_nominal

    return Volume(data=data, spacing=tuple(spacing[a] for a in axes), modality=volume.modality,
                  source=volume.source, header={SPACING_NOMINAL: True} if spacing_is_nominal(volume) else {})


def from_view(model: Any, volume: Volume, axes: tuple[int, ...], probs: np.ndarray) -> np.ndarray:
    """A view's probabilities (C, *view axes) on ``volume``'s grid (C, z, y, x)."""
    inv = tuple(int(i) + 1 for i in np.argsort(axes))
    frame = np.transpose(probs, (0,) + inv)
    reo = pp.slice_reorientation(model.spec, volume)
    return np.ascontiguousarray(pp.from_canonical(frame, reo, channels_first=True))


def averaged(model: Any, volume: Volume, probs: np.ndarray, config: Any,
             run: Any) -> Generator[Progress, None, np.ndarray]:
    """``probs`` (the model's, on ``volume``'s grid) averaged with its views' (``run``: the
    predictor's job function, called per view with ``check_input=False``)."""
    views = tuple(getattr(model, "views", ()) or ())
    if not views or volume.ndim != 3:
        return probs
    # in place where the arrays are this job's own float32 (the predictor's restored
    # probabilities, each view's): no volume-sized temporaries
    own = probs.dtype == np.float32 and probs.flags.writeable and probs.flags.c_contiguous
    out = probs if own else np.array(probs, dtype=np.float32)
    out *= np.float32(1.0 - sum(w for _, _, w in views))
    for n, (view, axes, weight) in enumerate(views, 1):
        yield Progress(0, 0, "views", f"view {n} of {len(views)}: {view.spec.name}")
        res = yield from run(view, view_volume(model, volume, axes), config, check_input=False)
        p = np.array(from_view(model, volume, axes, res.probabilities), dtype=np.float32, copy=None)
        p *= np.float32(weight)
        out += p
    return out
