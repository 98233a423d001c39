"""``attnseg benchmark DATASET``: classical baselines vs (attention) U-Nets (+ CRF, MONAI
reference, ablations) on a fixed subject-level split (the shipped models' patient split for ACDC,
CHAOS and OpenKBP), trained for equal seconds or equal steps (``--steps``), once per training
seed (``--seeds``), with bootstrap confidence intervals and paired ablation differences.

DATASET: ``phantoms`` (CT phantoms from ``phantom_dataset``, scored as 3D volumes segmented slice
by slice; also ``phantoms:mr`` and ``phantoms:us``), an HC18 folder (downsampled x4 by default)
or a Decathlon/nnU-Net folder (or a pair-list file). Writes ``results.md``, ``per_case.csv``,
``summary.csv``, ``methods.csv``, ``comparisons.csv``, ``benchmark.png``, ``split.json`` and
``config.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import shlex
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="'phantoms' (or phantoms:ct|mr|us), an HC18 folder or a Decathlon folder")
    parser.add_argument("--methods", nargs="+", default=["all"],
                        help="methods (default all): otsu region_growing active_contours unet attention_unet "
                             "attention_unet+crf monai_attention_unet ablation_no_attention "
                             "ablation_no_deep_supervision ablation_no_augmentation; or 'classical', 'ablation'; "
                             "model:NAME scores a trained registry model (e.g. a shipped one) without training")
    parser.add_argument("--budget-seconds", type=float, default=120.0,
                        help="wall-clock training budget of each neural method (default 120; ignored with --steps)")
    parser.add_argument("--steps", type=int, default=None,
                        help="equal-step budget: every network makes exactly this many optimizer steps, no time "
                             "limit (a multiple of --steps-per-epoch); use this on a shared machine")
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="steps between validations (default 20); the best validated weights are kept")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="training seeds: every network is trained once per seed (default: --seed)")
    parser.add_argument("--split", choices=("auto", "shared", "random"), default="auto",
                        help="'shared': the shipped models' fixed patient split (acdc, chaos_mr_t2, openkbp_ct); "
                             "'random': the seeded subject split; 'auto' (default): shared for those datasets")
    parser.add_argument("--out", default="benchmark_results", help="output folder (default ./benchmark_results)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the fixed subject-level split")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="share of subjects held out for testing")
    parser.add_argument("--max-test-cases", type=int, default=None, help="score only the first N test cases")
    parser.add_argument("--factor", type=int, default=None, help="in-plane downsampling (default: 4 for HC18, else 1)")
    parser.add_argument("--channels", type=int, nargs="+", default=None, help="feature maps per level (8 16 32 64 128)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--patch-size", type=int, nargs=2, default=None, help="training patch (default: from the data)")
    parser.add_argument("--n-phantoms", type=int, default=None, help="phantom cases generated (default 12)")
    parser.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples (default 2000)")
    parser.add_argument("--no-mirror", action="store_true",
                        help="no flips/rotations in the augmentation (left/right organ pairs, e.g. CHAOS, OpenKBP)")
    parser.add_argument("--val-fraction", type=float, default=None,
                        help="share of training subjects that validate (default 0.2)")
    parser.add_argument("--ac-iterations", type=int, default=None, help="active-contour iterations (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="training (without --seeds), validation-split and bootstrap seed")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch")
    parser.add_argument("--quick", action="store_true", help="a CI-sized run (tiny model, seconds of training)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..benchmark.report import write_outputs
    from ..benchmark.runner import BenchmarkConfig, benchmark_job
    from ._common import run_with_progress

    kw = {"dataset": args.dataset, "methods": tuple(args.methods), "budget_seconds": args.budget_seconds,
          "split_seed": args.split_seed, "test_fraction": args.test_fraction, "max_test_cases": args.max_test_cases,
          "factor": args.factor, "seed": args.seed, "threads": args.threads, "quick": args.quick,
          "steps": args.steps, "split": args.split, "mirror": not args.no_mirror,
          "seeds": tuple(args.seeds) if args.seeds else None}
    for name in ("steps_per_epoch", "val_fraction", "ac_iterations"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    if args.channels:
        kw["channels"] = tuple(args.channels)
    if args.batch_size:
        kw["batch_size"] = args.batch_size
    if args.patch_size:
        kw["patch_size"] = tuple(args.patch_size)
    if args.n_phantoms:
        kw["n_phantoms"] = args.n_phantoms
    if args.bootstrap:
        kw["n_bootstrap"] = args.bootstrap
    if args.quick and "--budget-seconds" not in sys.argv:
        kw.pop("budget_seconds")
    if args.quick and args.test_fraction == 0.2:
        kw.pop("test_fraction")
    result = run_with_progress(benchmark_job(BenchmarkConfig(**kw)), desc="benchmark", quiet=args.quiet)
    command = "attnseg benchmark " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if "benchmark" in sys.argv else ""
    files = write_outputs(result, args.out, command)
    from ..benchmark.report import comparison_table, markdown_table

    print(markdown_table(result))
    table = comparison_table(result)
    if table:
        print(table)
    print(f"wrote {', '.join(str(p) for p in files.values())}")
    return 0
