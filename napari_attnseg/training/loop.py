"""The training loop shared by the quick fine-tune and full training: a generator job.

``train_job`` trains ``network`` **in place** on random (augmented) crops of the reviewed
voxels of ``train_pairs`` with Dice + CE (deep supervision), AdamW and a polynomial learning
rate decay, validates on ``val_pairs`` after every epoch (Dice over reviewed voxels, foreground
classes), keeps the best weights, stops early when the validation Dice stops improving, and
yields a :class:`~napari_attnseg._progress.Progress` after every step.

Ending a run:

* normal end, early stopping, the time budget, or ``stop`` (a ``threading.Event``-like object
  with ``is_set()``, checked after every batch): the job *returns* a :class:`TrainResult` with
  the best weights (also loaded into ``network``);
* closing the generator (cancel): stops at the current yield, loads the best weights seen so far
  into ``network`` and returns nothing;
* a non-finite loss or gradient raises :class:`TrainingError` before the optimizer step, with the
  best weights restored.

Resuming: with ``checkpoint_dir``, the full state (network, optimizer, scheduler, RNG states,
epoch, history, best weights) is written atomically after every epoch (rank 0 only);
``resume=True`` continues from it and reaches the same result as an uninterrupted run on the
CPU (seeded generators, no worker processes, deterministic algorithms requested).

Distributed: when ``torch.distributed`` is initialized (e.g. under ``torchrun``), the network is
wrapped in DistributedDataParallel; every rank draws the same global batch of sample seeds and
builds only its share, and the loss is computed on global batch statistics, so the loss curve
matches a single-process run with the same global batch (exactly, up to floating point, for
instance/group norm; batch-norm statistics are per rank).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._options import choose
from .._progress import Job, Progress, drain
from ..errors import AttnsegError, ModelError
from .dataset import FG_SAMPLING, BatchSampler, PreparedItem, TrainingPair, prepare_pairs
from .losses import DiceCELoss
from .partial_labels import unknown_mask

logger = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainResult", "TrainingError", "evaluate_dice", "train", "train_job"]

PRECISIONS = ("fp32", "bf16")
STOP_REASONS = ("completed", "early_stopping", "time_budget", "stopped")
CHECKPOINT_FILE = "checkpoint.pt"


class TrainingError(AttnsegError):
    """Training could not go on (e.g. the loss became NaN); the message says what to change."""


@dataclass(frozen=True)
class TrainConfig:
    """Training options (frozen: snapshot them on the GUI thread)."""

    epochs: int = 20
    steps_per_epoch: int = 25
    max_seconds: float | None = None
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patch_size: tuple[int, ...] = (128, 128)
    augment: bool = True
    #: flips and 90-degree rotations among the augmentations (off for classes named by side)
    mirror: bool = True
    freeze_encoder: bool = False
    val_fraction: float = 0.2
    min_val_slices: int = 1
    early_stopping_patience: int = 5
    seed: int = 0
    precision: str = "fp32"
    deep_supervision: bool = True
    ds_weights: tuple[float, ...] | None = None
    channels_last: bool = True
    num_threads: int | None = None
    grad_clip: float = 12.0
    #: sparse labels (scribbles): weight of the Dice term (0: partial cross-entropy only) and of
    #: the pairwise gated-CRF term that spreads the supervision along the image (losses.py)
    dice_weight: float = 1.0
    pairwise_weight: float = 0.0
    #: the foreground-centred third of the crops: "voxel", a random labelled voxel (big organs
    #: dominate); "class", a class drawn uniformly first (dataset.BatchSampler)
    fg_sampling: str = "voxel"

    def __post_init__(self) -> None:
        for name in ("epochs", "steps_per_epoch", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
            object.__setattr__(self, name, int(v))
        if self.max_seconds is not None and not float(self.max_seconds) > 0:
            raise ValueError(f"max_seconds must be positive (or None), got {self.max_seconds!r}")
        if not (math.isfinite(float(self.lr)) and float(self.lr) > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if float(self.weight_decay) < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        patch = tuple(int(p) for p in self.patch_size)
        if len(patch) not in (2, 3) or any(p < 1 for p in patch):
            raise ValueError(f"patch_size must be 2 or 3 positive integers, got {self.patch_size!r}")
        object.__setattr__(self, "patch_size", patch)
        if not 0.0 <= float(self.val_fraction) < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if int(self.early_stopping_patience) < 0:
            raise ValueError(f"early_stopping_patience must be >= 0 (0 = never stop early), got {self.early_stopping_patience!r}")
        object.__setattr__(self, "precision", choose(self.precision, PRECISIONS, "precision"))
        if self.ds_weights is not None:
            object.__setattr__(self, "ds_weights", tuple(float(w) for w in self.ds_weights))
        for name in ("dice_weight", "pairwise_weight"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")
        object.__setattr__(self, "fg_sampling", choose(self.fg_sampling, FG_SAMPLING, "fg_sampling"))
        if self.num_threads is not None and int(self.num_threads) < 1:
            raise ValueError(f"num_threads must be a positive integer, got {self.num_threads!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["patch_size"] = list(self.patch_size)
        if self.ds_weights is not None:
            d["ds_weights"] = list(self.ds_weights)
        return d


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced. ``state_dict`` holds the best weights (CPU tensors)."""

    state_dict: dict[str, torch.Tensor]
    best_val_dice: float
    initial_val_dice: float
    history: list[dict] = field(default_factory=list)
    stopped: str = "completed"
    seconds: float = 0.0
    steps: int = 0
    best_epoch: int = 0
    step_losses: list[float] = field(default_factory=list)


