"""The Fine-tune widget's request: what kind of training target a labels layer is (its role says:
corrected labels, or scribbles from the "Correct with scribbles" widget), what a scribbles layer
holds, what is missing before a run (the reasons Run is disabled), and the snapshot a fine-tune
job gets (layers copied on the GUI thread into ``TrainingPair``\\ s).

Scribbles (sparse labels) are trained on as ``attnseg finetune IMAGE SCRIBBLES --ignore-label``
does: the layer's values (0 = nothing drawn, ``k`` = a stroke of class ``k``,
:data:`~._scribble_jobs.BACKGROUND_VALUE` = a background stroke) become the core scribble array
(``IGNORE`` where nothing is drawn), then labels with 0 there and a voxel mask of the strokes as
the reviewed mask, so unscribbled voxels carry no loss and the slices with any stroke count as
reviewed; the loss is the partial cross-entropy with the gated-CRF term (the CLI's defaults).

Nothing here imports torch (the info line is computed on the GUI thread).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._napari.layers import layer_label_names, layer_role, layer_to_volume
from ._scribble_jobs import BACKGROUND_VALUE, to_core_scribbles, volume3d

MODE_LABELS = "corrected labels"
MODE_SCRIBBLES = "scribbles"
#: the role the "Correct with scribbles" widget gives its ``<scan> [scribbles]`` layers
SCRIBBLES_ROLE = "scribbles"
#: roles of labels layers that are no training target (Compare's error overlay)
NOT_TARGETS = frozenset({"errors"})
MODE_TEXT = {
    MODE_LABELS: "Mode: corrected labels: trains on the reviewed slices (painted on or marked).",
    MODE_SCRIBBLES: "Mode: scribbles: trains on the strokes only (unscribbled voxels carry no loss); "
                    "the slices with a stroke count as reviewed.",
}
#: = ``training.finetune.TWO_VAL_FROM`` (that module imports torch; a test keeps them equal):
#: from this many reviewed slices on, two are held out for validation, below it only one
TWO_VAL_FROM = 5


@dataclass(frozen=True)
class TrainRequest:
    """Everything a fine-tune run needs, copied on the GUI thread."""

    base_path: Path
    pairs: tuple  # TrainingPair, arrays copied
    config: Any  # TrainConfig
    name: str | None
    versions_before: tuple[str, ...]
    active_before: str | None  # version active before training ("previous model")
    base_version: str
    image_name: str
    labels_name: str
    mode: str = MODE_LABELS


def labels_mode(layer: Any) -> str:
    """:data:`MODE_SCRIBBLES` for a scribbles layer (by role), else :data:`MODE_LABELS`."""
    return MODE_SCRIBBLES if layer_role(layer) == SCRIBBLES_ROLE else MODE_LABELS


def target_layers(viewer: Any) -> list[Any]:
    """The labels layers a fine-tune can train on: corrected labels and scribbles."""
    return [ly for ly in viewer.layers if type(ly).__name__ == "Labels"
            and layer_role(ly) not in NOT_TARGETS]


def held_out_slices(units: int, val_fraction: float = 0.2, min_val: int = 1) -> int:
    """How many of ``units`` reviewed slices the core holds out for validation
    (``training.finetune._split`` / ``dataset.split_reviewed_slices``)."""
    need = max(int(min_val), 2 if units >= TWO_VAL_FROM else 1)
    return max(0, min(max(need, int(round(val_fraction * units))), units - 1))


# --------------------------------------------------------------------------- scribbles
@dataclass(frozen=True)
class ScribbleSummary:
    """What a scribbles layer holds: ``per_class`` = ((class, voxels, slices), ...) with class 0
    for background strokes; ``slices``: the scribbled slices (axis 0; a 2D layer is slice 0);
    ``foreground_slices``: the slices with a stroke of a class 1..N."""

    n_slices: int
    n_voxels: int
    slices: tuple[int, ...]
    foreground_slices: tuple[int, ...]
    per_class: tuple[tuple[int, int, int], ...]

    def text(self, names: dict[int, str] | None = None) -> str:
        if not self.slices:
            return "No scribbles yet."
        names = {0: "background", **(names or {})}
        parts = []
        for c, vox, sl in self.per_class:
            label = names.get(c, f"class {c}")
            parts.append(f"{label if c == 0 else f'{c} ({label})'}: {vox} voxel{'s' if vox != 1 else ''} "
                         f"on {sl} slice{'s' if sl != 1 else ''}")
        drawn = sum(v for _, v, _ in self.per_class)
        pct = 100.0 * drawn / self.n_voxels if self.n_voxels else 0.0
        return (f"Scribbled {len(self.slices)} of {self.n_slices} slices ({pct:.2g} % of the voxels): "
                + "; ".join(parts) + ".")


def scribble_summary(data: Any) -> ScribbleSummary:
    """Count the strokes of a scribbles layer's data (the layer's own values; two passes over
    the volume, whatever the number of classes)."""
    d = volume3d(data)
    nz = d.shape[0]
    zs, pos = np.nonzero(d.reshape(nz, -1))
    vals = d.reshape(nz, -1)[zs, pos].astype(np.int64)
    cls = np.where(vals == BACKGROUND_VALUE, 0, vals)
    per_class = []
    for c in np.unique(cls):
        hit = cls == c
        per_class.append((int(c), int(hit.sum()), int(np.unique(zs[hit]).size)))
    fg = np.unique(zs[cls != 0])
    return ScribbleSummary(nz, int(d.size), tuple(int(i) for i in np.unique(zs)),
                           tuple(int(i) for i in fg), tuple(per_class))


def model_label_names(ref: str | None) -> dict[int, str]:
    """The base model's class names from its config.json (no weights, no torch); {} when
    they cannot be read (the run itself reports a broken model)."""
    if not ref:
        return {}
    from ..errors import AttnsegError
    from ..model.config_check import parse_config
    from ..model.registry import ModelRegistry

    try:
        path = Path(ModelRegistry().resolve(ref)) / "config.json"
        raw = parse_config(path.read_bytes(), path).get("label_names") or {}
        return {int(k): str(v) for k, v in raw.items()}
    except (AttnsegError, OSError, ValueError, TypeError, AttributeError):
        return {}


def class_names(viewer: Any, scribbles: Any, ref: str | None = None) -> dict[int, str]:
    """Label names for a scribbles layer: its own, else those of ``<scan> [attnseg]``, else the
    base model's."""
    names = layer_label_names(scribbles)
    stem = scribbles.name.split(" [")[0]
    other = f"{stem} [attnseg]"
    if not names and other in viewer.layers:
        names = layer_label_names(viewer.layers[other])
    return names or model_label_names(ref)


