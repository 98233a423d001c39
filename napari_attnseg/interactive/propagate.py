"""Carry the strokes of scribbled slices to other slices ("apply to neighbouring slices" /
"apply to volume").

A target slice with strokes of its own is corrected with them (hard constraints, as
:func:`~napari_attnseg.interactive.scribbles.correct_slice`). Any other gets the evidence of the
scribbled slices within ``max_distance`` slices, weighted ``decay ** distance``, from the stroke
pixels whose (smoothed, normalized) intensity there is within ``similarity`` of the scribbled
slice's, so a stroke is not carried onto another structure that moved under it; no hard
constraints; the same fusion with the model's probabilities and the same dense CRF.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._progress import Job, Progress, drain
from ..crf.dense_crf import normalize_intensity
from .scribbles import IGNORE, ScribbleParams, _check_scribbles, _clamp_map, _correct, _cost, _evidence

__all__ = ["PropagationResult", "propagate", "propagate_job"]


@dataclass(frozen=True)
class PropagationResult:
    """``labels``: the full corrected volume (a new array); ``changed``: slice indices whose
    labels changed; ``skipped``: targets no stroke reached; ``seconds`` of compute."""

    labels: np.ndarray
    changed: tuple[int, ...]
    skipped: tuple[int, ...]
    seconds: float



def _sources(drawn: np.ndarray, z: int, params: ScribbleParams) -> list[int]:
    return [int(k) for k in np.flatnonzero(drawn)
            if k != z and abs(int(k) - z) <= params.max_distance]


def propagate_job(probabilities: Any, image: Any, scribbles: Any, spacing: Sequence[float],
                  params: ScribbleParams | None = None, *, base_labels: Any,
                  targets: Sequence[int], keep: Any = None,
                  ignore: int = IGNORE) -> Job[PropagationResult]:
    """Carry the strokes of a volume's scribbled slices to the ``targets`` slices (a generator
    yielding Progress per slice, returning a :class:`PropagationResult`).

    A target with strokes of its own is corrected with them (hard constraints); any other gets
    the evidence of the scribbled slices within ``params.max_distance`` (see the module
    docstring). ``base_labels`` (Z, H, W): the current labels (kept outside the strokes'
    regions); ``keep``: voxels never changed (painted by hand).
    """
    t0 = time.perf_counter()
    params = params or ScribbleParams()
    img = np.asarray(image)
    probs = np.asarray(probabilities, dtype=np.float32)
    if img.ndim != 3 or probs.ndim != 4 or probs.shape[1:] != img.shape:
        raise ValueError(f"need a 3D image and (C, Z, H, W) probabilities; got {img.shape}, "
                         f"{probs.shape}")
    c = probs.shape[0]
    s = _check_scribbles(scribbles, img.shape, c, ignore)
    base = np.asarray(base_labels)
    if base.shape != img.shape:
        raise ValueError(f"base labels have shape {base.shape}, the image {img.shape}")
    keep_mask = None if keep is None else np.asarray(keep, dtype=bool)
    sp = tuple(float(v) for v in spacing)[-2:]
    targets = sorted({int(t) for t in targets})
    bad = [t for t in targets if not 0 <= t < img.shape[0]]
    if bad:
        raise ValueError(f"target slices {bad} are outside 0..{img.shape[0] - 1}")
    drawn = (s != ignore).reshape(img.shape[0], -1).any(axis=1)
    norm = normalize_intensity(img)
    smooth = norm / np.float32(255.0)
    if params.smooth_px > 0:
        from scipy import ndimage

        smooth = ndimage.gaussian_filter(smooth, (0, params.smooth_px, params.smooth_px))
    out = base.copy()
    changed, skipped = [], []
    yield Progress(0, len(targets), "scribbles", f"Correcting {len(targets)} slices")
    for i, z in enumerate(targets):
        kz = None if keep_mask is None else keep_mask[z]
        cost = _cost(norm[z], sp, params.edge_weight, params.smooth_px)
        if drawn[z]:
            boost, gmax = _evidence(cost, s[z], sp, c, params, ignore)
        else:
            boost, gmax = None, None
            for k in _sources(drawn, z, params):
                carried = np.where(np.abs(smooth[z] - smooth[k]) <= params.similarity, s[k], ignore)
                if (carried != ignore).any():
                    boost, gmax = _evidence(cost, carried, sp, c, params, ignore,
                                            params.decay ** abs(z - k), boost, gmax)
        if boost is None:
            skipped.append(z)
        else:
            clamp = _clamp_map(s[z] if drawn[z] else np.full(img.shape[1:], ignore, s.dtype),
                               ignore, kz, base[z])
            labels, _ = _correct(probs[:, z], norm[z], sp, boost, gmax, clamp, base[z], params)
            if kz is not None:
                labels[kz] = base[z][kz]
            if np.any(labels != base[z]):
                out[z] = labels
                changed.append(z)
        yield Progress(i + 1, len(targets), "scribbles", f"Slice {z} ({i + 1}/{len(targets)})")
    return PropagationResult(out, tuple(changed), tuple(skipped), time.perf_counter() - t0)


def propagate(*args: Any, **kwargs: Any) -> PropagationResult:
    """:func:`propagate_job` drained."""
    return drain(propagate_job(*args, **kwargs))
