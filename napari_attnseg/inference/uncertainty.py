"""Where is the model unsure? Voxel uncertainty maps and a "what to correct next" slice ranking.

* :func:`entropy_map` — predictive entropy of the class probabilities, divided by ``log C`` so
  that 0 means certain (one class has probability 1) and 1 means uniform over the ``C`` classes.
* :func:`flip_disagreement` — how much test-time-flip predictions disagree: the summed
  per-class variance across the members, divided by its maximum ``1 - 1/C`` (reached when the
  members are one-hot and spread evenly over the classes), so the map is also in [0, 1].
* :func:`rank_slices` — per-slice score (mean or a high quantile of the map), most uncertain
  first, skipping slices the user has already reviewed.
* :func:`flip_uncertainty_job` — runs the predictor on flipped copies of a volume and returns
  the averaged probabilities with both maps (a progress generator; closing it cancels).

All maps are float32 arrays with the spatial shape of the input, (z, y, x) or (y, x).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._options import choose
from .._progress import Job, Progress

logger = logging.getLogger(__name__)

#: Statistics :func:`rank_slices` can score a slice with.
SLICE_STATISTICS = ("mean", "quantile", "max")

#: Test-time flips used by :func:`flip_uncertainty_job` (in-plane axes of a (z, y, x) volume).
DEFAULT_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


def _check_probabilities(p: np.ndarray, what: str = "probabilities") -> np.ndarray:
    p = np.asarray(p)
    if p.ndim < 2:
        raise ValueError(f"{what} must be (C, *spatial) with C >= 2 classes; got shape {p.shape}")
    if p.shape[0] < 2:
        raise ValueError(f"{what} has {p.shape[0]} class channel(s); at least 2 are needed "
                         f"(shape {p.shape}, classes first)")
    if not np.issubdtype(p.dtype, np.floating):
        raise ValueError(f"{what} must be floating point, got {p.dtype}")
    return p


def entropy_map(probabilities: np.ndarray) -> np.ndarray:
    """Normalised predictive entropy ``-sum_c p_c log p_c / log C`` per voxel, in [0, 1].

    Parameters
    ----------
    probabilities : ndarray (C, *spatial), float
        Class probabilities (softmax output), classes first. Each voxel's vector is
        renormalised to sum to 1 (so slightly off sums from stitching do not matter); a voxel
        whose probabilities are all zero counts as uniform (maximally uncertain).

    Returns
    -------
    ndarray (*spatial), float32
    """
    p = _check_probabilities(probabilities).astype(np.float64, copy=False)
    c = p.shape[0]
    p = np.clip(p, 0.0, None)
    total = p.sum(axis=0, keepdims=True)
    uniform = total <= 0
    p = np.where(uniform, 1.0 / c, p / np.where(uniform, 1.0, total))
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(p), 0.0)
    h = -plogp.sum(axis=0) / np.log(c)
    return np.clip(h, 0.0, 1.0).astype(np.float32)


def flip_disagreement(prob_list: Sequence[np.ndarray]) -> np.ndarray:
    """Disagreement between several predictions of the same volume (e.g. test-time flips,
    already flipped back), per voxel, in [0, 1].

    ``sum_c Var_m(p_c) / (1 - 1/C)``: the per-class variance across the ``M`` members
    (population variance), summed over classes and divided by its largest possible value.
    0 when all members agree; 1 when they are one-hot and split evenly over the classes.

    Parameters
    ----------
    prob_list : sequence of ndarray (C, *spatial)
        At least two members, all of the same shape.
    """
    if len(prob_list) < 2:
        raise ValueError(f"flip_disagreement needs at least 2 predictions, got {len(prob_list)}")
    arrays = [_check_probabilities(p, f"prediction {i}") for i, p in enumerate(prob_list)]
    shape = arrays[0].shape
    for i, a in enumerate(arrays[1:], start=1):
        if a.shape != shape:
            raise ValueError(f"prediction {i} has shape {a.shape}, prediction 0 has {shape}")
    c = shape[0]
    # streaming mean / mean-of-squares keeps memory at two float64 volumes
    s1 = np.zeros(shape, dtype=np.float64)
    s2 = np.zeros(shape, dtype=np.float64)
    for a in arrays:
        a = a.astype(np.float64, copy=False)
        s1 += a
        s2 += a * a
    m = len(arrays)
    var = s2 / m - (s1 / m) ** 2
    out = np.clip(var, 0.0, None).sum(axis=0) / (1.0 - 1.0 / c)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _reviewed_flags(reviewed: Any, n: int) -> np.ndarray:
    flags = np.zeros(n, dtype=bool)
    if reviewed is None:
        return flags
    arr = np.asarray(reviewed)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise ValueError(f"reviewed mask has shape {arr.shape}; expected ({n},) flags, "
                             "one per slice")
        return arr.copy()
    idx = np.asarray(list(reviewed) if not isinstance(reviewed, np.ndarray) else arr).astype(int).ravel()
    bad = idx[(idx < 0) | (idx >= n)]
    if bad.size:
        raise ValueError(f"reviewed slice index {int(bad[0])} is outside 0..{n - 1}")
    flags[idx] = True
    return flags


def slice_scores(uncertainty: np.ndarray, axis: int = 0, statistic: str = "mean",
                 q: float = 0.9) -> np.ndarray:
    """One score per slice along ``axis``: the mean, the ``q`` quantile or the max of the map."""
    u = np.asarray(uncertainty, dtype=np.float64)
    if u.ndim < 2:
        raise ValueError(f"uncertainty map must be 2D or 3D, got shape {u.shape}")
    if not -u.ndim <= axis < u.ndim:
        raise ValueError(f"axis {axis} is out of range for a {u.ndim}D uncertainty map")
    statistic = choose(statistic, SLICE_STATISTICS, "slice statistic")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q must be in [0, 1], got {q}")
    flat = np.moveaxis(u, axis, 0).reshape(u.shape[axis], -1)
    if statistic == "mean":
        return flat.mean(axis=1)
    if statistic == "max":
        return flat.max(axis=1)
    return np.quantile(flat, q, axis=1)


def rank_slices(uncertainty: np.ndarray, axis: int = 0, reviewed: Any = None,
                top_k: int | None = None, statistic: str = "mean",
                q: float = 0.9) -> list[tuple[int, float]]:
    """Slices along ``axis`` ordered from most to least uncertain, reviewed ones left out.

    Parameters
    ----------
    uncertainty : ndarray (z, y, x) or (y, x)
        A voxel map such as :func:`entropy_map` or :func:`flip_disagreement`.
    reviewed : (n,) bool flags or iterable of slice indices, optional
        Slices the user has already checked; they are never proposed again.
    top_k : int, optional
        Keep only the first ``top_k`` entries.
    statistic : "mean" (default), "quantile" (the ``q`` quantile) or "max".

    Returns
    -------
    list of (slice_index, score)
        Ties keep the lower slice index first.
    """
    scores = slice_scores(uncertainty, axis, statistic, q)
    flags = _reviewed_flags(reviewed, scores.size)
    if top_k is not None and int(top_k) < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    order = np.lexsort((np.arange(scores.size), -scores))  # score desc, then index asc
    ranked = [(int(i), float(scores[i])) for i in order if not flags[i]]
    return ranked if top_k is None else ranked[: int(top_k)]


@dataclass(frozen=True)
class UncertaintyResult:
    """Output of :func:`flip_uncertainty_job`."""

    probabilities: np.ndarray   # (C, *spatial) float32, mean over the flips
    entropy: np.ndarray         # (*spatial) float32, entropy of the mean
    disagreement: np.ndarray    # (*spatial) float32, flip disagreement
    flips: tuple[tuple[int, ...], ...]
    seconds: float


def flip_uncertainty_job(model: Any, volume: Any, config: Any = None,
                         flips: Iterable[tuple[int, ...]] | None = None) -> Job[UncertaintyResult]:
    """Predict ``volume`` once per flip (flipping the input, flipping the probabilities back)
    and return the mean probabilities, their entropy and the flips' disagreement.

    ``flips`` default: :data:`DEFAULT_FLIPS` for a model trained on mirrored images
    (``ModelSpec.mirrors``); for one that was not (labels that name a side: a flipped abdomen
    is an image it never saw, and its disagreement would be everywhere) the one unflipped
    prediction, its entropy, and no disagreement (zeros). Explicit flips for such a model are
    a ValueError.

    ``model`` is a :class:`~napari_attnseg.model.checkpoint.LoadedModel`, ``volume`` a
    :class:`~napari_attnseg.volume.Volume`, ``config`` a
    :class:`~napari_attnseg.inference.predictor.PredictConfig` (its ``tta`` is turned off: the
    flips are done here). Closing the generator cancels between windows.
    """
    import time
    from dataclasses import replace

    from .predictor import PredictConfig, as_volume, intensity_for, predict_job

    mirrors = getattr(getattr(model, "spec", None), "mirrors", True)
    if flips is None:
        flips = DEFAULT_FLIPS if mirrors else ((),)
    elif not mirrors:
        raise ValueError("this model was trained without mirrored images (its labels name sides, "
                         "or its training did not flip): flipped predictions are not a measure of "
                         "its uncertainty")
    flips = tuple(tuple(int(a) for a in f) for f in flips)
    if len(flips) < 2 and mirrors:
        raise ValueError(f"flip_uncertainty_job needs at least 2 flips, got {flips}")
    nd = volume.ndim
    for f in flips:
        for a in f:
            if not -nd <= a < nd:
                raise ValueError(f"flip axis {a} is out of range for a {nd}D volume")
    cfg = PredictConfig() if config is None else config
    if getattr(cfg, "tta", None) is not False:  # (None would follow the model's default)
        cfg = replace(cfg, tta=False)
    volume = as_volume(model, volume)
    intensity = intensity_for(model, volume, cfg)  # same normalisation for every flip
    t0 = time.perf_counter()
    members: list[np.ndarray] = []
    for k, f in enumerate(flips):
        data = np.flip(volume.data, axis=f) if f else volume.data
        vol_f = volume.with_data(np.ascontiguousarray(data))
        job = predict_job(model, vol_f, cfg, intensity=intensity, check_input=k == 0)
        try:
            while True:
                try:
                    p = next(job)
                except StopIteration as stop:
                    pred = stop.value
                    break
                frac = p.fraction
                yield Progress(k * 1000 + int(1000 * frac), 1000 * len(flips), "uncertainty",
                               f"flip {k + 1}/{len(flips)}: {p.message or p.stage}")
        finally:
            job.close()
        probs = np.asarray(pred.probabilities, dtype=np.float32)
        if f:
            probs = np.flip(probs, axis=tuple(a if a < 0 else a + 1 for a in f))
        members.append(np.ascontiguousarray(probs))
    mean = np.mean(np.stack(members), axis=0).astype(np.float32)
    result = UncertaintyResult(
        probabilities=mean,
        entropy=entropy_map(mean),
        disagreement=(flip_disagreement(members) if len(members) > 1
                      else np.zeros(mean.shape[1:], np.float32)),
        flips=flips,
        seconds=time.perf_counter() - t0,
    )
    yield Progress(1000 * len(flips), 1000 * len(flips), "uncertainty", "done")
    return result