def scribble_problems(layer: Any, summary: ScribbleSummary) -> list[str]:
    """Why a fine-tune cannot run on these scribbles (empty when it can)."""
    if not summary.slices:
        return [f"'{layer.name}' holds no scribbles: draw strokes on it (Correct with scribbles) first"]
    if not summary.foreground_slices:
        return [f"'{layer.name}' holds only background strokes: scribble the structure (a class "
                "1..N) too"]
    if len(summary.foreground_slices) < 2:
        return [f"'{layer.name}': the structure is scribbled on 1 slice only; scribble it on at least "
                "2 slices (one to train on, one to validate on)"]
    return []


def scribble_caveat(summary: ScribbleSummary, options: dict | None = None) -> str:
    """The caveat a scribble fine-tune's validation carries (before the run); ``options``:
    TrainConfig fields that differ from its defaults (``val_fraction``, ``min_val_slices``)."""
    options = options or {}
    n_val = held_out_slices(len(summary.slices), float(options.get("val_fraction", 0.2)),
                            int(options.get("min_val_slices", 1)))
    text = ("Validation Dice is measured on the strokes of the held-out scribbled slices only "
            "(not on whole slices).")
    if n_val < 2:
        text += (f" Caveat: with {len(summary.slices)} scribbled slices only {n_val} is held out, too few "
                 "to judge the result: a better model is saved but not activated (the previous version "
                 f"stays active); scribble {TWO_VAL_FROM} or more slices for a verdict.")
    return text


def scribble_pair(image_layer: Any, layer: Any, n_classes: int | None = None) -> Any:
    """The TrainingPair of a scribbles layer: labels 0 where nothing is drawn and the strokes'
    voxel mask as the reviewed mask (``training.dataset.sparse_labels``, as the CLI)."""
    from ..interactive import IGNORE
    from ..interactive.scribbles import stray_values
    from ..training.dataset import TrainingPair, sparse_labels

    core = to_core_scribbles(np.asarray(layer.data))
    if n_classes is not None:
        bad = stray_values(core, n_classes, IGNORE)
        if bad:
            raise ValueError(f"'{layer.name}' holds stroke values {bad[:5]} that are no class of the "
                             f"base model (0..{n_classes - 1})")
    labels, mask = sparse_labels(layer_to_volume(layer, core), None, IGNORE, layer.name)
    image = layer_to_volume(image_layer, np.array(image_layer.data))
    return TrainingPair(image=image, labels=labels, reviewed=mask)


