"""Search dense-CRF parameters that maximise Dice against ground truth (or reviewed slices).

Dice here is the mean over the foreground classes (1..C-1) present in the truth or the
prediction, on the scored voxels only (``mask``); a class absent from both is skipped, and
when no class is present at all Dice is 1.0.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .._progress import Job, Progress, drain
from .dense_crf import CRFParams, _prepare, refine_job

#: Parameters the grid may vary.
TUNABLE = ("sxy_gaussian_mm", "gaussian_weight", "sxy_bilateral_mm", "srgb_bilateral",
           "bilateral_weight", "iterations")


@dataclass(frozen=True)
class Trial:
    """One evaluated parameter set."""

    params: CRFParams
    dice: float
    seconds: float


@dataclass(frozen=True)
class AutotuneResult:
    """Best parameters found, their Dice, the Dice of the unrefined input, and every trial."""

    best_params: CRFParams
    best_dice: float
    baseline_dice: float
    trials: tuple[Trial, ...]

    @property
    def gain(self) -> float:
        return self.best_dice - self.baseline_dice


def mean_dice(pred: np.ndarray, truth: np.ndarray, n_classes: int,
              mask: np.ndarray | None = None) -> float:
    """Mean foreground Dice over classes 1..n_classes-1 present in either array (on ``mask``)."""
    if mask is not None:
        pred, truth = pred[mask], truth[mask]
    scores = []
    for k in range(1, max(n_classes, 2)):
        p, t = pred == k, truth == k
        denom = int(p.sum()) + int(t.sum())
        if denom:
            scores.append(2.0 * np.count_nonzero(p & t) / denom)
    return float(np.mean(scores)) if scores else 1.0


def default_grid(base: CRFParams) -> dict[str, list[Any]]:
    """A small grid around ``base``: smoothness and appearance bandwidths and weights."""
    return {
        "sxy_bilateral_mm": [base.sxy_bilateral_mm * f for f in (0.5, 1.0, 2.0)],
        "srgb_bilateral": [base.srgb_bilateral * f for f in (0.5, 1.0, 2.0)],
        "bilateral_weight": [base.bilateral_weight * f for f in (0.5, 1.0, 2.0)],
        "gaussian_weight": [base.gaussian_weight * f for f in (0.5, 1.0)],
    }


def _mask_from(mask: Any, shape: tuple) -> np.ndarray | None:
    if mask is None:
        return None
    arr = np.asarray(mask)
    if arr.shape == shape:
        m = arr.astype(bool)
    elif arr.ndim == 1 and arr.dtype.kind in "iu" and len(shape) == 3:  # reviewed slice indices
        m = np.zeros(shape, bool)
        idx = arr.astype(int)
        if idx.size and (idx.min() < 0 or idx.max() >= shape[0]):
            raise ValueError(f"reviewed slice indices {idx.tolist()} outside 0..{shape[0] - 1}")
        m[idx] = True
    else:
        raise ValueError(f"mask must have the image shape {shape} (reviewed voxels) or be a list "
                         f"of slice indices; got shape {arr.shape}")
    if not m.any():
        raise ValueError("the scoring mask is empty: mark at least one reviewed slice or voxel")
    return m


def autotune_job(probabilities: Any, image: Any, spacing: Sequence[float], ground_truth: Any,
                 mask: Any = None, grid: Mapping[str, Sequence[Any]] | None = None,
                 n_trials: int | None = None, base: CRFParams | None = None,
                 seed: int = 0) -> Job[AutotuneResult]:
    """Evaluate CRF parameter sets (the cartesian ``grid`` around ``base``; a random subset of
    ``n_trials`` when given, always including ``base``); progress per trial; closing cancels."""
    base = base or CRFParams()
    probs, img, sp = _prepare(probabilities, image, spacing)
    gt = np.asarray(ground_truth)
    if gt.shape != img.shape:
        raise ValueError(f"ground truth shape {gt.shape} differs from the image {img.shape}")
    m = _mask_from(mask, img.shape)
    grid = dict(default_grid(base) if grid is None else grid)
    bad = [k for k in grid if k not in TUNABLE]
    if bad:
        raise ValueError(f"cannot tune {bad}; tunable parameters are {', '.join(TUNABLE)}")
    keys = list(grid)
    combos = [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))]
    candidates = [base] + [replace(base, **c) for c in combos]
    candidates = list(dict.fromkeys(candidates))  # unique, base first
    if n_trials is not None:
        if n_trials < 1:
            raise ValueError(f"n_trials must be >= 1, got {n_trials}")
        rest = candidates[1:]
        random.Random(seed).shuffle(rest)
        candidates = [base] + rest[: n_trials - 1]
    c = probs.shape[0]
    baseline = mean_dice(probs.argmax(0), gt, c, m)
    total = len(candidates)
    trials: list[Trial] = []
    yield Progress(0, total, "autotune", f"Baseline Dice {baseline:.4f}; {total} trials")
    for i, params in enumerate(candidates):
        job = refine_job(probs, img, sp, params)
        try:
            while True:  # forward the trial's own progress so cancel works inside a trial
                try:
                    inner = next(job)
                except StopIteration as stop:
                    res = stop.value
                    break
                yield Progress(i, total, "autotune", f"Trial {i + 1}/{total}: {inner.message}")
        finally:
            job.close()
        d = mean_dice(res.labels, gt, c, m)
        trials.append(Trial(params=res.params if params.mode != "auto" else params,
                            dice=d, seconds=res.seconds))
        best = max(trials, key=lambda t: t.dice)
        yield Progress(i + 1, total, "autotune",
                       f"Trial {i + 1}/{total}: Dice {d:.4f} (best {best.dice:.4f})",
                       info={"dice": d, "best_dice": best.dice})
    best = max(trials, key=lambda t: t.dice)
    return AutotuneResult(best_params=best.params, best_dice=best.dice, baseline_dice=baseline,
                          trials=tuple(trials))


def autotune(*args: Any, **kwargs: Any) -> AutotuneResult:
    """Run :func:`autotune_job` to the end."""
    return drain(autotune_job(*args, **kwargs))
