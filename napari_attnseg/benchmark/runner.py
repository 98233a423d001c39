"""Run a benchmark: split, train every neural method for the same wall-clock budget, segment
the held-out test cases with every method, score them, and write the report.

Resolution: every method works on the test image at the *benchmark resolution* (in-plane
downsampling by ``factor``: area-averaged image, nearest-neighbour labels for training; HC18's
800x540 images become 200x135 with ``factor=4``). Predictions are brought back to the
original grid (probabilities by linear interpolation then argmax; binary masks of the classical
methods by nearest neighbour) and scored there, in mm with each case's own pixel/voxel size.
The CRF runs on the full-resolution image and upsampled probabilities.

Scoring: *foreground* = every nonzero label (for the CT phantom: organ including its lesion),
so binary classical methods and multi-class networks are compared on the same target. Dice,
Jaccard, sensitivity, precision from :func:`napari_attnseg.metrics.label_metrics`; HD95 in mm
(max of the two directed 95th percentiles); an empty prediction has an infinite HD95, which is
replaced by the image diagonal in mm (flagged ``hd95_substituted`` in the per-case CSV).
Means with seeded percentile bootstrap 95 % CIs (:func:`~napari_attnseg.benchmark.stats.bootstrap_ci`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._progress import Job, Progress
from .datasets import BenchmarkData, load_benchmark_data
from .methods import Method, build_network, parse_methods, run_classical
from .split import Split, apply_split, fixed_split
from .stats import bootstrap_ci

logger = logging.getLogger(__name__)

__all__ = ["BenchmarkConfig", "BenchmarkResult", "CaseResult", "MethodResult", "benchmark_job", "QUICK"]

METRIC_KEYS = ("dice", "jaccard", "sensitivity", "precision", "hd95")


@dataclass(frozen=True)
class BenchmarkConfig:
    """Benchmark settings (see ``attnseg benchmark --help``). ``None`` values are chosen from
    the data: ``factor`` 4 for HC18 else 1; ``patch_size`` the largest multiple of the
    network's divisor not above the median working image size (at most 256) per axis."""

    dataset: str = "phantoms"
    methods: tuple[str, ...] = ("all",)
    budget_seconds: float = 120.0
    split_seed: int = 0
    test_fraction: float = 0.2
    max_test_cases: int | None = None
    factor: int | None = None
    channels: tuple[int, ...] = (8, 16, 32, 64, 128)
    batch_size: int = 4
    patch_size: tuple[int, ...] | None = None
    steps_per_epoch: int = 20
    val_fraction: float = 0.2
    lr: float = 1e-3
    n_phantoms: int = 12
    phantom_seed: int = 2
    phantom_shape: tuple[int, ...] | None = None
    ac_iterations: int = 100
    n_bootstrap: int = 2000
    seed: int = 0
    threads: int | None = None
    quick: bool = False

    def __post_init__(self) -> None:
        if not float(self.budget_seconds) > 0:
            raise ValueError(f"budget_seconds must be positive, got {self.budget_seconds!r}")
        if self.factor is not None and int(self.factor) < 1:
            raise ValueError(f"factor must be a positive integer, got {self.factor!r}")
        if self.max_test_cases is not None and int(self.max_test_cases) < 1:
            raise ValueError(f"max_test_cases must be positive, got {self.max_test_cases!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


#: The ``--quick`` settings (a CI-sized run on small phantoms, well under a minute).
QUICK = {"budget_seconds": 3.0, "channels": (4, 8, 16), "batch_size": 2, "steps_per_epoch": 5,
         "n_phantoms": 6, "phantom_shape": (8, 64, 64), "test_fraction": 0.34, "max_test_cases": 2,
         "ac_iterations": 20, "n_bootstrap": 1000, "val_fraction": 0.25}


@dataclass
class CaseResult:
    method: str
    case: str
    subject: str
    metrics: dict[str, float]
    hd95_substituted: bool
    seconds: float


@dataclass
class MethodResult:
    method: Method
    train_seconds: float | None = None
    train_steps: int | None = None
    best_val_dice: float | None = None
    cases: list[CaseResult] = field(default_factory=list)

    def summary(self, n_bootstrap: int, seed: int) -> dict[str, Any]:
        row: dict[str, Any] = {"method": self.method.name, "description": self.method.description,
                               "n_cases": len(self.cases)}
        for k in METRIC_KEYS:
            mean, lo, hi = bootstrap_ci([c.metrics[k] for c in self.cases], n_bootstrap, seed)
            row[f"{k}_mean"], row[f"{k}_ci_low"], row[f"{k}_ci_high"] = mean, lo, hi
        row["train_seconds"] = self.train_seconds
        row["train_steps"] = self.train_steps
        row["best_val_dice"] = self.best_val_dice
        secs = [c.seconds for c in self.cases]
        row["infer_seconds_per_case"] = float(np.mean(secs)) if secs else math.nan
        return row


@dataclass
class BenchmarkResult:
    config: BenchmarkConfig
    data_name: str
    data_source: str
    licence: str
    modality: str
    split: Split
    test_cases: list[str]
    factor: int
    patch_size: tuple[int, ...]
    results: list[MethodResult]
    seconds: float
    environment: dict[str, Any] = field(default_factory=dict)

    def summary_rows(self) -> list[dict[str, Any]]:
        return [r.summary(self.config.n_bootstrap, self.config.seed) for r in self.results]


# --------------------------------------------------------------------------- helpers
def _downsample(pair, factor: int):
    """In-plane (last two axes) downsampling of a pair by ``factor`` (identity for 1)."""
    from .datasets import downsample_pair

    return downsample_pair(pair, factor)


def _upsample_probs(probs: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if probs.shape[1:] == tuple(shape):
        return probs
    from skimage.transform import resize

    out = resize(probs, (probs.shape[0],) + tuple(shape), order=1, anti_aliasing=False, preserve_range=True)
    out = np.clip(out, 0, None).astype(np.float32)
    return out / np.maximum(out.sum(axis=0, keepdims=True), 1e-12)


def _upsample_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if mask.shape == tuple(shape):
        return mask
    from skimage.transform import resize

    return resize(mask.astype(np.uint8), shape, order=0, anti_aliasing=False, preserve_range=True).astype(np.uint8)


def score_case(pred_fg: np.ndarray, gt_fg: np.ndarray, spacing: Sequence[float]) -> tuple[dict[str, float], bool]:
    """Foreground metrics of one case; HD95 = image diagonal (mm) when it is infinite."""
    from ..metrics import label_metrics

    row = label_metrics(pred_fg.astype(np.uint8), gt_fg.astype(np.uint8), spacing, 1)
    out = {k: float(row[k]) for k in METRIC_KEYS}
    substituted = False
    if not math.isfinite(out["hd95"]):
        out["hd95"] = float(np.sqrt(sum((n * s) ** 2 for n, s in zip(gt_fg.shape, spacing))))
        substituted = True
    return out, substituted


def _auto_patch(items_shapes: list[tuple[int, ...]], divisor: int) -> tuple[int, ...]:
    med = np.median(np.array(items_shapes), axis=0)
    return tuple(int(max(divisor, min(256, (int(m) // divisor) * divisor))) for m in med)


@dataclass
class _Model:
    """What the predictor needs: a network and its spec."""

    network: Any
    spec: Any
    folder: Any = None


def _relay(job: Job[Any], stage: str, done: int, total: int) -> Job[Any]:
    """Re-yield the progress of a nested job under one benchmark stage; return its result."""
    try:
        while True:
            p = next(job)
            yield Progress(done, total, stage, p.message, p.info)
    except StopIteration as stop:
        return stop.value
    finally:
        job.close()


# --------------------------------------------------------------------------- the job
def benchmark_job(config: BenchmarkConfig) -> Job[BenchmarkResult]:
    """Run the benchmark (a generator: yields Progress, returns a :class:`BenchmarkResult`)."""
    import platform

    import torch

    t0 = time.perf_counter()
    if config.quick:
        config = dataclasses.replace(config, **{k: v for k, v in QUICK.items()
                                                if getattr(config, k) == getattr(BenchmarkConfig, k)})
    methods = parse_methods(config.methods)
    if not methods:
        raise ValueError("no benchmark methods selected")
    yield Progress(0, 0, "data", f"loading {config.dataset}")
    data: BenchmarkData = load_benchmark_data(config.dataset, config.n_phantoms, config.phantom_seed,
                                              phantom_shape=config.phantom_shape)
    factor = int(config.factor) if config.factor is not None else (4 if data.kind == "hc18" else 1)
    split = fixed_split(data.pairs, config.split_seed, config.test_fraction)
    train_pairs, test_pairs = apply_split(data.pairs, split)
    if config.max_test_cases is not None:
        test_pairs = test_pairs[: int(config.max_test_cases)]
    case_names = [(p.image.source or p.group or f"case{i}").split("/")[-1] for i, p in enumerate(test_pairs)]
    if data.kind == "phantoms":
        case_names = [p.group for p in test_pairs]
    yield Progress(0, 0, "data", f"{len(train_pairs)} training and {len(test_pairs)} test cases; downsampling x{factor}")
    train_small = [_downsample(p, factor) for p in train_pairs]
    test_small = [_downsample(p, factor) for p in test_pairs]
    n_classes = len(data.label_names)
    divisor = 2 ** (len(config.channels) - 1)
    patch = tuple(config.patch_size) if config.patch_size else _auto_patch(
        [p.image.shape[-2:] for p in train_small], divisor)
    old_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(int(config.threads))
    used_threads = torch.get_num_threads()

    results = {m.name: MethodResult(m) for m in methods}
    neural = [m for m in methods if m.kind == "neural"]
    keys = list(dict.fromkeys(m.model_key for m in neural))
    total = len(keys) + len(methods)
    done = 0
    try:
        # ---- train one network per distinct model key (attention_unet and +crf share one)
        from ..model.checkpoint import ModelSpec
        from ..training.dataset import split_by_group
        from ..training.loop import TrainConfig, train_job

        fit, val = split_by_group(train_small, config.val_fraction, seed=config.seed)
        models: dict[tuple, tuple[_Model, Any]] = {}
        for key in keys:
            m = next(x for x in neural if x.model_key == key)
            torch.manual_seed(config.seed)
            net, arch = build_network(m, n_classes, config.channels, 2)
            spec = ModelSpec(arch=arch, label_names=data.label_names, modality=data.modality,
                             normalization={"preset": data.modality} if data.modality else {},
                             patch_size=patch, name=f"benchmark-{m.name}")
            tc = TrainConfig(epochs=100000, steps_per_epoch=config.steps_per_epoch, max_seconds=config.budget_seconds,
                             batch_size=config.batch_size, lr=config.lr, patch_size=patch, augment=m.augment,
                             early_stopping_patience=0, seed=config.seed, deep_supervision=m.deep_supervision,
                             num_threads=config.threads)
            res = yield from _relay(train_job(net, spec, fit, val, tc), f"train {m.name}", done, total)
            models[key] = (_Model(net, spec), res)
            done += 1
            for x in neural:
                if x.model_key == key:
                    results[x.name].train_seconds = float(res.seconds)
                    results[x.name].train_steps = int(res.steps)
                    results[x.name].best_val_dice = float(res.best_val_dice)

        # ---- test every method on every held-out case
        from ..crf import default_params, refine
        from ..inference.predictor import PredictConfig, predict

        pconf = PredictConfig(device="cpu", overlap=0.25, batch_size=4)
        pretrained: dict[str, Any] = {}
        for m in methods:
            for i, (full, small) in enumerate(zip(test_pairs, test_small)):
                yield Progress(done, total, f"test {m.name}", f"case {i + 1}/{len(test_pairs)}")
                shape = full.labels.shape
                t1 = time.perf_counter()
                if m.kind == "classical":
                    pred = _upsample_mask(run_classical(m, small.image.data, config.ac_iterations), shape) > 0
                elif m.kind == "pretrained":
                    if m.name not in pretrained:
                        from ..model import ModelRegistry, load_model

                        pretrained[m.name] = load_model(ModelRegistry().resolve(m.name[6:]))
                    out = predict(pretrained[m.name], small.image, pconf)
                    pred = _upsample_probs(out.probabilities, shape).argmax(0) > 0
                else:
                    model, _res = models[m.model_key]
                    out = predict(model, small.image, pconf)
                    probs = _upsample_probs(out.probabilities, shape)
                    if m.crf:
                        params = dataclasses.replace(default_params(data.modality if data.modality in ("CT", "MR", "US") else ""),
                                                     workers=1)
                        probs = refine(probs, np.asarray(full.image.data, np.float32), full.image.spacing, params).probabilities
                    pred = probs.argmax(0) > 0
                seconds = time.perf_counter() - t1
                metrics, sub = score_case(pred, np.asarray(full.labels.data) > 0, full.labels.spacing)
                results[m.name].cases.append(CaseResult(m.name, case_names[i], test_pairs[i].group, metrics, sub, seconds))
            done += 1
    finally:
        if config.threads:
            torch.set_num_threads(old_threads)
    env = {"machine": platform.machine(), "processor": platform.processor(), "python": platform.python_version(),
           "torch": torch.__version__, "threads": used_threads, "device": "cpu"}
    return BenchmarkResult(config, data.name, data.source, data.licence, data.modality, split, case_names, factor,
                           patch, [results[m.name] for m in methods], time.perf_counter() - t0, env)