def labels_pair(image_layer: Any, layer: Any, tracker: Any) -> Any:
    """The TrainingPair of a corrected-labels layer: its reviewed slices."""
    from ..training.dataset import TrainingPair

    if not tracker.reviewed_slices():
        raise ValueError(f"no slice of '{layer.name}' is marked reviewed: correct some "
                         "slices (painting marks them) or press 'Mark current slice'")
    labels = layer_to_volume(layer, np.array(layer.data))
    flags = tracker.reviewed_mask()
    reviewed = flags.copy() if labels.ndim == 3 else np.full(labels.shape, flags[0])
    image = layer_to_volume(image_layer, np.array(image_layer.data))
    return TrainingPair(image=image, labels=labels, reviewed=reviewed)


def pair_problems(viewer: Any, pairs: list[tuple[str, str]], reviewed_of: Any,
                  summary_of: Any = None) -> list[str]:
    """Why Run is disabled for ``pairs`` of (image, labels) layer names (empty when it can run).
    ``reviewed_of(layer)``: the reviewed slices of a corrected-labels layer; ``summary_of(layer)``:
    the :class:`ScribbleSummary` of a scribbles layer (default: counted now)."""
    summary_of = summary_of or (lambda ly: scribble_summary(ly.data))
    out: list[str] = []
    modes = set()
    for img_name, lab_name in pairs:
        if not img_name or not lab_name:
            out.append("Choose an image and a labels layer (corrected labels or scribbles)")
            continue
        if img_name not in viewer.layers or lab_name not in viewer.layers:
            out.append(f"layer '{img_name}' or '{lab_name}' is not in the viewer")
            continue
        img, lab = viewer.layers[img_name], viewer.layers[lab_name]
        if tuple(np.shape(lab.data)) != tuple(np.shape(img.data)):
            out.append(f"'{lab_name}' has shape {tuple(np.shape(lab.data))} but '{img_name}' has "
                       f"{tuple(np.shape(img.data))}")
            continue
        if np.ndim(lab.data) not in (2, 3):
            out.append(f"'{lab_name}' has {np.ndim(lab.data)} dimensions; a 2D or 3D layer is needed")
            continue
        mode = labels_mode(lab)
        modes.add(mode)
        if mode == MODE_SCRIBBLES:
            out += scribble_problems(lab, summary_of(lab))
        elif not reviewed_of(lab):
            out.append(f"no slice of '{lab_name}' is marked reviewed: correct some slices (painting "
                       "marks them) or press 'Mark current slice'")
    if len(modes) > 1:
        out.append("the pairs mix corrected labels and scribbles: fine-tune on one kind at a time")
    return out


def build_request(viewer: Any, pairs: list[tuple[str, str]], ref: str | None, make_config: Any) -> TrainRequest:
    """Copy ``pairs`` of (image, labels) layer names into TrainingPairs for the base model
    ``ref`` (GUI thread); ``make_config(spatial_dims, patch_size, mode)``: the TrainConfig.
    ValueError (or the project's errors) with the reason when something is missing."""
    from ..io.validate import require_same_grid
    from ..model.checkpoint import read_spec
    from ..model.registry import ModelRegistry
    from ._review import ReviewTracker

    reg = ModelRegistry()
    spec = read_spec(reg.resolve(ref)) if ref else None
    out, modes = [], set()
    for img_name, lab_name in pairs:
        if img_name not in viewer.layers or lab_name not in viewer.layers:
            raise ValueError(f"layer '{img_name}' or '{lab_name}' is not in the viewer")
        img, lab = viewer.layers[img_name], viewer.layers[lab_name]
        mode = labels_mode(lab)
        modes.add(mode)
        if mode == MODE_SCRIBBLES:
            problems = pair_problems(viewer, [(img_name, lab_name)], lambda ly: [])
            if problems:
                raise ValueError(problems[0])
            pair = scribble_pair(img, lab, spec.arch.out_channels if spec is not None else None)
        else:
            pair = labels_pair(img, lab, ReviewTracker.for_layer(lab, viewer))
        require_same_grid(pair.labels, pair.image, f"labels '{lab_name}'", f"image '{img_name}'")
        out.append(pair)
    if len(modes) > 1:
        raise ValueError("the pairs mix corrected labels and scribbles: fine-tune on one kind at a time")
    if not ref:
        raise ValueError("no base model: add one to the registry first")
    base_path = reg.resolve(ref)
    name = ref.partition("@")[0]
    active = reg.active(name)
    mode = modes.pop()
    config = make_config(spec.arch.spatial_dims, spec.patch_size, mode)
    return TrainRequest(base_path, tuple(out), config, name,
                        tuple(e.version for e in reg.versions(name)),
                        active.version if active else None, ref.partition("@")[2] or "",
                        pairs[0][0], pairs[0][1], mode)
