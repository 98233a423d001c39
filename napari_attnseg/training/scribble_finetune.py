"""A fine-tune from scribbles that pays off in a minute on 2 CPU cores (issue 13).

The user scribbles a few slices of a scan; :func:`scribble_finetune_job` adapts a copy of the
2D model to that scan so that the slices nobody touched improve too:

1. **Targets.** Each scribbled slice is corrected as the Scribble widget corrects it
   (:func:`~napari_attnseg.interactive.correct_slice`: the model's probabilities, geodesic
   stroke evidence, hard constraints, dense CRF; or the corrected labels the caller already
   has), and the corrected slice becomes a *dense* pseudo-label: the stroke pixels are certain,
   a band of ``ignore_band_px`` around the pseudo-label's class boundaries is left out of the
   loss (where the correction is least sure). ``target="scribbles"`` trains on the strokes only
   (partial cross-entropy, optionally the gated-CRF term): the weak-supervision baseline.
2. **What adapts.** The decoder and output heads (``train="decoder"``; ``"norm"``: the
   normalisation layers' affine parameters; ``"all"``); batch-norm statistics stay frozen.
3. **Steps.** AdamW, a 5-step warm-up then a constant rate, until ``max_seconds`` of wall time
   (preparation included) or ``max_steps``: a run's weights at ``t`` s are those of a run with
   a ``t``-s budget (``snapshots``). By default on *whole* slices without augmentation, the
   encoder's outputs cached (each step runs the decoder only); crops (``patch_size``) and
   ``augment`` exist but lose on real scans (rarely seen periphery drifts, BENCHMARKS.md).
4. **Safeguard.** ``consistency`` > 0: the base model's own probabilities on untouched slices
   as a soft target (distillation: keeps what the base did right there); ``gate``: one
   scribbled slice is held out for ``gate_fraction`` of the budget, and the base weights are
   returned (``accepted=False``) unless the model then agrees better with its correction.

:func:`save_scribble_finetune` saves an accepted result as a new registry version.
Only 2D models (the scan is cut along axis 0 as inference cuts it).
"""

from __future__ import annotations

import copy
import math
import time
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._progress import Job, Progress, drain

__all__ = ["ScribbleFinetuneConfig", "ScribbleFinetuneResult", "ScribbleTargets", "prepare_targets",
           "predict_slices", "save_scribble_finetune", "scribble_finetune", "scribble_finetune_job"]

TARGETS = ("corrected", "scribbles")
TRAINABLE = ("decoder", "norm", "all")


