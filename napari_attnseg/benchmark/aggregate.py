"""Benchmark results over training seeds: one row per method, and paired comparisons (ablations).

Per method (:func:`by_method`): each test case's score is the mean over the method's seeds; the
table cell is the mean over cases with a percentile bootstrap 95 % CI over cases
(:func:`~napari_attnseg.benchmark.stats.bootstrap_ci`), and ``<metric>_seed_sd`` is the standard
deviation (ddof 1) over seeds of the per-seed mean over cases (the training-seed noise; NaN with
one seed).

Paired comparison A − B (:func:`comparisons`, the pairs in :data:`COMPARISONS` whose two
methods both ran with the same seeds): per case, the difference of the two methods trained with
the same seed, averaged over seeds; mean over cases with a bootstrap CI over cases. Besides it,
A's and B's per-seed means (mean ± sd over seeds) and the per-seed mean differences (their sd, and
in how many seeds A was higher).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .runner import METRIC_KEYS, BenchmarkResult, MethodResult
from .scoring import CLASS_KEYS
from .stats import bootstrap_ci

__all__ = ["COMPARISONS", "by_method", "comparisons", "primary_key"]

#: (A, B, what A − B measures), in table order.
COMPARISONS = (
    ("attention_unet", "ablation_no_attention", "attention gates"),
    ("attention_unet", "ablation_no_deep_supervision", "deep supervision"),
    ("attention_unet", "ablation_no_augmentation", "augmentation"),
    ("attention_unet+crf", "attention_unet", "dense CRF"),
    ("attention_unet", "unet", "gates + deep supervision together"),
    ("attention_unet", "monai_attention_unet", "ours vs MONAI AttentionUnet"),
)


def primary_key(result: BenchmarkResult) -> str:
    """``mc_dice`` (mean over classes) for multi-class data, else ``dice`` (foreground)."""
    return "mc_dice" if result.n_classes > 2 else "dice"


def _groups(result: BenchmarkResult) -> dict[str, list[MethodResult]]:
    out: dict[str, list[MethodResult]] = {}
    for r in result.results:
        out.setdefault(r.method.name, []).append(r)
    return out


def _matrix(runs: list[MethodResult], key: str) -> np.ndarray:
    """(seeds, cases) values of ``key`` (cases in test order, NaN where missing)."""
    return np.array([[c.metrics.get(key, math.nan) for c in r.cases] for r in runs], dtype=np.float64)


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    with np.errstate(all="ignore"):
        cnt = np.sum(~np.isnan(a), axis=axis)
        tot = np.nansum(a, axis=axis)
        return np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)


def _seed_sd(per_seed: np.ndarray) -> float:
    x = per_seed[~np.isnan(per_seed)]
    return float(np.std(x, ddof=1)) if x.size > 1 else math.nan


def by_method(result: BenchmarkResult) -> list[dict[str, Any]]:
    """One row per method (see the module docstring)."""
    n_boot, seed = result.config.n_bootstrap, result.config.seed
    rows = []
    for name, runs in _groups(result).items():
        row: dict[str, Any] = {"method": name, "description": runs[0].method.description,
                               "seeds": " ".join(str(r.seed) for r in runs if r.seed is not None),
                               "n_seeds": sum(r.seed is not None for r in runs), "n_cases": len(runs[0].cases)}
        for k in METRIC_KEYS + CLASS_KEYS:
            mat = _matrix(runs, k)
            mean, lo, hi = bootstrap_ci(_nanmean(mat, 0), n_boot, seed)
            row[f"{k}_mean"], row[f"{k}_ci_low"], row[f"{k}_ci_high"] = mean, lo, hi
            row[f"{k}_seed_sd"] = _seed_sd(_nanmean(mat, 1))
        trained = [r for r in runs if r.train_seconds is not None]
        row["train_seconds"] = float(np.mean([r.train_seconds for r in trained])) if trained else None
        row["train_steps"] = int(round(np.mean([r.train_steps for r in trained]))) if trained else None
        row["best_val_dice"] = float(np.mean([r.best_val_dice for r in trained])) if trained else None
        secs = [c.seconds for r in runs for c in r.cases]
        row["infer_seconds_per_case"] = float(np.mean(secs)) if secs else math.nan
        rows.append(row)
    return rows


def comparisons(result: BenchmarkResult, keys: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Paired differences A − B per :data:`COMPARISONS` pair present (see the module docstring)."""
    keys = keys or (primary_key(result), "dice", "hd95")
    keys = tuple(dict.fromkeys(keys))
    groups = _groups(result)
    n_boot, seed = result.config.n_bootstrap, result.config.seed
    rows = []
    for a, b, what in COMPARISONS:
        if a not in groups or b not in groups:
            continue
        ra = {r.seed: r for r in groups[a] if r.seed is not None}
        rb = {r.seed: r for r in groups[b] if r.seed is not None}
        common = [s for s in ra if s in rb]
        if not common:
            continue
        row: dict[str, Any] = {"a": a, "b": b, "measures": what, "seeds": " ".join(map(str, common)),
                               "n_cases": len(ra[common[0]].cases)}
        for k in keys:
            ma = _matrix([ra[s] for s in common], k)
            mb = _matrix([rb[s] for s in common], k)
            diff = ma - mb
            mean, lo, hi = bootstrap_ci(_nanmean(diff, 0), n_boot, seed)
            per_seed = _nanmean(diff, 1)
            sa, sb = _nanmean(ma, 1), _nanmean(mb, 1)
            row.update({f"{k}_a_mean": float(np.nanmean(sa)), f"{k}_a_seed_sd": _seed_sd(sa),
                        f"{k}_b_mean": float(np.nanmean(sb)), f"{k}_b_seed_sd": _seed_sd(sb),
                        f"{k}_diff_mean": mean, f"{k}_diff_ci_low": lo, f"{k}_diff_ci_high": hi,
                        f"{k}_diff_seed_sd": _seed_sd(per_seed),
                        f"{k}_seeds_a_higher": int(np.sum(per_seed > 0))})
        rows.append(row)
    return rows
