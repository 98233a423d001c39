"""The Fine-tune widget's scribble fine-tune for 2D models (issue 13): a scribbles layer with a
2D base model runs :func:`~napari_attnseg.training.scribble_finetune.scribble_finetune_job`
(the scribbled slices, corrected, as dense pseudo-labels; decoder only) instead of the partial
cross-entropy path, which stays for 3D models, several pairs and corrected labels.

* **Targets.** The scan's corrected result layer (a labels layer on the scan's grid, not the
  scribbles, whose reviewed slices include every scribbled slice: what the Scribble widget
  corrected and the user saw; ``<scan> [attnseg]`` first) is passed as ``corrected``;
  without one the core corrects the scribbled slices itself.
* **Options.** :class:`ScribbleFinetuneConfig`'s own defaults, the budget from the form's
  seconds field, then ``widget.scribble_overrides`` (tests, experts).
* **Result.** A result the core's gate rejects (``accepted=False``) saves nothing and changes
  nothing; an accepted one is saved with :func:`save_scribble_finetune` as a new version and
  made active only under the fine-tune core's rules (improvement measured on at least two
  held-out slices, not stopped, the base being the version the name refers to): the gate
  holds out one slice, so today it is saved, not activated, and the line says why.

The job runs in the widget's worker; nothing here touches layers off the GUI thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._progress import Job, Progress
from ._finetune_request import MODE_SCRIBBLES, labels_mode, pair_problems
from ._scribble_jobs import to_core_scribbles

CORE_MODE_TEXT = ("Mode: scribbles, 2D model: the scribbled slices, corrected, train the "
                  "decoder for the seconds budget (the scribble fine-tune's own options); a "
                  "new version is saved, activated only when checked on held-out slices.")


@dataclass(frozen=True)
class ScribbleRequest:
    """A scribble fine-tune, copied on the GUI thread (the widget reads the same fields as
    from a :class:`~._finetune_request.TrainRequest`)."""

    base_path: Path
    name: str
    image: Any  # Volume, on the layer's grid
    scribbles: np.ndarray  # core values (class, IGNORE elsewhere)
    corrected: np.ndarray | None
    corrected_name: str | None
    config: Any  # ScribbleFinetuneConfig
    versions_before: tuple[str, ...]
    active_before: str | None
    image_name: str
    labels_name: str
    mode: str = MODE_SCRIBBLES


@dataclass(frozen=True)
class ScribbleOutcome:
    """``result``: the core's ScribbleFinetuneResult; ``entry``: the saved version or None;
    ``activated`` and the reasons it was not."""

    result: Any
    entry: Any
    activated: bool
    corrected_name: str | None
    not_activated_because: tuple[str, ...] = field(default_factory=tuple)


def model_dims(ref: str | None) -> int | None:
    """The spatial dims of the registry model ``ref`` from its config.json (None when unknown)."""
    if not ref:
        return None
    from ..errors import AttnsegError
    from ..model.checkpoint import read_spec
    from ..model.registry import ModelRegistry

    try:
        return int(read_spec(ModelRegistry().resolve(ref)).arch.spatial_dims)
    except (AttnsegError, OSError, ValueError, TypeError, AttributeError, KeyError):
        return None


def uses_core(viewer: Any, pairs: list[tuple[str, str]], ref: str | None) -> bool:
    """Whether these pairs train with the scribble fine-tune: one scribbles pair, a 2D model."""
    if len(pairs) != 1 or pairs[0][1] not in viewer.layers:
        return False
    return labels_mode(viewer.layers[pairs[0][1]]) == MODE_SCRIBBLES and model_dims(ref) == 2


def corrected_layer(viewer: Any, image: Any, scribbles: Any, n_classes: int) -> Any:
    """The scan's labels layer whose reviewed slices cover every scribbled slice (see the module
    docstring), ``<scan> [attnseg]`` first; None when there is none."""
    from .._napari.layers import layer_role
    from ._finetune_request import NOT_TARGETS
    from ._review import ReviewTracker

    core = to_core_scribbles(scribbles.data)
    from ..interactive import IGNORE

    drawn = core != IGNORE
    slices = set(np.flatnonzero(drawn.reshape(drawn.shape[0], -1).any(axis=1)).tolist()) \
        if drawn.ndim == 3 else {0}
    found = []
    for ly in viewer.layers:
        if type(ly).__name__ != "Labels" or ly is scribbles or layer_role(ly) in NOT_TARGETS \
                or labels_mode(ly) == MODE_SCRIBBLES or tuple(np.shape(ly.data)) != tuple(np.shape(image.data)):
            continue
        if not slices <= set(ReviewTracker.for_layer(ly, viewer).reviewed_slices()):
            continue
        if int(np.max(ly.data, initial=0)) >= n_classes:
            continue
        found.append(ly)
    found.sort(key=lambda ly: ly.name != f"{image.name} [attnseg]")
    return found[0] if found else None


def build_scribble_request(viewer: Any, pairs: list[tuple[str, str]], ref: str, seconds: float,
                           overrides: dict | None = None) -> ScribbleRequest:
    """Copy the scan, its strokes and its corrected labels (GUI thread); ValueError with the
    reason when something is missing."""
    from .._napari.layers import layer_to_volume
    from ..model.checkpoint import read_spec
    from ..model.registry import ModelRegistry
    from ..training.scribble_finetune import ScribbleFinetuneConfig

    problems = pair_problems(viewer, pairs, lambda ly: [])
    if problems:
        raise ValueError(problems[0])
    (img_name, lab_name), = pairs
    img, lab = viewer.layers[img_name], viewer.layers[lab_name]
    reg = ModelRegistry()
    base_path = reg.resolve(ref)
    spec = read_spec(base_path)
    image = layer_to_volume(img, np.array(img.data))  # (the core cuts it as the model does)
    core = to_core_scribbles(np.asarray(lab.data))
    from ..interactive import IGNORE

    n = spec.arch.out_channels
    bad = sorted({int(v) for v in np.unique(core[core != IGNORE])} - set(range(n)))
    if bad:
        raise ValueError(f"'{lab_name}' holds stroke values {bad[:5]} that are no class of the "
                         f"base model (0..{n - 1})")
    corr = corrected_layer(viewer, img, lab, n)
    config = replace(ScribbleFinetuneConfig(), **{"max_seconds": float(seconds), **(overrides or {})})
    name = ref.partition("@")[0]
    active = reg.active(name)
    return ScribbleRequest(base_path, name, image, core,
                           None if corr is None else np.array(corr.data),
                           None if corr is None else corr.name, config,
                           tuple(e.version for e in reg.versions(name)),
                           active.version if active else None, img_name, lab_name)


def activation_reasons(result: Any, base: Any, registry: Any, name: str) -> list[str]:
    """Why an accepted result is not made active (the fine-tune core's rules; empty: activate)."""
    from ..training.finetune import _current

    reasons = []
    if result.note.startswith("stopped"):
        reasons.append("training was stopped before its budget ended")
    n_val = 1 if result.gate and "adapted" in result.gate else 0
    reasons.append("nothing checked it on held-out slices (the gate is off)" if n_val == 0 else
                   "it was checked on a single held-out slice, too few to trust automatically")
    current, problem = _current(registry, name)
    if problem:
        reasons.append(problem)
    elif current is not None and Path(current.path).resolve() != Path(base.folder).resolve():
        reasons.append(f"its base {base.model_id} is not the version '{name}' refers to ({current.ref})")
    return reasons


def scribble_job(req: ScribbleRequest, stop: Any) -> Job[ScribbleOutcome]:
    """Load the base, run the scribble fine-tune, save an accepted result (worker thread)."""
    from ..model.checkpoint import load_model
    from ..model.registry import ModelRegistry
    from ..training.scribble_finetune import save_scribble_finetune, scribble_finetune_job

    base = load_model(req.base_path)
    result = yield from scribble_finetune_job(base, req.image, req.scribbles, req.config,
                                              corrected=req.corrected, stop=stop)
    if not result.accepted:
        return ScribbleOutcome(result, None, False, req.corrected_name)
    yield Progress(result.steps, result.steps, "save", "Saving the new version")
    reg = ModelRegistry()
    reasons = activation_reasons(result, base, reg, req.name)
    entry = save_scribble_finetune(base, result, reg, req.name, activate=not reasons)
    return ScribbleOutcome(result, entry, not reasons, req.corrected_name, tuple(reasons))


def finetune_factory(req: Any, stop: Any) -> Any:
    """The worker's job factory for either request kind."""
    if isinstance(req, ScribbleRequest):
        return lambda: scribble_job(req, stop)

    def factory():
        from ..model.checkpoint import load_model
        from ..model.registry import ModelRegistry
        from ..training.finetune import finetune_job

        base = load_model(req.base_path)
        return (yield from finetune_job(base, list(req.pairs), req.config, ModelRegistry(),
                                        name=req.name, stop=stop, activate_on_stop=False))

    return factory


def outcome_text(out: ScribbleOutcome) -> str:
    """The result line of a scribble fine-tune."""
    res = out.result
    source = (f"targets: the corrected slices of '{out.corrected_name}'" if out.corrected_name
              else "targets: the scribbled slices corrected from the strokes")
    if out.entry is None:
        return f"Scribble fine-tune {res.note} ({source}). Nothing saved; the previous version stays active."
    text = f"Scribble fine-tune {res.note} ({source}); saved as {out.entry.ref}. "
    if out.activated:
        return text + f"{out.entry.ref} is now active."
    return (text + f"Not activated because {'; '.join(out.not_activated_because)}: the previous "
            f"version stays active; you can still pick v{out.entry.version}.")


def core_caveat(overrides: dict | None = None) -> str:
    """What the info line says before a scribble fine-tune (the core's gate default, or
    ``overrides``)."""
    from ..training.scribble_finetune import ScribbleFinetuneConfig

    gate = bool((overrides or {}).get("gate", ScribbleFinetuneConfig.gate))
    return ("The scribble fine-tune " + ("holds one scribbled slice out as a check; " if gate else
            "runs without a held-out check; ") + "its result is saved as a new version but not "
            "made active (pick it to use it).")