# --------------------------------------------------------------------------- helpers
def _dist_info() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _cpu_state(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in network.state_dict().items()}


def _pad_to(arr: np.ndarray, divisor: int, fill: Any, lead: int = 0) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Pad the spatial axes (after ``lead`` leading ones) up to multiples of ``divisor``; the
    crop back (spatial axes only)."""
    pads = [(0, 0)] * lead + [(0, (-s) % divisor) for s in arr.shape[lead:]]
    crop = tuple(slice(0, s) for s in arr.shape[lead:])
    if any(p[1] for p in pads):
        arr = np.pad(arr, pads, constant_values=fill)
    return arr, crop


def _autocast(precision: str, device: torch.device):
    import contextlib

    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def evaluate_dice(network: torch.nn.Module, items: Sequence[PreparedItem], n_classes: int,
                  patch_size: Sequence[int] | None = None, precision: str = "fp32",
                  device: torch.device | str = "cpu") -> float:
    """Mean foreground Dice of ``network`` over the trainable voxels of ``items`` (statistics
    pooled over all items per class; a class absent from both reference and prediction is
    skipped; 1.0 when every class is). 2D items run whole (padded to the divisor); 3D items
    larger than a few patches run through the sliding window."""
    device = torch.device(device)
    was_training = network.training
    network.eval()
    divisor = int(getattr(network, "divisor", 1))
    tp = np.zeros(n_classes, np.int64)
    fp = np.zeros(n_classes, np.int64)
    fn = np.zeros(n_classes, np.int64)
    try:
        with torch.no_grad():
            for it in items:
                chan = it.image.ndim > it.labels.ndim  # a 2.5D item: (2k + 1, H, W)
                big3d = it.labels.ndim == 3 and patch_size is not None and it.labels.size > 4 * int(np.prod(patch_size))
                if big3d:
                    from ..inference.sliding_window import sliding_window_job

                    def fn_(x: torch.Tensor) -> torch.Tensor:
                        with _autocast(precision, device):
                            return network(x).float()

                    probs = drain(sliding_window_job(fn_, it.image if chan else it.image[None], patch_size,
                                                     overlap=0.25, batch_size=2,
                                                     num_classes=n_classes, device=device, divisor=divisor))
                    pred = probs.argmax(0)
                else:
                    img, crop = _pad_to(it.image, divisor, 0.0, lead=1 if chan else 0)
                    x = torch.from_numpy(np.ascontiguousarray(img if chan else img[None]))[None].to(device)
                    with _autocast(precision, device):
                        out = network(x)
                    pred = out.float().argmax(1)[0].cpu().numpy()[crop]
                ref, m = it.labels[it.mask], pred[it.mask]
                for c in range(n_classes):
                    r, p = ref == c, m == c
                    tp[c] += int(np.count_nonzero(r & p))
                    # partially annotated: class c is unknown (not wrong) on ambiguous voxels
                    fp[c] += int(np.count_nonzero(~r & p & ~unknown_mask(ref, n_classes, c)))
                    fn[c] += int(np.count_nonzero(r & ~p))
    finally:
        network.train(was_training)
    fg = range(1, n_classes) if n_classes > 1 else range(n_classes)
    scores = [2 * tp[c] / (2 * tp[c] + fp[c] + fn[c]) for c in fg if (2 * tp[c] + fp[c] + fn[c]) > 0]
    return float(np.mean(scores)) if scores else 1.0


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


_RESUME_KEYS = ("steps_per_epoch", "batch_size", "lr", "weight_decay", "patch_size", "augment",
                "freeze_encoder", "seed", "precision", "deep_supervision", "ds_weights", "dice_weight",
                "pairwise_weight")


# --------------------------------------------------------------------------- the job
def train_job(network: torch.nn.Module, spec: Any, train_pairs: Sequence[TrainingPair],
              val_pairs: Sequence[TrainingPair], config: TrainConfig | None = None,
              checkpoint_dir: str | Path | None = None, resume: bool = False, *,
              stop: Any = None, device: str | torch.device = "cpu") -> Job[TrainResult]:
    """Train ``network`` (in place) — see the module docstring. Yields Progress with ``info``
    ``{"epoch", "step", "loss", "val_dice", "best_val_dice", "lr", "seconds"}``."""
    config = config or TrainConfig()
    device = torch.device(device)
    t0 = time.perf_counter()
    dims = spec.arch.spatial_dims
    n_classes = spec.arch.out_channels
    if len(config.patch_size) != dims:
        raise ValueError(f"patch_size {config.patch_size} has {len(config.patch_size)} axes; the model is {dims}D")
    divisor = int(network.divisor)
    bad = [p for p in config.patch_size if p % divisor]
    if bad:
        raise ValueError(f"patch_size {config.patch_size} must be multiples of the network's divisor {divisor}")
    if config.precision == "bf16" and device.type == "cpu" and not (
            torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        logger.warning("this CPU has no native bf16 instructions (AVX512-BF16 or AMX): bf16 training will be "
                       "much slower than fp32 here; use precision='fp32'")
    rank, world = _dist_info()
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the number of processes ({world})")

    train_items = prepare_pairs(train_pairs, spec, n_classes)
    val_items = prepare_pairs(val_pairs, spec, n_classes)
    if not train_items:
        raise ValueError("no training data: the training pairs have no reviewed voxels")
    if not val_items:
        raise ValueError("no validation data: the validation pairs have no reviewed voxels")
    sampler = BatchSampler(train_items, config.patch_size, augment=config.augment, mirror=config.mirror,
                           fg_sampling=config.fg_sampling)

    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    if config.num_threads:
        torch.set_num_threads(int(config.num_threads))
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)

    network.to(device)
    if config.channels_last and device.type == "cpu":
        network.to(memory_format=torch.channels_last if dims == 2 else torch.channels_last_3d)
    if hasattr(network, "channels_last"):
        network.channels_last = bool(config.channels_last)
    if config.freeze_encoder:
        for p in network.encoder.parameters():
            p.requires_grad_(False)
    params = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    total_steps = config.epochs * config.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: max(0.0, 1.0 - min(s, total_steps) / total_steps) ** 0.9)
    ds_weights = config.ds_weights if config.deep_supervision else (1.0,)
    loss_fn = DiceCELoss(ds_weights, distributed=world > 1, dice_weight=float(config.dice_weight),
                         pairwise_weight=float(config.pairwise_weight))
    model: torch.nn.Module = network
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(network, device_ids=[device.index] if device.type == "cuda" else None)

    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    history: list[dict] = []
    step_losses: list[float] = []
    start_epoch = 0
    best_state: dict[str, torch.Tensor] | None = None
    best_dice = -1.0
    best_epoch = 0
    initial_dice = float("nan")
    stale = 0
    elapsed_before = 0.0
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
    resumed = False
    if resume and ckpt_path is not None and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        saved = ck.get("config", {})
        diff = [k for k in _RESUME_KEYS if k in saved and saved[k] != config.to_dict()[k]]
        if diff:
            raise ModelError(f"{ckpt_path} was written with different settings ({', '.join(diff)}); "
                             "use the same settings or another checkpoint folder")
        network.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        rng.bit_generator.state = ck["np_rng"]
        torch.set_rng_state(ck["torch_rng"])
        history, step_losses = list(ck["history"]), list(ck["step_losses"])
        start_epoch, best_state, best_dice = int(ck["epoch"]), ck["best_state"], float(ck["best_dice"])
        best_epoch, initial_dice, stale = int(ck["best_epoch"]), float(ck["initial_dice"]), int(ck["stale"])
        elapsed_before = float(ck["seconds"])
        resumed = True
        logger.info("resuming from %s at epoch %d", ckpt_path, start_epoch)

    def seconds() -> float:
        return elapsed_before + time.perf_counter() - t0

    def sync_buffers() -> None:
        if world > 1:
            import torch.distributed as dist

            for b in network.buffers():
                dist.broadcast(b, 0)

    def set_train_mode() -> None:
        model.train()
        if config.freeze_encoder:
            network.encoder.eval()

    def restore_best() -> None:
        if best_state is not None:
            network.load_state_dict(best_state)

    def info(epoch: int, step: int, loss: float | None, val: float | None) -> dict[str, Any]:
        return {"epoch": epoch, "step": step, "loss": loss, "val_dice": val,
                "best_val_dice": best_dice if best_dice >= 0 else None,
                "lr": optimizer.param_groups[0]["lr"], "seconds": round(seconds(), 3)}

    stopped = "completed"
    finished = False
    try:
        if not resumed:
            initial_dice = evaluate_dice(network, val_items, n_classes, config.patch_size, config.precision, device)
            best_state, best_dice, best_epoch = _cpu_state(network), initial_dice, 0
            history.append({"epoch": 0, "step": 0, "loss": None, "val_dice": initial_dice, "lr": config.lr,
                            "seconds": round(seconds(), 3)})
            yield Progress(0, total_steps, "validate", f"initial validation Dice {initial_dice:.4f}",
                           info(0, 0, None, initial_dice))
        global_step = start_epoch * config.steps_per_epoch
        epoch = start_epoch
        while epoch < config.epochs and stopped == "completed":
            set_train_mode()
            losses = []
            for s in range(config.steps_per_epoch):
                seeds = sampler.sample_seeds(rng, config.batch_size)
                share = config.batch_size // world
                img, lab, msk = sampler.build(seeds[rank * share:(rank + 1) * share])
                x = torch.from_numpy(img).to(device)
                y = torch.from_numpy(lab).to(device)
                m = torch.from_numpy(msk).to(device)
                with _autocast(config.precision, device):
                    out = model(x)
                if not isinstance(out, (list, tuple)):
                    out = [out]
                loss = loss_fn([o.float() for o in out], y, m, image=x if config.pairwise_weight else None)
                lv = float(loss.detach())
                if not math.isfinite(lv):
                    raise TrainingError(
                        f"the training loss became {lv} at epoch {epoch + 1}, step {s + 1}; training stopped and the "
                        "best weights so far were kept. Lower the learning rate, or check the images for "
                        "corrupted (NaN/infinite) values")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                gn = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                if not math.isfinite(float(gn)):
                    raise TrainingError(
                        f"the gradients became non-finite at epoch {epoch + 1}, step {s + 1}; training stopped and the "
                        "best weights so far were kept. Lower the learning rate or use fp32")
                optimizer.step()
                scheduler.step()
                global_step += 1
                losses.append(lv)
                step_losses.append(lv)
                yield Progress(global_step, total_steps, "train",
                               f"epoch {epoch + 1}/{config.epochs} loss {lv:.4f}", info(epoch + 1, global_step, lv, None))
                if stop is not None and stop.is_set():
                    stopped = "stopped"
                elif config.max_seconds is not None and seconds() >= config.max_seconds:
                    stopped = "time_budget"
                if stopped != "completed":
                    break
            sync_buffers()
            val = evaluate_dice(network, val_items, n_classes, config.patch_size, config.precision, device)
            epoch += 1
            if val > best_dice:
                best_dice, best_state, best_epoch, stale = val, _cpu_state(network), epoch, 0
            else:
                stale += 1
            history.append({"epoch": epoch, "step": global_step, "loss": float(np.mean(losses)) if losses else None,
                            "val_dice": val, "lr": optimizer.param_groups[0]["lr"], "seconds": round(seconds(), 3)})
            if stopped == "completed" and config.early_stopping_patience and stale >= config.early_stopping_patience:
                stopped = "early_stopping"
            if ckpt_path is not None and rank == 0:
                _save_checkpoint(ckpt_path, {
                    "model": _cpu_state(network), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "np_rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(), "history": history, "step_losses": step_losses,
                    "epoch": epoch, "best_state": best_state, "best_dice": best_dice, "best_epoch": best_epoch,
                    "initial_dice": initial_dice, "stale": stale, "seconds": seconds(), "config": config.to_dict(),
                })
            yield Progress(global_step, total_steps, "validate",
                           f"epoch {epoch}/{config.epochs} validation Dice {val:.4f} (best {best_dice:.4f})",
                           info(epoch, global_step, history[-1]["loss"], val))
        finished = True
    finally:
        restore_best()
        network.eval()
        if config.num_threads:
            torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)
        if not finished:
            logger.info("training ended early (cancelled or failed); the best weights were kept")
    return TrainResult(
        state_dict=copy.deepcopy(best_state), best_val_dice=float(best_dice), initial_val_dice=float(initial_dice),
        history=history, stopped=stopped, seconds=round(seconds(), 3), steps=len(step_losses),
        best_epoch=best_epoch, step_losses=step_losses,
    )


def train(*args: Any, **kwargs: Any) -> TrainResult:
    """:func:`train_job` drained (for scripts and tests)."""
    return drain(train_job(*args, **kwargs))
