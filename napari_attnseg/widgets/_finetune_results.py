"""What the Fine-tune widget says and writes after a run: the result line (what was saved and
activated, and why; for scribbles, the caveat of a validation that cannot be judged), the
cancelled line, the time-budget status, and the re-segmented labels."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._finetune_request import MODE_SCRIBBLES, TWO_VAL_FROM, TrainRequest


def result_text(result: Any, mode: str = "") -> str:
    """The result line of a finished fine-tune (:class:`~napari_attnseg.training.finetune.
    FinetuneResult`); the run is made with ``activate_on_stop=False``, so Stop never changes the
    active model."""
    entry = result.entry
    stopped = getattr(result.train_result, "stopped", "") == "stopped"
    dice = (f"{'Stopped: ' if stopped else ''}held-out Dice before {result.before_dice:.3f}"
            f" → {'best ' if entry is None else 'after '}{result.after_dice:.3f}")
    n_val = int(getattr(result, "val_slices", 0) or 0)
    if n_val:
        dice += f" on {n_val} held-out slice{'s' if n_val != 1 else ''}"
        if mode == MODE_SCRIBBLES:
            dice += " (their strokes only)"
    if entry is None:  # no epoch beat the base: no version was written
        text = (f"{dice}. No improvement within the budget: nothing saved; the previous version "
                "stays active.")
    else:
        text = f"{dice}; saved as {entry.ref}. "
        if result.activated:
            text += f"{entry.ref} is now active."
        else:
            why = "; ".join(getattr(result, "not_activated_because", ()) or ())
            if not why and stopped:
                why = "training was stopped"
            text += (f"Not activated{(' because ' + why) if why else ''}: the previous version stays "
                     f"active; you can still pick v{entry.version}.")
    if mode == MODE_SCRIBBLES and n_val < 2:
        text += (f" Caveat: validated on {n_val} scribbled slice{'s' if n_val != 1 else ''} only, too few "
                 "to tell whether the model got better or worse; "
                 + ("it was not activated. " if entry is not None else "")
                 + f"Scribble {TWO_VAL_FROM} or more slices for a verdict.")
    return text


def cancelled_text(req: TrainRequest) -> str:
    from ..errors import ModelError
    from ..model.registry import ModelRegistry

    reg = ModelRegistry()
    new = [e for e in reg.versions(req.name) if e.version not in req.versions_before]
    try:
        active = reg.get(req.name) if reg.versions(req.name) else None
    except ModelError:
        active = None
    act = f"{active.ref} stays active" if active else "the active model is unchanged"
    if not new:
        return f"Cancelled: nothing saved; {act}."
    return f"Cancelled, but {new[-1].ref} was already saved (not activated); {act}."


def budget_status(p: Any, budget: float) -> tuple[str, int]:
    """(status text, bar value 0..100) for a progress report of a run with a time budget: the
    elapsed / budget seconds (the epoch count is only an internal cap then)."""
    info = p.info
    elapsed = float(info.get("seconds") or 0.0)
    text = f"{elapsed:.0f} s / {budget:.0f} s"
    if p.stage == "train" and info.get("loss") is not None:
        text += f" · loss {float(info['loss']):.4f}"
    elif p.stage == "validate" and info.get("val_dice") is not None:
        text += f" · validation Dice {float(info['val_dice']):.4f}"
        if info.get("best_val_dice") is not None:
            text += f" (best {float(info['best_val_dice']):.4f})"
    return text, int(min(100.0, 100.0 * elapsed / float(budget)))


def resegmented(pred_labels: Any, user: np.ndarray, reviewed: np.ndarray | None,
                mode: str) -> np.ndarray:
    """The new prediction where the user's work wins: corrected labels keep their reviewed
    slices; scribbles (``user`` = the scribbles layer's values) keep every stroke's class."""
    out = np.asarray(pred_labels)
    if mode == MODE_SCRIBBLES:
        from ..interactive import IGNORE, enforce_scribbles
        from ._scribble_jobs import to_core_scribbles

        core = to_core_scribbles(user)
        dtype = np.uint8 if int(out.max(initial=0)) <= 255 else out.dtype
        return enforce_scribbles(out.astype(dtype), core, IGNORE)
    out = out.astype(user.dtype, copy=True)
    if out.ndim == 3 and reviewed is not None:
        out[reviewed] = user[reviewed]
    return out
