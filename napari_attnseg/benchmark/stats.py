"""Seeded percentile bootstrap confidence intervals of a mean."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["bootstrap_ci"]


def bootstrap_ci(values: Sequence[float], n_resamples: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the sample mean and its percentile bootstrap CI.

    ``n_resamples`` resamples of ``len(values)`` values drawn with replacement by
    ``numpy.random.default_rng(seed).integers(0, n, size=(n_resamples, n))``; the interval is the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled means
    (``np.percentile``, linear interpolation). NaN values are dropped first; no values give
    ``(nan, nan, nan)``; one value gives a zero-width interval.
    """
    if isinstance(n_resamples, bool) or int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[~np.isnan(x)]
    if x.size == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if x.size == 1:
        return (mean, mean, mean)
    idx = np.random.default_rng(int(seed)).integers(0, x.size, size=(int(n_resamples), x.size))
    means = x[idx].mean(axis=1)
    alpha = (1.0 - float(level)) / 2.0
    lo, hi = np.percentile(means, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return (mean, float(lo), float(hi))
