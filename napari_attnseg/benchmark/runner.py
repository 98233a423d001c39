"""Run a benchmark: split, train every neural method for the same budget (wall-clock seconds,
or, with ``steps``, the same number of optimizer steps) once per training seed, segment the
held-out test cases with every method, score them, and write the report.

Split (``split``): ``"shared"`` is the fixed patient split of the shipped models
(:func:`napari_attnseg.benchmark.splits.shared_split`: ACDC, CHAOS, OpenKBP), ``"random"`` the
seeded subject split of :mod:`~napari_attnseg.benchmark.split` (HC18's shipped model was trained on
its ``split_seed=0`` training subjects), ``"auto"`` the shared split for those three datasets (by
folder name) and the random one otherwise.

Seeds (``seeds``): every neural method is trained once per seed (network initialisation, crop
sampling, augmentation); the validation subjects are the same for every seed (``seed``), so only
the training randomness varies. Classical methods and ``model:`` rows run once.

Resolution: every method works on the test image at the *benchmark resolution* (in-plane
downsampling by ``factor``: area-averaged image, nearest-neighbour labels for training; HC18's
800x540 images become 200x135 with ``factor=4``). Predictions are brought back to the
original grid (probabilities by linear interpolation then argmax; binary masks of the classical
methods by nearest neighbour) and scored there, in mm with each case's own pixel/voxel size.
The CRF runs on the full-resolution image and upsampled probabilities.

Shipped/trained models (``model:REF``) segment the full-resolution image through their own
configuration (its ``inplane_zoom`` and declared post-processing), as ``attnseg predict`` does.

Scoring (:mod:`~napari_attnseg.benchmark.scoring`): *foreground* = every nonzero label (for the
CT phantom: organ including its lesion; in a partially annotated case the contoured classes), so
binary classical methods and multi-class networks are compared on the same target; the networks'
and models' *class mean* (``mc_*``) besides. Dice,
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
from .datasets import BenchmarkData, downsample_pair, load_benchmark_data, upsample_mask, upsample_probs
from .methods import Method, build_network, parse_methods, run_classical
from .scoring import CLASS_KEYS, class_scores, foreground_target, score_case
from .split import Split, apply_split, fixed_split
from .stats import bootstrap_ci

logger = logging.getLogger(__name__)

__all__ = ["BenchmarkConfig", "BenchmarkResult", "CaseResult", "MethodResult", "benchmark_job", "QUICK",
           "score_case"]

METRIC_KEYS = ("dice", "jaccard", "sensitivity", "precision", "hd95")
SPLITS = ("auto", "shared", "random")


@dataclass(frozen=True)
class BenchmarkConfig:
    """Benchmark settings (see ``attnseg benchmark --help``). ``None`` values are chosen from
    the data: ``factor`` 4 for HC18 else 1; ``patch_size`` the largest multiple of the
    network's divisor not above the median working image size (at most 256) per axis."""

    dataset: str = "phantoms"
    methods: tuple[str, ...] = ("all",)
    budget_seconds: float = 120.0
    #: equal-step budget: every network makes exactly this many optimizer steps (no time limit;
    #: a multiple of ``steps_per_epoch``, validation runs after every epoch)
    steps: int | None = None
    #: training seeds (each network trained once per seed); None: ``(seed,)``
    seeds: tuple[int, ...] | None = None
    split: str = "auto"
    #: flips / 90-degree rotations in the augmentation (off for left/right organ pairs such as
    #: CHAOS's kidneys and OpenKBP's parotids, as their shipped models were trained)
    mirror: bool = True
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
        if self.steps is not None:
            if isinstance(self.steps, bool) or int(self.steps) != self.steps or self.steps < 1:
                raise ValueError(f"steps must be a positive integer, got {self.steps!r}")
        if self.seeds is not None:
            seeds = tuple(int(x) for x in self.seeds)
            if not seeds or len(set(seeds)) != len(seeds):
                raise ValueError(f"seeds must be distinct integers (at least one), got {self.seeds!r}")
            object.__setattr__(self, "seeds", seeds)
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")

    @property
    def training_seeds(self) -> tuple[int, ...]:
        return tuple(self.seeds) if self.seeds else (int(self.seed),)

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
    seed: int | None = None


