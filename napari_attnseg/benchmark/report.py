"""Benchmark outputs: ``per_case.csv``, ``summary.csv``, ``results.md`` (Markdown table),
``benchmark.png`` (bars with 95 % CI error bars), ``split.json`` and ``config.json``."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from .runner import METRIC_KEYS, BenchmarkResult

__all__ = ["markdown_table", "write_outputs"]

_LABELS = {"dice": "Dice", "jaccard": "Jaccard", "sensitivity": "Sensitivity", "precision": "Precision",
           "hd95": "HD95 (mm)"}


def _ci(row: dict[str, Any], k: str, digits: int) -> str:
    m, lo, hi = row[f"{k}_mean"], row[f"{k}_ci_low"], row[f"{k}_ci_high"]
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "n/a"
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _num(v: Any, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def markdown_table(result: BenchmarkResult) -> str:
    """One row per method: metric means with 95 % bootstrap CIs, training and inference time."""
    rows = result.summary_rows()
    head = ["Method"] + [_LABELS[k] for k in METRIC_KEYS] + ["Train s (steps)", "Infer s/case"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        train = "-" if r["train_seconds"] is None else f"{r['train_seconds']:.0f} ({r['train_steps']})"
        cells = [r["method"]] + [_ci(r, k, 1 if k == "hd95" else 3) for k in METRIC_KEYS] + \
                [train, _num(r["infer_seconds_per_case"], ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot(result: BenchmarkResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import numpy as np
    from matplotlib.figure import Figure

    rows = result.summary_rows()
    names = [r["method"] for r in rows]
    fig = Figure(figsize=(max(7.0, 0.9 * len(names) + 3), 6.5))
    ax1, ax2 = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
    keys = ("dice", "jaccard", "sensitivity", "precision")
    x = np.arange(len(names))
    w = 0.8 / len(keys)
    for j, k in enumerate(keys):
        means = np.array([r[f"{k}_mean"] for r in rows], float)
        err = np.array([[m - r[f"{k}_ci_low"], r[f"{k}_ci_high"] - m] for m, r in zip(means, rows)], float).T
        ax1.bar(x + (j - 1.5) * w, np.nan_to_num(means), w, yerr=np.nan_to_num(err), capsize=2, label=_LABELS[k])
    ax1.set_ylim(0, 1.05)
    ax1.set_xticks(x, [])
    ax1.set_ylabel("mean, 95 % bootstrap CI")
    ax1.legend(ncol=4, fontsize=8, loc="upper left")
    ax1.set_title(f"{result.data_name}: {len(result.test_cases)} test cases")
    means = np.array([r["hd95_mean"] for r in rows], float)
    err = np.array([[m - r["hd95_ci_low"], r["hd95_ci_high"] - m] for m, r in zip(means, rows)], float).T
    ax2.bar(x, np.nan_to_num(means), 0.5, yerr=np.nan_to_num(err), capsize=3, color="C4")
    ax2.set_ylabel("HD95 (mm)")
    ax2.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def write_outputs(result: BenchmarkResult, out: str | Path, command: str = "") -> dict[str, Path]:
    """Write every output file into ``out`` (created); returns them by kind."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {k: out / n for k, n in (("per_case", "per_case.csv"), ("summary", "summary.csv"),
                                     ("markdown", "results.md"), ("plot", "benchmark.png"),
                                     ("split", "split.json"), ("config", "config.json"))}
    with open(files["per_case"], "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "case", "subject", *METRIC_KEYS, "hd95_substituted", "infer_seconds"])
        for r in result.results:
            for c in r.cases:
                w.writerow([c.method, c.case, c.subject, *(f"{c.metrics[k]:.12g}" for k in METRIC_KEYS),
                            int(c.hd95_substituted), f"{c.seconds:.4f}"])
    rows = result.summary_rows()
    with open(files["summary"], "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    files["split"].write_text(json.dumps({**result.split.to_dict(), "dataset": result.data_name,
                                          "test_cases_scored": result.test_cases}, indent=1), encoding="utf-8")
    files["config"].write_text(json.dumps({"config": result.config.to_dict(), "factor": result.factor,
                                           "patch_size": list(result.patch_size), "command": command,
                                           "environment": result.environment, "seconds": result.seconds},
                                          indent=1), encoding="utf-8")
    md = [f"# Benchmark: {result.data_name}", "",
          f"- Data: {result.data_source} (licence: {result.licence or 'see source'}), modality {result.modality or '?'}",
          f"- Split: {len(result.split.train_subjects)} training subjects, {len(result.split.test_subjects)} test "
          f"subjects (split seed {result.split.split_seed}; {result.split.rule}); {len(result.test_cases)} test "
          "cases scored",
          f"- Resolution: in-plane downsampling x{result.factor} for all methods, predictions upsampled and "
          f"scored on the original grid in mm; training patch {list(result.patch_size)}",
          (f"- Neural methods: {result.config.budget_seconds:g} s wall-clock training budget each on "
           f"{result.environment.get('device', 'cpu')} ({result.environment.get('threads')} threads); "
           if any(r.train_seconds is not None for r in result.results) else "- No network trained in this run; ")
          + "foreground = all nonzero labels",
          f"- Mean [95 % percentile bootstrap CI, {result.config.n_bootstrap} resamples, seed {result.config.seed}]",
          f"- Total wall time {result.seconds:.0f} s" + (f"; command: `{command}`" if command else ""), "",
          markdown_table(result), ""]
    files["markdown"].write_text("\n".join(md), encoding="utf-8")
    _plot(result, files["plot"])
    return files
