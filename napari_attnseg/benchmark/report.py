"""Benchmark outputs: ``per_case.csv``, ``summary.csv`` (per method and seed), ``methods.csv``
(per method over seeds), ``comparisons.csv`` (paired ablations), ``results.md`` (Markdown tables),
``benchmark.png`` (bars with 95 % CI error bars), ``split.json`` and ``config.json``."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from .runner import METRIC_KEYS, BenchmarkResult
from .scoring import CLASS_KEYS

__all__ = ["comparison_table", "markdown_table", "write_outputs"]

_LABELS = {"dice": "Dice", "jaccard": "Jaccard", "sensitivity": "Sensitivity", "precision": "Precision",
           "hd95": "HD95", "mc_dice": "Dice", "mc_jaccard": "Jaccard", "mc_sensitivity": "Sensitivity",
           "mc_hd95": "HD95"}


def _ci(row: dict[str, Any], k: str, digits: int) -> str:
    m, lo, hi = row[f"{k}_mean"], row[f"{k}_ci_low"], row[f"{k}_ci_high"]
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "n/a"
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _num(v: Any, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _digits(k: str) -> int:
    return 1 if k.endswith("hd95") else 3


def markdown_table(result: BenchmarkResult, keys: tuple[str, ...] = METRIC_KEYS) -> str:
    """One row per method: metric means with 95 % bootstrap CIs over cases (each case's score
    averaged over the method's training seeds), the seed sd of the first metric, training steps
    and time, inference time."""
    from .aggregate import by_method

    rows = [r for r in by_method(result) if not all(math.isnan(r[f"{k}_mean"]) for k in keys)]
    multi = any(r["n_seeds"] > 1 for r in rows)
    unit = result.spacing_unit
    head = ["Method"] + [_LABELS[k] + (f" ({unit})" if k.endswith("hd95") else "") for k in keys]
    head += ([f"sd over seeds ({_LABELS[keys[0]]})"] if multi else []) + ["Train s (steps)", "Infer s/case"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        train = "-" if r["train_seconds"] is None else f"{r['train_seconds']:.0f} ({r['train_steps']})"
        cells = [r["method"] + (f" ({r['n_seeds']} seeds)" if r["n_seeds"] > 1 else "")]
        cells += [_ci(r, k, _digits(k)) for k in keys]
        cells += ([_num(r[f"{keys[0]}_seed_sd"], ".3f")] if multi else []) + [train, _num(r["infer_seconds_per_case"], ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_table(result: BenchmarkResult) -> str:
    """The paired comparisons (ablations): A and B as mean ± sd over seeds, A − B paired per case
    with its 95 % bootstrap CI, and the HD95 difference."""
    from .aggregate import comparisons, primary_key

    k = primary_key(result)
    rows = comparisons(result, (k, "hd95"))
    if not rows:
        return ""
    name = "Dice (mean over classes)" if k == "mc_dice" else "Dice"
    head = ["A − B", "measures", f"A {name}, mean ± sd over seeds", f"B {name}", f"A − B {name} [95 % CI]",
            "seeds A > B", f"A − B HD95 ({result.spacing_unit}) [95 % CI]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def pm(r, side):
        sd = r[f"{k}_{side}_seed_sd"]
        return f"{r[f'{k}_{side}_mean']:.3f}" + ("" if math.isnan(sd) else f" ± {sd:.3f}")

    for r in rows:
        n = len(r["seeds"].split())
        lines.append("| " + " | ".join([
            f"{r['a']} − {r['b']}", r["measures"], pm(r, "a"), pm(r, "b"),
            f"{r[f'{k}_diff_mean']:+.3f} [{r[f'{k}_diff_ci_low']:+.3f}, {r[f'{k}_diff_ci_high']:+.3f}]",
            f"{r[f'{k}_seeds_a_higher']}/{n}",
            f"{r['hd95_diff_mean']:+.1f} [{r['hd95_diff_ci_low']:+.1f}, {r['hd95_diff_ci_high']:+.1f}]"]) + " |")
    return "\n".join(lines)


def _plot(result: BenchmarkResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import numpy as np
    from matplotlib.figure import Figure

    from .aggregate import by_method

    rows = by_method(result)
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
    ax2.set_ylabel(f"HD95 ({result.spacing_unit})")
    ax2.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def _csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        fields = list(dict.fromkeys(k for r in rows for k in r))
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def _budget(result: BenchmarkResult) -> str:
    c, env = result.config, result.environment
    if not any(r.train_seconds is not None for r in result.results):
        return "- No network trained in this run; "
    budget = (f"{c.steps} optimizer steps each (equal steps, no time limit)" if c.steps is not None
              else f"{c.budget_seconds:g} s wall-clock training budget each")
    seeds = c.training_seeds
    return (f"- Neural methods: {budget}, batch {c.batch_size}, channels {'-'.join(map(str, c.channels))}, "
            f"{'seeds ' + ' '.join(map(str, seeds)) if len(seeds) > 1 else f'seed {seeds[0]}'}, on "
            f"{env.get('device', 'cpu')} ({env.get('processor', '')}, {env.get('threads')} threads); ")


def write_outputs(result: BenchmarkResult, out: str | Path, command: str = "") -> dict[str, Path]:
    """Write every output file into ``out`` (created); returns them by kind: ``per_case.csv``
    (one row per method, seed and case), ``summary.csv`` (per method and seed), ``methods.csv``
    (per method over seeds), ``comparisons.csv`` (paired A − B), ``results.md``, ``benchmark.png``,
    ``split.json``, ``config.json``."""
    from .aggregate import by_method, comparisons, primary_key

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {k: out / n for k, n in (("per_case", "per_case.csv"), ("summary", "summary.csv"),
                                     ("methods", "methods.csv"), ("comparisons", "comparisons.csv"),
                                     ("markdown", "results.md"), ("plot", "benchmark.png"),
                                     ("split", "split.json"), ("config", "config.json"))}
    keys = list(METRIC_KEYS) + list(CLASS_KEYS) + [f"dice_c{c}" for c in range(1, result.n_classes)]
    with open(files["per_case"], "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "seed", "case", "subject", *keys, "hd95_substituted", "infer_seconds"])
        for r in result.results:
            for c in r.cases:
                w.writerow([c.method, "" if c.seed is None else c.seed, c.case, c.subject,
                            *(f"{c.metrics.get(k, math.nan):.12g}" for k in keys),
                            int(c.hd95_substituted), f"{c.seconds:.4f}"])
    _csv(files["summary"], result.summary_rows())
    _csv(files["methods"], by_method(result))
    comp = comparisons(result, (primary_key(result), "dice", "hd95"))
    if comp:
        _csv(files["comparisons"], comp)
    else:
        files["comparisons"].write_text("", encoding="utf-8")
    files["split"].write_text(json.dumps({**result.split.to_dict(), "dataset": result.data_name,
                                          "test_cases_scored": result.test_cases}, indent=1), encoding="utf-8")
    files["config"].write_text(json.dumps({"config": result.config.to_dict(), "factor": result.factor,
                                           "patch_size": list(result.patch_size), "command": command,
                                           "environment": result.environment, "seconds": result.seconds},
                                          indent=1), encoding="utf-8")
    sp = result.split
    seed_text = "" if sp.split_seed < 0 else f"split seed {sp.split_seed}; "
    unit = result.spacing_unit
    md = [f"# Benchmark: {result.data_name}", "",
          f"- Data: {result.data_source} (licence: {result.licence or 'see source'}), modality {result.modality or '?'}",
          f"- Split: {len(sp.train_subjects)} training subjects, {len(sp.test_subjects)} test subjects "
          f"({seed_text}{sp.rule}); {len(result.test_cases)} test cases scored",
          f"- Resolution: in-plane downsampling x{result.factor} for the benchmark's methods (model: rows run at "
          f"their own configured resolution), predictions scored on the original grid; training patch "
          f"{list(result.patch_size)}" + ("; distances in px: the files carry no voxel size" if unit == "px" else ""),
          _budget(result) + "foreground = all nonzero (contoured) labels",
          f"- Mean over test cases [95 % percentile bootstrap CI over cases, {result.config.n_bootstrap} resamples, "
          f"seed {result.config.seed}]; with several seeds each case's score is first averaged over seeds",
          f"- Total wall time {result.seconds:.0f} s" + (f"; command: `{command}`" if command else ""), ""]
    if result.n_classes > 2:
        md += ["## Mean over classes per case (networks and models)", "",
               markdown_table(result, CLASS_KEYS), ""]
    md += ["## Foreground (all methods)", "", markdown_table(result), ""]
    table = comparison_table(result)
    if table:
        md += ["## Paired comparisons (ablations)", "", table, ""]
    files["markdown"].write_text("\n".join(md), encoding="utf-8")
    _plot(result, files["plot"])
    return files
