"""Quick fine-tune of a loaded model on corrected labels, saved as a new registry version.

``finetune_job`` checks and snapshots its inputs when *called* (on the caller's thread, before
any training), then returns the generator that trains a **copy** of the base network (the loaded
base is never touched). What it refuses up front (:class:`~napari_attnseg.errors.TrainingDataError`
or :class:`~napari_attnseg.errors.ModelError`, naming the data or model):

* reviewed slices with no foreground at all (empty labels, a soft mask rounded to 0, only
  background slices reviewed): predicting nothing on empty truth scores Dice 1.0, so such a
  run would always "win";
* fewer than two reviewed slices holding foreground (one must train, one must validate); the
  split is re-drawn (next seed) until both sides hold foreground;
* a base outside the registry (a renamed copy of a model folder) without an explicit ``name``:
  its config's name would otherwise receive the fine-tune and its default would change;
* an unwritable registry, an invalid name, or a broken ``active.json`` for the name.

The validation Dice on the held-out reviewed slices is measured before and after training.
**Nothing is saved unless the best epoch is strictly better than the base** (no new version that
equals the base). An improved model is saved atomically as a new version of ``name`` (parent =
the base's model id; provenance: data hashes, split, parameters, Dice before/after, time) and made
active in the same crash-safe step only when the improvement is trustworthy: at least two
validation slices, the run not stopped early (unless ``activate_on_stop``), and the base being the
version ``name`` currently refers to (or ``name`` being new). Otherwise it is saved but not
activated and :attr:`FinetuneResult.note` says why; the previous model stays active.

Closing the generator (cancel) or an error saves nothing and changes nothing in the registry.
A cooperative ``stop`` event (``is_set()``) ends training within one batch and keeps the best
weights seen so far (the GUI's Stop button), saved only if they beat the base.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from .._progress import Job, drain
from ..errors import ModelError, TrainingDataError
from ..volume import Volume
from .dataset import TrainingPair, data_hash, reviewed_mask, reviewed_slices, split_reviewed_slices
from .loop import TrainConfig, TrainResult, train_job

logger = logging.getLogger(__name__)

__all__ = ["FinetuneResult", "finetune", "finetune_job"]

#: how many seeds are tried for a split whose training and validation slices both hold foreground
SPLIT_TRIES = 64
#: from this many reviewed slices on, at least two are held out (one slice decides nothing alone)
TWO_VAL_FROM = 5


@dataclass(frozen=True)
class FinetuneResult:
    """``entry``: the new registry version, or None when nothing was saved (no epoch beat the
    base); ``activated``: whether it became the active version; ``unchanged``: no improvement,
    nothing saved; ``note``: one sentence for the user saying what was saved and activated, and
    why; ``not_activated_because``: the reasons a saved version was not activated (e.g. "it was
    validated on a single slice, ..."); ``val_slices``: the number of held-out slices; ``split``:
    the training and validation slices per image."""

    entry: Any
    before_dice: float
    after_dice: float
    activated: bool
    train_result: TrainResult
    unchanged: bool = False
    note: str = ""
    val_slices: int = 0
    split: dict = field(default_factory=dict)
    not_activated_because: tuple[str, ...] = ()

    @property
    def stopped(self) -> bool:
        """The run was ended by the stop event (the GUI's Stop button)."""
        return getattr(self.train_result, "stopped", "") == "stopped"


def _snapshot_volume(v: Volume) -> Volume:
    data = np.array(v.data, copy=True)
    data.setflags(write=False)
    return dataclasses.replace(v, data=data)


def _snapshot(pair: TrainingPair) -> TrainingPair:
    rev = None
    if pair.reviewed is not None:
        rev = np.array(pair.reviewed, dtype=bool, copy=True)
        rev.setflags(write=False)
    return dataclasses.replace(pair, image=_snapshot_volume(pair.image), labels=_snapshot_volume(pair.labels),
                               reviewed=rev)


def _describe(pairs: Sequence[TrainingPair]) -> str:
    names = [p.labels.source or p.image.source or p.group or f"labels #{i + 1}" for i, p in enumerate(pairs)]
    return ", ".join(str(n) for n in names[:3]) + (f" (and {len(names) - 3} more)" if len(names) > 3 else "")


def _foreground(pair: TrainingPair) -> tuple[int, list[int]]:
    """Foreground voxels among the reviewed ones of ``pair`` and the slices holding them."""
    fg = (np.asarray(pair.labels.data) > 0) & reviewed_mask(pair)
    if fg.ndim == 2:
        n = int(np.count_nonzero(fg))
        return n, [0] if n else []
    per_slice = fg.reshape(fg.shape[0], -1).sum(axis=1)
    return int(per_slice.sum()), [int(i) for i in np.flatnonzero(per_slice)]


def _foreground_voxels(pairs: Sequence[TrainingPair]) -> int:
    return sum(_foreground(p)[0] for p in pairs)


def _split(pairs: list[TrainingPair], config: TrainConfig) -> tuple[list[TrainingPair], list[TrainingPair], int]:
    """Training / validation pairs whose reviewed slices both hold foreground, and the seed used."""
    fg_slices = sum(len(_foreground(p)[1]) for p in pairs)
    if fg_slices == 0:
        raise TrainingDataError(
            f"{_describe(pairs)}: the reviewed slices hold no foreground (every reviewed voxel is background, "
            "label 0). A fine-tune on them can only learn to find nothing, and its validation would score a "
            "perfect Dice for predicting nothing; correct slices that show the structure (labels 1..N)")
    if fg_slices < 2:
        raise TrainingDataError(
            f"{_describe(pairs)}: only {fg_slices} reviewed slice holds foreground; need at least 2 reviewed slices "
            "with foreground (one to train on, one to validate on); correct or mark another slice that shows "
            "the structure")
    units = sum(len(reviewed_slices(p)) for p in pairs)
    min_val = max(int(config.min_val_slices), 2 if units >= TWO_VAL_FROM else 1)
    for k in range(SPLIT_TRIES):
        try:
            train, val = split_reviewed_slices(pairs, config.val_fraction, min_val, config.seed + k)
        except ValueError as exc:
            raise TrainingDataError(f"{_describe(pairs)}: {exc}") from exc
        if _foreground_voxels(train) and _foreground_voxels(val):
            return train, val, config.seed + k
    raise TrainingDataError(
        f"{_describe(pairs)}: no split of the {units} reviewed slices puts foreground on both the training "
        f"and the validation side ({fg_slices} slices hold foreground); review more slices that show the structure")


def _target(base: Any, registry: Any, name: str | None) -> str:
    """The registry name the fine-tune is saved under: ``name``, else the base's registry
    identity (from where its folder is, never from its config's name)."""
    from ..model.registry import check_name

    if name is None:
        identity = registry.identify(getattr(base, "folder", None))
        if identity is None:
            raise ModelError(
                f"the base model {getattr(base, 'folder', base.model_id)} is not a version in the registry "
                f"{registry.root} (a copy or a folder elsewhere); its config.json calls it '{base.spec.name}', but "
                "saving the fine-tune under that name would change that model's default. Give the fine-tune "
                "its own name (--name NEW on the command line, name= in Python)")
        name = identity.name
    return check_name(name)


def finetune_job(base: Any, pairs: Sequence[TrainingPair], config: TrainConfig | None = None,
                 registry: Any = None, name: str | None = None, *, stop: Any = None,
                 device: str | torch.device = "cpu",
                 activate_on_stop: bool = False) -> Job[FinetuneResult]:
    """Fine-tune ``base`` (a :class:`~napari_attnseg.model.checkpoint.LoadedModel`) on ``pairs``.

    ``registry`` defaults to ``ModelRegistry()``; ``name`` to the base's registry name (a base
    outside the registry needs ``name``). ``activate_on_stop``: whether a run ended by ``stop``
    may become active when it beat the base (default False: Stop keeps the previous model
    active). Returns the job (a generator); see the module docstring for what is checked here,
    saved and activated.
    """
    from ..model.registry import ModelRegistry

    config = config or TrainConfig()
    if config.mirror and not getattr(base.spec, "mirrors", True):
        # a model trained without flips (labels that name a side) is not taught mirrored anatomy
        config = dataclasses.replace(config, mirror=False)
    registry = registry if registry is not None else ModelRegistry()
    if not pairs:
        raise TrainingDataError("no image/labels pairs to fine-tune on")
    if len(config.patch_size) != base.spec.arch.spatial_dims:
        raise ValueError(f"patch_size {config.patch_size} does not fit the {base.spec.arch.spatial_dims}D model "
                         f"{base.model_id}")
    name = _target(base, registry, name)
    if registry.versions(name):
        registry.get(name)  # a broken active.json is reported now, not after the training
    snap = [_snapshot(p) for p in pairs]
    train_pairs, val_pairs, seed = _split(snap, config)
    registry.check_writable(name)  # an unwritable registry is reported before the training
    return _finetune(base, snap, train_pairs, val_pairs, config, registry, name, stop, device,
                     bool(activate_on_stop), seed)


def _current(registry: Any, name: str) -> tuple[Any, str]:
    """What ``name`` refers to now (None for a new name) and, if that cannot be told, why."""
    if not registry.versions(name):
        return None, ""
    try:
        return registry.get(name), ""
    except ModelError as exc:
        return None, f"'{name}' has no valid active version ({exc})"


def _finetune(base: Any, pairs: list[TrainingPair], train_pairs: list[TrainingPair], val_pairs: list[TrainingPair],
              config: TrainConfig, registry: Any, name: str, stop: Any, device: Any,
              activate_on_stop: bool = False, seed: int = 0) -> Job[FinetuneResult]:
    from ..model.attention_unet import AttentionUNet

    network = AttentionUNet(base.spec.arch)
    network.load_state_dict({k: v.detach().clone() for k, v in base.network.state_dict().items()})
    result: TrainResult = yield from train_job(network, base.spec, train_pairs, val_pairs, config, stop=stop,
                                               device=device)
    before, after = result.initial_val_dice, result.best_val_dice
    n_val = sum(len(reviewed_slices(p)) for p in val_pairs)
    split = {"train": [{"image": p.image.source, "slices": reviewed_slices(p)} for p in train_pairs],
             "validation": [{"image": p.image.source, "slices": reviewed_slices(p)} for p in val_pairs]}
    current, problem = _current(registry, name)
    keep = f"{current.ref} stays active" if current is not None else "the active model is unchanged"
    on = f"on {n_val} validation slice{'s' if n_val != 1 else ''}"
    dice = f"held-out Dice {before:.4f} -> {after:.4f} {on}"
    improved = result.best_epoch > 0 and math.isfinite(after) and after > before
    if not improved:
        note = f"no improvement (held-out Dice {before:.4f}, best epoch {after:.4f} {on}): nothing saved; {keep}"
        logger.info("fine-tune of %s: %s", base.model_id, note)
        return FinetuneResult(entry=None, before_dice=before, after_dice=after, activated=False,
                              train_result=result, unchanged=True, note=note, val_slices=n_val, split=split)
    reasons = []
    if result.stopped == "stopped" and not activate_on_stop:
        reasons.append("training was stopped before its budget ended")
    if n_val < 2:
        reasons.append("it was validated on a single slice, too few to trust automatically")
    if problem:
        reasons.append(problem)
    elif current is not None and Path(current.path).resolve() != Path(getattr(base, "folder", "")).resolve():
        reasons.append(f"its base {base.model_id} is not the version '{name}' refers to ({current.ref})")
    activate = not reasons
    provenance = {
        "kind": "finetune",
        "base_model": base.model_id,
        "base_folder": str(getattr(base, "folder", "")),
        "data": [{"sha256": data_hash(p), "image": p.image.source, "labels": p.labels.source,
                  "reviewed_slices": reviewed_slices(p)} for p in pairs],
        "split": split,
        "split_seed": seed,
        "validation": {"slices": n_val, "foreground_voxels": _foreground_voxels(val_pairs)},
        "params": config.to_dict(),
        "val_dice_before": before,
        "val_dice_after": after,
        "best_epoch": result.best_epoch,
        "improved": True,
        "activated": activate,
        "not_activated_because": reasons,
        "stopped": result.stopped,
        "seconds": result.seconds,
        "steps": result.steps,
        "history": result.history,
        "attnseg_version": __version__,
        "torch_version": torch.__version__,
        "machine": platform.platform(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    network.load_state_dict(result.state_dict)
    network.to("cpu").eval()
    spec = dataclasses.replace(base.spec, provenance=provenance, views=())  # the model alone is tuned
    entry = registry.add_version(name, network, spec, parent=base.model_id, activate=activate)
    if activate:
        note = f"{dice}: saved as {entry.ref}, now active"
    else:
        note = f"{dice}: saved as {entry.ref}, NOT activated because {'; '.join(reasons)}; {keep} (choose " \
               f"{entry.ref} to use it anyway)"
    logger.info("fine-tuned %s: %s", base.model_id, note)
    return FinetuneResult(entry=entry, before_dice=before, after_dice=after, activated=activate, train_result=result,
                          unchanged=False, note=note, val_slices=n_val, split=split,
                          not_activated_because=tuple(reasons))


def finetune(*args: Any, **kwargs: Any) -> FinetuneResult:
    """:func:`finetune_job` drained."""
    return drain(finetune_job(*args, **kwargs))
