"""Quick fine-tune of a loaded model on corrected labels, saved as a new registry version.

``finetune_job`` snapshots its inputs when *called* (copies of the arrays, the reviewed-slice
split; a too-small selection raises ``ValueError`` right away, on the caller's thread), then
returns the generator that trains a **copy** of the base network (the loaded base is never
touched). The validation Dice on the held-out reviewed slices is measured before and after; the
best weights are saved atomically as a new version of ``name`` (parent = the base's model id;
provenance: data hashes, split, parameters, Dice before/after, time) and made active only if
they beat the base on the held-out slices. Otherwise the previous model stays active (made
explicit in the registry) and the new entry is still there for the user to choose.

Closing the generator (cancel) or an error saves nothing and changes nothing in the registry.
A cooperative ``stop`` event (``is_set()``) ends training within one batch and *does* save the
best weights seen so far (the GUI's Stop button); unless ``activate_on_stop=True`` such a stopped
run is never activated, even when it beat the base. When no epoch beat the base within the budget
the saved weights are the base's own (``FinetuneResult.unchanged``); they are never activated.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import __version__
from .._progress import Job, drain
from ..errors import ModelError
from ..volume import Volume
from .dataset import TrainingPair, data_hash, reviewed_slices, split_reviewed_slices
from .loop import TrainConfig, TrainResult, train_job

logger = logging.getLogger(__name__)

__all__ = ["FinetuneResult", "finetune", "finetune_job"]


@dataclass(frozen=True)
class FinetuneResult:
    """``entry``: the new registry version (None if nothing was saved); ``activated``: whether it
    became the active version (it beat the base on the held-out slices, and was not stopped when
    ``activate_on_stop`` is False); ``unchanged``: no epoch improved on the base, so the saved
    weights equal the base's ("no improvement within the budget")."""

    entry: Any
    before_dice: float
    after_dice: float
    activated: bool
    train_result: TrainResult
    unchanged: bool = False

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
    return TrainingPair(_snapshot_volume(pair.image), _snapshot_volume(pair.labels), rev, pair.group)


def finetune_job(base: Any, pairs: Sequence[TrainingPair], config: TrainConfig | None = None,
                 registry: Any = None, name: str | None = None, *, stop: Any = None,
                 device: str | torch.device = "cpu",
                 activate_on_stop: bool = False) -> Job[FinetuneResult]:
    """Fine-tune ``base`` (a :class:`~napari_attnseg.model.checkpoint.LoadedModel`) on ``pairs``.

    ``registry`` defaults to ``ModelRegistry()``; ``name`` to the base model's name.
    ``activate_on_stop``: whether a run ended by ``stop`` may become active when it beat the
    base (default False: Stop keeps the previous model active). Returns the job (a generator);
    see the module docstring for what it saves and activates.
    """
    from ..model.registry import ModelRegistry

    config = config or TrainConfig()
    registry = registry if registry is not None else ModelRegistry()
    name = name or base.spec.name
    if not pairs:
        raise ValueError("no image/labels pairs to fine-tune on")
    snap = [_snapshot(p) for p in pairs]
    train_pairs, val_pairs = split_reviewed_slices(snap, config.val_fraction, config.min_val_slices, config.seed)
    if len(config.patch_size) != base.spec.arch.spatial_dims:
        raise ValueError(f"patch_size {config.patch_size} does not fit the {base.spec.arch.spatial_dims}D model "
                         f"{base.model_id}")
    return _finetune(base, snap, train_pairs, val_pairs, config, registry, name, stop, device,
                     bool(activate_on_stop))


def _finetune(base: Any, pairs: list[TrainingPair], train_pairs: list[TrainingPair], val_pairs: list[TrainingPair],
              config: TrainConfig, registry: Any, name: str, stop: Any, device: Any,
              activate_on_stop: bool = False) -> Job[FinetuneResult]:
    from ..model.attention_unet import AttentionUNet

    network = AttentionUNet(base.spec.arch)
    network.load_state_dict({k: v.detach().clone() for k, v in base.network.state_dict().items()})
    result: TrainResult = yield from train_job(network, base.spec, train_pairs, val_pairs, config, stop=stop,
                                               device=device)
    network.load_state_dict(result.state_dict)
    network.to("cpu").eval()
    before, after = result.initial_val_dice, result.best_val_dice
    unchanged = result.best_epoch == 0  # no epoch beat the base: the best weights are the base's
    improved = after > before and not unchanged
    better = improved and (activate_on_stop or result.stopped != "stopped")
    provenance = {
        "kind": "finetune",
        "base_model": base.model_id,
        "base_folder": str(getattr(base, "folder", "")),
        "data": [{"sha256": data_hash(p), "image": p.image.source, "labels": p.labels.source,
                  "reviewed_slices": reviewed_slices(p)} for p in pairs],
        "split": {"train": [{"image": p.image.source, "slices": reviewed_slices(p)} for p in train_pairs],
                  "validation": [{"image": p.image.source, "slices": reviewed_slices(p)} for p in val_pairs]},
        "params": config.to_dict(),
        "val_dice_before": before,
        "val_dice_after": after,
        "best_epoch": result.best_epoch,
        "improved": improved,
        "activated": better,
        "stopped": result.stopped,
        "seconds": result.seconds,
        "steps": result.steps,
        "history": result.history,
        "attnseg_version": __version__,
        "torch_version": torch.__version__,
        "machine": platform.platform(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    spec = dataclasses.replace(base.spec, provenance=provenance)
    # make "the previous model stays active" explicit before a newer version exists
    if not better and registry.active(name) is None and base.spec.name == name:
        try:
            registry.set_active(name, base.spec.version)
        except (ModelError, ValueError) as exc:  # the base is not in this registry: nothing to pin
            logger.info("could not pin %s@%s as active: %s", name, base.spec.version, exc)
    entry = registry.add_version(name, network, spec, parent=base.model_id)
    if better:
        registry.set_active(name, entry.version)
    logger.info("fine-tuned %s -> %s (Dice %.4f -> %.4f, %s)", base.model_id, entry.ref, before, after,
                "activated" if better else "no improvement within the budget, not activated" if unchanged
                else "not activated")
    return FinetuneResult(entry=entry, before_dice=before, after_dice=after, activated=better, train_result=result,
                          unchanged=unchanged)


def finetune(*args: Any, **kwargs: Any) -> FinetuneResult:
    """:func:`finetune_job` drained."""
    return drain(finetune_job(*args, **kwargs))