@dataclass(frozen=True)
class ScribbleFinetuneConfig:
    """Options of :func:`scribble_finetune_job` (see the module docstring)."""

    target: str = "corrected"
    ignore_band_px: int = 1
    dice_weight: float = 1.0
    pairwise_weight: float = 0.0
    train: str = "decoder"
    lr: float = 3e-4
    warmup_steps: int = 5
    batch_size: int = 4
    patch_size: int | None = None
    #: 1.0: on 10 unseen ACDC volumes, 60 s, the untouched slices gained +0.013 [+0.002, +0.029]
    #: with it (7/10 better) and +0.019 [-0.019, +0.057] without (5/10 worse): BENCHMARKS.md (c)
    consistency: float = 1.0
    consistency_batch: int = 2
    augment: bool = False
    mirror: bool = True
    gate: bool = False
    gate_fraction: float = 0.3
    max_seconds: float | None = 60.0
    max_steps: int | None = None
    seed: int = 0
    num_threads: int | None = None
    snapshots: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.train not in TRAINABLE:
            raise ValueError(f"train must be one of {TRAINABLE}, got {self.train!r}")
        if self.max_seconds is None and self.max_steps is None:
            raise ValueError("give max_seconds or max_steps (a run needs an end)")
        for name in ("lr", "batch_size") + (("patch_size",) if self.patch_size is not None else ()):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("dice_weight", "pairwise_weight", "consistency", "ignore_band_px", "warmup_steps"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")
        if not 0.0 < self.gate_fraction < 1.0:
            raise ValueError(f"gate_fraction must be in (0, 1), got {self.gate_fraction!r}")
        object.__setattr__(self, "snapshots", tuple(sorted(float(s) for s in self.snapshots)))


@dataclass
class ScribbleTargets:
    """The scan on the model's grid: ``images`` (Z, C, H, W) the network's input per slice,
    normalized as inference does (C = 1, or a 2.5D model's slice and neighbours),
    ``base_probs`` (Z, C, H, W) the base model's, ``slices``: the scribbled slices,
    ``labels``/``weights`` (Z, H, W): targets and loss weights (0 where unannotated),
    ``scribbles`` (Z, H, W): the strokes (``ignore`` elsewhere), ``seconds`` to prepare."""

    images: np.ndarray
    base_probs: np.ndarray
    slices: list[int]
    labels: np.ndarray
    weights: np.ndarray
    scribbles: np.ndarray
    ignore: int
    seconds: float = 0.0


@dataclass(frozen=True)
class ScribbleFinetuneResult:
    """``network``: the adapted copy (eval mode; the base's weights when not accepted);
    ``accepted``: whether adapted weights were kept; ``note``: one sentence for the user;
    ``snapshots``: {seconds: state_dict} for ``config.snapshots``; ``gate``: the held-out check
    (slice, base and adapted agreement) when ``config.gate``."""

    network: Any
    accepted: bool
    steps: int
    seconds: float
    note: str
    targets: ScribbleTargets
    snapshots: dict[float, dict] = field(default_factory=dict)
    gate: dict | None = None
    losses: list[float] = field(default_factory=list)


# --------------------------------------------------------------------------- preparation
def predict_slices(network: torch.nn.Module, images: np.ndarray, batch: int = 4) -> np.ndarray:
    """Softmax probabilities (Z, K, H, W) of ``network`` on normalized slices (Z, H, W) or
    network inputs (Z, C, H, W), each slice whole (padded to the network's divisor), eval
    mode, no autograd."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    was = network.training
    network.eval()
    div = int(getattr(network, "divisor", 1))
    out = []
    try:
        with torch.no_grad():
            for i in range(0, images.shape[0], batch):
                chunk = images[i:i + batch]
                x = np.pad(chunk, [(0, 0), (0, 0)] + [(0, (-n) % div) for n in chunk.shape[2:]])
                p = torch.softmax(network(torch.from_numpy(x.astype(np.float32))).float(), dim=1)
                out.append(p.numpy()[:, :, :chunk.shape[2], :chunk.shape[3]])
    finally:
        network.train(was)
    return np.concatenate(out).astype(np.float32)


def prepare_targets(base: Any, image: Any, scribbles: Any, config: ScribbleFinetuneConfig | None = None,
                    params: Any = None, *, corrected: Any = None, probabilities: Any = None,
                    ignore: int | None = None) -> ScribbleTargets:
    """The training targets of a scribbled scan (see the module docstring, step 1).

    ``base``: a LoadedModel (2D); ``image``: a :class:`~napari_attnseg.volume.Volume` (3D, cut
    along axis 0; a 2D image is one slice); ``scribbles``: the image's shape, a class where a
    stroke was drawn and ``ignore`` (default ``interactive.IGNORE``) elsewhere; ``corrected``:
    labels the caller already corrected (used on the scribbled slices instead of computing
    the correction); ``probabilities`` (C, *image shape): the base probabilities to correct
    (default: the base model's on each slice); ``params``: the ScribbleParams of the correction.
    """
    from ..interactive import IGNORE, ScribbleParams, correct_slice, enforce_scribbles
    from ..interactive.scribbles import stray_values, stray_values_message
    from .dataset import _normalize
    from .scribble_batches import boundary_band

    t0 = time.perf_counter()
    config = config or ScribbleFinetuneConfig()
    ignore = IGNORE if ignore is None else int(ignore)
    if base.spec.arch.spatial_dims != 2:
        raise ValueError("the scribble fine-tune adapts 2D models only (this one is "
                         f"{base.spec.arch.spatial_dims}D)")
    raw = np.asarray(image.data)
    scr = np.asarray(scribbles)
    if scr.shape != raw.shape:
        raise ValueError(f"scribbles have shape {scr.shape} but the image has {raw.shape}")
    images = _normalize(image, base.spec).astype(np.float32)
    n_classes = base.spec.arch.out_channels
    from ..inference import preprocess as pp

    # the slices as the model cuts them (axial whatever the storage order, and transposed and
    # reversed to the orientation it declares); the targets stay in that frame, only the
    # adapted weights leave it
    reo = pp.slice_reorientation(base.spec, image)
    if not reo.is_identity:
        stored = np.shape(image.data)
        raw, scr, images = (np.ascontiguousarray(pp.to_canonical(a, reo)) for a in (raw, scr, images))
        if corrected is not None:
            corrected = pp.to_canonical(np.asarray(corrected).reshape(stored), reo)
        if probabilities is not None:
            probabilities = pp.to_canonical(np.asarray(probabilities, np.float32).reshape(
                (n_classes,) + stored), reo, channels_first=True)
    if raw.ndim == 2:
        raw, scr, images = raw[None], scr[None], images[None]
    # the network works at the model's scale (its inplane_zoom and declared pixel sizes), as
    # inference and the corrected-labels fine-tune cut slices: a 0.7 mm scan trains a
    # 1.37-1.68 mm model at 1.37 mm. The strokes are corrected at the scan's own pixels (thin
    # strokes survive), the targets then resized to the model's grid.
    shape = pp.inplane_shape(raw.shape, pp.model_inplane_factors(base.spec, image, reo.perm))
    resized = shape != raw.shape
    if resized:
        images = pp.resize_inplane(images, shape)
    from ..inference.preprocess import stack_context

    # (Z, C, H, W): each slice as the network takes it (with its neighbours for a 2.5D model)
    images = np.ascontiguousarray(np.moveaxis(stack_context(images, int(base.spec.context_slices)), 0, 1))
    drawn = scr != ignore
    bad = stray_values(scr, n_classes, ignore)
    if bad:
        raise ValueError("scribbles hold " + stray_values_message(bad, n_classes, ignore))
    slices = [int(z) for z in np.flatnonzero(drawn.reshape(drawn.shape[0], -1).any(axis=1))]
    if not slices:
        raise ValueError("no scribbles: draw strokes on some slices first")
    base_probs = predict_slices(base.network, images)
    if probabilities is not None:
        probs = np.moveaxis(np.asarray(probabilities, np.float32).reshape((n_classes,) + raw.shape), 0, 1)
    elif resized:  # the base's probabilities back on the scan's grid, as inference returns them
        from ..inference.predictor import resize_probabilities_inplane

        probs = np.moveaxis(resize_probabilities_inplane(np.moveaxis(base_probs, 1, 0), raw.shape), 0, 1)
    else:
        probs = base_probs
    labels = np.zeros(raw.shape, np.int64)
    weights = np.zeros(raw.shape, np.float32)
    sp = tuple(float(image.spacing[a]) for a in reo.perm)[-2:]
    params = params or ScribbleParams(modality=getattr(image, "modality", "") or "")
    for z in slices:
        if config.target == "scribbles":
            labels[z] = np.where(drawn[z], scr[z], 0)
            weights[z] = drawn[z]
            continue
        if corrected is not None:
            lab = enforce_scribbles(np.asarray(corrected).reshape(raw.shape)[z], scr[z], ignore)
        else:
            lab = correct_slice(probs[z], raw[z], scr[z], sp, params, ignore=ignore).labels
        labels[z] = lab
        w = ~boundary_band(lab, int(config.ignore_band_px))
        weights[z] = w | drawn[z]
    strokes = np.where(drawn, scr, ignore)
    if resized:
        labels, weights, strokes = (pp.resize_labels_inplane(a, shape) for a in (labels, weights, strokes))
    return ScribbleTargets(images, base_probs, slices, labels, weights, strokes, ignore,
                           time.perf_counter() - t0)


# --------------------------------------------------------------------------- training
def _agreement(net: torch.nn.Module, t: ScribbleTargets, z: int) -> float:
    """Mean foreground Dice of ``net`` against the targets of slice ``z`` (weighted pixels)."""
    from ..interactive.simulate import slice_dice

    pred = predict_slices(net, t.images[z:z + 1])[0].argmax(0)
    keep = t.weights[z] > 0
    return slice_dice(np.where(keep, pred, 0), np.where(keep, t.labels[z], 0))


def scribble_finetune_job(base: Any, image: Any = None, scribbles: Any = None,
                          config: ScribbleFinetuneConfig | None = None, params: Any = None, *,
                          targets: ScribbleTargets | None = None, corrected: Any = None,
                          probabilities: Any = None, ignore: int | None = None,
                          stop: Any = None) -> Job[ScribbleFinetuneResult]:
    """Adapt a copy of ``base`` to a scribbled scan (module docstring); yields Progress with
    ``info`` ``{"step", "loss", "seconds"}``. ``targets``: from :func:`prepare_targets` (its
    seconds count against the budget), else prepared in the job from ``image`` and
    ``scribbles`` (checked here, on the caller's thread); ``stop``: an Event-like, checked
    after every step (the weights so far are kept)."""
    from ..interactive import IGNORE

    config = config or ScribbleFinetuneConfig()
    if base.spec.arch.spatial_dims != 2:
        raise ValueError("the scribble fine-tune adapts 2D models only (this one is "
                         f"{base.spec.arch.spatial_dims}D)")
    if config.mirror and not getattr(base.spec, "mirrors", True):
        config = dataclasses.replace(config, mirror=False)  # no mirrored anatomy for side-named labels
    if targets is None:
        if image is None or scribbles is None:
            raise ValueError("give the image and its scribbles (or prepared targets)")
        scr = np.asarray(scribbles)
        if scr.shape != tuple(np.shape(image.data)):
            raise ValueError(f"scribbles have shape {scr.shape} but the image has {np.shape(image.data)}")
        if not (scr != (IGNORE if ignore is None else ignore)).any():
            raise ValueError("no scribbles: draw strokes on some slices first")
    return _job(base, image, scribbles, config, params, targets, corrected, probabilities, ignore, stop)


def _job(base, image, scribbles, config, params, targets, corrected, probabilities, ignore,
         stop) -> Job[ScribbleFinetuneResult]:
    t0 = time.perf_counter()
    if targets is None:
        yield Progress(0, config.max_steps or 0, "prepare", "correcting the scribbled slices")
        targets = prepare_targets(base, image, scribbles, config, params, corrected=corrected,
                                  probabilities=probabilities, ignore=ignore)
    else:
        t0 -= targets.seconds
    return (yield from _run(base, targets, config, stop, t0))


def _run(base: Any, t: ScribbleTargets, cfg: ScribbleFinetuneConfig, stop: Any,
         t0: float) -> Job[ScribbleFinetuneResult]:
    from .losses import DiceCELoss
    from .scribble_batches import CachedSlices, Sampler, forward, set_trainable, train_mode

    net = copy.deepcopy(base.network).cpu()
    old_threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    params = set_trainable(net, cfg.train)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    warm = max(1, int(cfg.warmup_steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    sparse = cfg.target == "scribbles"
    loss_fn = DiceCELoss(None, dice_weight=0.0 if sparse else float(cfg.dice_weight),
                         pairwise_weight=float(cfg.pairwise_weight))
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    gate_slice = t.slices[len(t.slices) // 2] if cfg.gate and len(t.slices) >= 2 else None
    gate: dict | None = None  # the held-out slice's agreement, base and adapted
    train_slices = [z for z in t.slices if z != gate_slice]
    cached = not cfg.augment and cfg.patch_size is None and cfg.train == "decoder"

    def make_sampler(slices):
        if cached:
            return CachedSlices(net, t, cfg, slices, int(net.divisor))
        return Sampler(t, cfg, slices, int(net.divisor))

    sampler = make_sampler(train_slices)
    if gate_slice is not None:
        gate = {"slice": gate_slice, "base": _agreement(base.network, t, gate_slice)}
    snaps: dict[float, dict] = {}
    pending = list(cfg.snapshots)
    losses: list[float] = []
    step, accepted, note = 0, True, ""

    def elapsed() -> float:
        return time.perf_counter() - t0

    def done(fraction: float = 1.0) -> bool:
        return ((cfg.max_seconds is not None and elapsed() >= fraction * cfg.max_seconds)
                or (cfg.max_steps is not None and step >= fraction * cfg.max_steps))

    total = cfg.max_steps or 0
    try:
        train_mode(net)
        while not done():
            inp, lab, msk = sampler.batch(rng)
            out = forward(net, inp)
            x = torch.from_numpy(inp[0] if isinstance(inp, tuple) else inp)
            loss = loss_fn([o.float() for o in out], torch.from_numpy(lab), torch.from_numpy(msk),
                           image=x if cfg.pairwise_weight else None)
            cons = sampler.consistency(rng)
            if cons is not None:
                oc = forward(net, cons[0])[0]
                target = torch.from_numpy(cons[1])
                loss = loss + cfg.consistency * -(target * F.log_softmax(oc.float(), 1)).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 12.0)
            opt.step()
            sched.step()
            step += 1
            lv = float(loss.detach())
            losses.append(lv)
            while pending and elapsed() >= pending[0]:
                snaps[pending.pop(0)] = {k: v.detach().clone() for k, v in net.state_dict().items()}
            yield Progress(step, total, "train", f"step {step} loss {lv:.4f}",
                           {"step": step, "loss": lv, "seconds": round(elapsed(), 2)})
            if stop is not None and stop.is_set():
                note = "stopped; "
                break
            if gate is not None and "adapted" not in gate and done(cfg.gate_fraction):
                gate["adapted"] = _agreement(net, t, gate_slice)
                gate["step"] = step
                train_mode(net)
                if gate["adapted"] < gate["base"]:
                    accepted = False
                    break
                sampler = make_sampler(t.slices)  # from now on with every scribbled slice
    finally:
        if cfg.num_threads:
            torch.set_num_threads(old_threads)
        net.eval()
    if not accepted:
        net.load_state_dict(base.network.state_dict())
        snaps = {s: {k: v.detach().clone() for k, v in base.network.state_dict().items()}
                 for s in cfg.snapshots}
        note += (f"not adapted: after {gate['step']} steps the model agreed less with the held-out "
                 f"scribbled slice {gate_slice} (Dice {gate['adapted']:.3f}) than the base did "
                 f"({gate['base']:.3f}); the base weights are kept")
    else:
        for s in pending:  # budgets the run never reached: its final weights
            snaps[s] = {k: v.detach().clone() for k, v in net.state_dict().items()}
        note += (f"adapted on {len(t.slices)} scribbled slice{'s' if len(t.slices) != 1 else ''} "
                 f"({cfg.target}, {cfg.train}) in {step} steps, {elapsed():.0f} s")
        if gate is not None and "adapted" in gate:
            note += (f"; held-out slice {gate_slice}: Dice vs its correction {gate['base']:.3f} -> "
                     f"{gate['adapted']:.3f} after {gate['step']} steps")
    return ScribbleFinetuneResult(net, accepted, step, round(elapsed(), 3), note, t, snaps, gate, losses)


def scribble_finetune(*args: Any, **kwargs: Any) -> ScribbleFinetuneResult:
    """:func:`scribble_finetune_job` drained."""
    return drain(scribble_finetune_job(*args, **kwargs))


def save_scribble_finetune(base: Any, result: ScribbleFinetuneResult, registry: Any = None,
                           name: str | None = None, *, activate: bool = False) -> Any:
    """Save an accepted result as a new version of ``name`` (default: the base's registry name;
    a base outside the registry needs ``name``) with its provenance; returns the entry. Not
    activated unless ``activate``: nothing validated it on whole slices the user checked."""
    import dataclasses
    import datetime as _dt

    from ..errors import TrainingDataError
    from ..model.registry import ModelRegistry
    from .finetune import _target

    if not result.accepted:
        raise TrainingDataError(f"nothing to save: {result.note}")
    registry = registry if registry is not None else ModelRegistry()
    name = _target(base, registry, name)
    registry.check_writable(name)
    t = result.targets
    provenance = {
        "kind": "scribble-finetune", "base_model": base.model_id, "scribbled_slices": t.slices,
        "scribbled_voxels": int((t.scribbles != t.ignore).sum()), "steps": result.steps,
        "seconds": result.seconds, "note": result.note, "gate": result.gate,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    spec = dataclasses.replace(base.spec, provenance=provenance, views=())  # the model alone is tuned
    return registry.add_version(name, result.network, spec, parent=base.model_id, activate=activate)