@dataclass
class MethodResult:
    """One method trained with one seed (``seed`` None: no training, e.g. a classical method)."""

    method: Method
    seed: int | None = None
    train_seconds: float | None = None
    train_steps: int | None = None
    best_val_dice: float | None = None
    cases: list[CaseResult] = field(default_factory=list)

    def summary(self, n_bootstrap: int, seed: int) -> dict[str, Any]:
        row: dict[str, Any] = {"method": self.method.name, "seed": self.seed,
                               "description": self.method.description, "n_cases": len(self.cases)}
        for k in METRIC_KEYS + CLASS_KEYS:
            mean, lo, hi = bootstrap_ci([c.metrics.get(k, math.nan) for c in self.cases], n_bootstrap, seed)
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
    n_classes: int = 2
    spacing_unit: str = "mm"

    def summary_rows(self) -> list[dict[str, Any]]:
        return [r.summary(self.config.n_bootstrap, self.config.seed) for r in self.results]


# --------------------------------------------------------------------------- helpers
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
def _split_of(config: BenchmarkConfig, data: BenchmarkData) -> Split:
    from . import splits

    shared = config.split == "shared" or (config.split == "auto" and splits.has_rule(config.dataset))
    if shared:
        if not splits.has_rule(config.dataset):
            raise ValueError(f"split 'shared' needs one of the shared datasets (acdc, chaos_mr_t2, openkbp_ct), "
                             f"got {config.dataset}")
        return splits.shared_split(config.dataset)
    return fixed_split(data.pairs, config.split_seed, config.test_fraction)


def _train_config(config: BenchmarkConfig, m: Method, patch: tuple[int, ...], seed: int, mirror: bool = True):
    from ..training.loop import TrainConfig

    if config.steps is not None:  # equal steps: no time limit
        epochs, limit = int(config.steps) // int(config.steps_per_epoch), None
    else:
        epochs, limit = 100000, config.budget_seconds
    return TrainConfig(epochs=epochs, steps_per_epoch=config.steps_per_epoch, max_seconds=limit,
                       batch_size=config.batch_size, lr=config.lr, patch_size=patch, augment=m.augment,
                       mirror=mirror, early_stopping_patience=0, seed=seed, deep_supervision=m.deep_supervision,
                       num_threads=config.threads)


