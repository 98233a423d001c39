"""``attnseg benchmark``: a fixed subject-level split, classical baselines vs (attention) U-Nets
(+ CRF, MONAI reference, ablations) trained for the same wall-clock budget, per-case metrics with
seeded bootstrap confidence intervals, and a Markdown/CSV/PNG report.

Importing this package is cheap; torch loads when a benchmark runs.
"""

from .datasets import load_benchmark_data, write_hc18_downsampled, write_phantom_decathlon
from .methods import ABLATIONS, ALL_METHODS, CLASSICAL, Method, parse_methods
from .split import Split, apply_split, fixed_split
from .stats import bootstrap_ci

__all__ = [
    "ABLATIONS", "ALL_METHODS", "CLASSICAL", "Method", "Split", "apply_split", "benchmark", "benchmark_job",
    "bootstrap_ci", "fixed_split", "load_benchmark_data", "parse_methods", "write_hc18_downsampled",
    "write_outputs", "write_phantom_decathlon",
]


def __getattr__(name):
    if name in ("benchmark_job", "BenchmarkConfig", "BenchmarkResult"):
        from . import runner

        return getattr(runner, name)
    if name == "write_outputs":
        from .report import write_outputs

        return write_outputs
    if name == "benchmark":
        from .._progress import drain
        from .runner import benchmark_job

        return lambda config: drain(benchmark_job(config))
    raise AttributeError(name)