def _segment(m: Method, full, small, model, config: BenchmarkConfig, modality: str, pconf):
    """``(label map or None, binary mask or None)`` of method ``m`` on one test case, on the
    case's original grid."""
    import dataclasses as dc

    from ..inference.predictor import PredictConfig, predict

    shape = full.labels.shape
    if m.kind == "classical":
        return None, upsample_mask(run_classical(m, small.image.data, config.ac_iterations), shape)
    if m.kind == "pretrained":  # as attnseg predict: own resolution, post-processing, default options
        return np.asarray(predict(model, full.image, PredictConfig(device="cpu")).labels), None
    probs = upsample_probs(predict(model, small.image, pconf).probabilities, shape)
    if m.crf:
        from ..crf import default_params, refine

        params = dc.replace(default_params(modality if modality in ("CT", "MR", "US") else ""), workers=1)
        probs = refine(probs, np.asarray(full.image.data, np.float32), full.image.spacing, params).probabilities
    return probs.argmax(0), None


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
    if config.steps is not None and int(config.steps) % int(config.steps_per_epoch):
        raise ValueError(f"steps ({config.steps}) must be a multiple of steps_per_epoch "
                         f"({config.steps_per_epoch}): validation runs after every epoch")
    yield Progress(0, 0, "data", f"loading {config.dataset}")
    data: BenchmarkData = load_benchmark_data(config.dataset, config.n_phantoms, config.phantom_seed,
                                              phantom_shape=config.phantom_shape)
    factor = int(config.factor) if config.factor is not None else (4 if data.kind == "hc18" else 1)
    split = _split_of(config, data)
    train_pairs, test_pairs = apply_split(data.pairs, split)
    if config.max_test_cases is not None:
        test_pairs = test_pairs[: int(config.max_test_cases)]
    case_names = [(p.image.source or p.group or f"case{i}").split("/")[-1] for i, p in enumerate(test_pairs)]
    if data.kind == "phantoms":
        case_names = [p.group for p in test_pairs]
    yield Progress(0, 0, "data", f"{len(train_pairs)} training and {len(test_pairs)} test cases; downsampling x{factor}")
    train_small = [downsample_pair(p, factor) for p in train_pairs]
    test_small = [downsample_pair(p, factor) for p in test_pairs]
    n_classes = len(data.label_names)
    divisor = 2 ** (len(config.channels) - 1)
    patch = tuple(config.patch_size) if config.patch_size else _auto_patch(
        [p.image.shape[-2:] for p in train_small], divisor)
    old_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(int(config.threads))
    used_threads = torch.get_num_threads()

    mirror = bool(config.mirror)
    seeds = config.training_seeds
    runs = [(m, s) for m in methods for s in (seeds if m.kind == "neural" else (None,))]
    results = {(m.name, s): MethodResult(m, s) for m, s in runs}
    neural = [m for m in methods if m.kind == "neural"]
    keys = list(dict.fromkeys(m.model_key for m in neural))
    total = len(keys) * len(seeds) + len(runs)
    done = 0
    try:
        # ---- train one network per distinct model key and seed (attention_unet and +crf share one)
        from ..model.checkpoint import ModelSpec
        from ..training.dataset import split_by_group
        from ..training.loop import train_job

        fit, val = split_by_group(train_small, config.val_fraction, seed=config.seed)
        models: dict[tuple, Any] = {}
        for key in keys:
            m = next(x for x in neural if x.model_key == key)
            for seed in seeds:
                torch.manual_seed(seed)
                net, arch = build_network(m, n_classes, config.channels, 2)
                spec = ModelSpec(arch=arch, label_names=data.label_names, modality=data.modality,
                                 normalization={"preset": data.modality} if data.modality else {},
                                 patch_size=patch, name=f"benchmark-{m.name}")
                stage = f"train {m.name}" + (f" seed {seed}" if len(seeds) > 1 else "")
                res = yield from _relay(train_job(net, spec, fit, val, _train_config(config, m, patch, seed, mirror)),
                                        stage, done, total)
                models[(key, seed)] = _Model(net, spec)
                done += 1
                for x in neural:
                    if x.model_key == key:
                        r = results[(x.name, seed)]
                        r.train_seconds, r.train_steps = float(res.seconds), int(res.steps)
                        r.best_val_dice = float(res.best_val_dice)

        # ---- test every method (and seed) on every held-out case
        from ..inference.predictor import PredictConfig

        pconf = PredictConfig(device="cpu", overlap=0.25, batch_size=4)
        pretrained: dict[str, Any] = {}
        for m, seed in runs:
            model = None
            if m.kind == "pretrained":
                if m.name not in pretrained:
                    from ..model import ModelRegistry, load_model

                    pretrained[m.name] = load_model(ModelRegistry().resolve(m.name[6:]))
                model = pretrained[m.name]
            elif m.kind == "neural":
                model = models[(m.model_key, seed)]
            for i, (full, small) in enumerate(zip(test_pairs, test_small)):
                yield Progress(done, total, f"test {m.name}" + ("" if seed is None or len(seeds) == 1 else f" seed {seed}"),
                               f"case {i + 1}/{len(test_pairs)}")
                t1 = time.perf_counter()
                labels, mask = _segment(m, full, small, model, config, data.modality, pconf)
                seconds = time.perf_counter() - t1
                gt = np.asarray(full.labels.data)
                pred_fg, gt_fg = foreground_target(labels, mask, gt, n_classes, full.known)
                metrics, sub = score_case(pred_fg, gt_fg, full.labels.spacing)
                if labels is not None:
                    metrics.update(class_scores(labels, gt, full.labels.spacing, n_classes, full.known))
                results[(m.name, seed)].cases.append(
                    CaseResult(m.name, case_names[i], test_pairs[i].group, metrics, sub, seconds, seed))
            done += 1
    finally:
        if config.threads:
            torch.set_num_threads(old_threads)
    env = {"mirror": mirror, "machine": platform.machine(), "processor": _cpu_name(), "python": platform.python_version(),
           "torch": torch.__version__, "threads": used_threads, "device": "cpu"}
    return BenchmarkResult(config, data.name, data.source, data.licence, data.modality, split, case_names, factor,
                           patch, [results[(m.name, s)] for m, s in runs], time.perf_counter() - t0, env,
                           n_classes, data.spacing_unit)


def _cpu_name() -> str:
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
