"""Correct a segmentation with scribbles: draw strokes with napari's own brush on
``<image> [scribbles]`` and every stroke updates that slice of the result layer at once.

* The scribbles layer (a Labels layer on the image's grid, ``metadata["attnseg"]["role"] =
  "scribbles"``) holds 0 where nothing is drawn, ``k`` for a stroke of class ``k`` and
  :data:`BACKGROUND_VALUE` (255) for a background stroke; **Draw** chooses the class (and
  napari's brush). Erasing a stroke updates the slice too.
* Each stroke runs :func:`~napari_attnseg.interactive.correct_slice` on its slice (the model's
  class probabilities, or the labels as probabilities, with the strokes as hard constraints and
  the dense CRF) and writes the changed voxels into the result layer as **one undoable edit**
  (``layer.undo()`` restores the slice); the slice counts as reviewed.
* **Apply to neighbouring slices** / **Apply to volume** carry the strokes' evidence to the
  slices around the current one / to every slice (in a worker; one undoable edit);
  **Fill between slices** interpolates the labels between the reviewed (or scribbled) slices.
  Neither marks the slices they change as reviewed.
* Voxels painted by hand on the result layer (napari's brush, fill, ...) and slices marked
  reviewed are never changed unless **Overwrite painted voxels and reviewed slices** is ticked;
  painted voxels also act as hard constraints.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
from magicgui.widgets import Container, Label, PushButton

from .._napari.layers import (META_KEY, derived_layer_kwargs, layer_label_names, layer_role,
                              layer_to_volume)
from ._layers import LayerPicker, follow_layers
from ._form import Fields, align_labels, build_fields, read_form
from ._review import ReviewTracker, edited_slices
from ._scribble_jobs import (
    BACKGROUND_VALUE, FROM_LABELS, PaintedVoxels, Request, fill_job, propagation_job, slice_job,
    snapshot_probabilities, to_core_scribbles, volume3d,
)
from ._worker import JobRunner, ProgressPanel

logger = logging.getLogger(__name__)

SUFFIX = " [scribbles]"
ROLE = "scribbles"
__all__ = ["BACKGROUND_VALUE", "FROM_LABELS", "SUFFIX", "ScribbleConfig", "ScribbleWidget",
           "to_core_scribbles"]
#: A stroke is corrected synchronously while the previous one took less than this (seconds).
STROKE_SYNC_S = 0.3


@dataclass(frozen=True)
class ScribbleConfig:
    """The form: how strokes correct the labels (see ``interactive.scribbles``)."""

    strength: Annotated[float, {"min": 0.5, "max": 50.0, "step": 0.5}] = field(
        default=10.0, metadata={"label": "Stroke strength",
                               "tooltip": "log-odds a stroke adds to its class at the stroke"})
    tau_mm: Annotated[float, {"min": 1.0, "max": 500.0, "step": 1.0}] = field(
        default=20.0, metadata={"label": "Reach (mm)",
                                "tooltip": "geodesic distance over which a stroke's effect fades"})
    contrast: Annotated[float, {"min": 0.01, "max": 0.99, "step": 0.01}] = field(
        default=0.2, metadata={"label": "Edge contrast",
                               "tooltip": "intensity change (0..1) that stops a stroke as much "
                                          "as its reach in distance; smaller: stops sooner"})
    neighbours: Annotated[int, {"min": 1, "max": 50}] = field(
        default=2, metadata={"label": "Neighbouring slices"})
    confidence: Annotated[float, {"min": 0.51, "max": 0.99, "step": 0.01}] = field(
        default=0.8, metadata={"label": "Labels confidence",
                               "tooltip": "probability given to the labels when there are no "
                                          "probabilities (input: a labels layer)"})
    update_on_stroke: bool = field(default=True, metadata={"label": "Update on every stroke"})
    overwrite_painted: bool = field(
        default=False, metadata={"label": "Overwrite painted voxels and reviewed slices"})

    def params(self, modality: str = "") -> Any:
        from ..interactive import ScribbleParams

        return ScribbleParams(strength=self.strength, tau_mm=self.tau_mm,
                              contrast=self.contrast, neighbours=self.neighbours,
                              modality=modality or "")


class ScribbleWidget(Container):
    """Scribble correction of a Labels layer; see the module docstring."""

    def __init__(self, napari_viewer: Any):
        super().__init__(scrollable=False)
        self.viewer = napari_viewer
        self.image_combo = LayerPicker(label="Image", choices=self._image_choices)
        self.result_combo = LayerPicker(label="Labels to correct", choices=self._result_choices)
        self.probs_combo = LayerPicker(label="Probabilities", choices=self._prob_choices)
        self.class_combo = LayerPicker(label="Draw", choices=self._class_choices)
        self.form = Fields(build_fields(ScribbleConfig))  # rows of this container: aligned
        self.start_button = PushButton(text="Scribble on this scan")
        self.neighbours_button = PushButton(text="Apply to neighbouring slices")
        self.volume_button = PushButton(text="Apply to volume")
        self.fill_button = PushButton(text="Fill between slices")
        self.info = Label(value="")
        self.extend([self.image_combo, self.result_combo, self.probs_combo, self.start_button,
                     self.class_combo, *self.form, self.neighbours_button, self.volume_button,
                     self.fill_button, self.info])
        align_labels(self)
        self.progress = ProgressPanel()
        self.native.layout().addWidget(self.progress)
        self.runner: JobRunner | None = None
        self._pending: set[int] = set()
        self._last_stroke_s: float | None = None
        self.painted_voxels = PaintedVoxels()
        self._bases: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._stroke_layers: weakref.WeakSet = weakref.WeakSet()
        self.start_button.changed.connect(lambda *_: self.scribbles_layer(create=True))
        self.neighbours_button.changed.connect(lambda *_: self.apply_neighbours())
        self.volume_button.changed.connect(lambda *_: self.apply_volume())
        self.fill_button.changed.connect(lambda *_: self.fill_between())
        self.class_combo.changed.connect(self._select_class)
        self.result_combo.changed.connect(self._result_changed)
        follow_layers(self.viewer, self._layers_changed)
        self._layers_changed()
        self._result_changed(self.result_combo.value)

    # ------------------------------------------------------------------ choices
    def _image_choices(self, *_: Any) -> list:
        return [(ly.name, ly) for ly in self.viewer.layers if type(ly).__name__ == "Image"
                and "probabilit" not in ly.name]

    def _result_choices(self, *_: Any) -> list:
        labels = [ly for ly in self.viewer.layers if type(ly).__name__ == "Labels"
                  and layer_role(ly) != ROLE and not ly.name.endswith(SUFFIX)]
        labels.sort(key=lambda ly: (" [attnseg" not in ly.name, ly.name.endswith("preview]")))
        return [(ly.name, ly) for ly in labels]

    def _prob_choices(self, *_: Any) -> list:
        probs = [(ly.name, ly) for ly in self.viewer.layers if type(ly).__name__ == "Image"
                 and "probabilit" in ly.name]
        return probs + [(FROM_LABELS, FROM_LABELS)]

    def _class_choices(self, *_: Any) -> list:
        result = self.result_combo.value if hasattr(self, "result_combo") else None
        names = layer_label_names(result) if result is not None else {}
        n = max([int(np.max(result.data)) if result is not None and np.size(result.data) else 1]
                + list(names) + [1])
        out = [("background", BACKGROUND_VALUE)]
        for k in range(1, n + 1):
            out.append((f"{k}: {names[k]}" if k in names else str(k), k))
        return out

    def _layers_changed(self, *_: Any) -> None:
        self.reset_choices()
        for ly in self.viewer.layers:
            if type(ly).__name__ == "Labels" and layer_role(ly) != ROLE:
                self.painted_voxels.watch(ly)

    def _result_changed(self, result: Any) -> None:
        if result is None:
            return
        stem = result.name.split(" [")[0]
        for ly in self.viewer.layers:
            if type(ly).__name__ == "Image" and ly.name == stem:
                self.image_combo.value = ly
            if ly.name == f"{result.name} probabilities":
                self.probs_combo.value = ly
        self.class_combo.reset_choices()

    # ------------------------------------------------------------------ layers
    def scribbles_layer(self, create: bool = False) -> Any:
        """The scribbles layer of the chosen image (made, selected and in paint mode with
        ``create``); None when there is none yet."""
        image = self.image_combo.value
        if image is None:
            self.info.value = "Choose the image first"
            return None
        name = image.name + SUFFIX
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        if layer is not None and tuple(layer.data.shape) != tuple(image.data.shape):
            layer = None
            if create:
                self.viewer.layers.remove(name)
        if layer is None and create:
            kwargs = derived_layer_kwargs(image, name, shape=tuple(image.data.shape))
            kwargs["metadata"][META_KEY]["role"] = ROLE
            layer = self.viewer.add_labels(np.zeros(image.data.shape, np.uint8), **kwargs)
            layer.brush_size = 3
            self._colour(layer)
        if layer is not None and create:
            if layer not in self._stroke_layers:
                layer.events.paint.connect(self._on_stroke)
                self._stroke_layers.add(layer)
            self.viewer.layers.selection.active = layer
            self._select_class(self.class_combo.value)
        return layer

    def _colour(self, layer: Any) -> None:
        """Stroke colours: a class's colour in the result layer; background in white."""
        from napari.utils.colormaps import DirectLabelColormap

        result = self.result_combo.value
        colors: dict = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0),
                        BACKGROUND_VALUE: (1.0, 1.0, 1.0, 1.0)}
        for _, k in self._class_choices():
            if k != BACKGROUND_VALUE and result is not None:
                colors[k] = tuple(np.asarray(result.get_color(k), float).ravel()[:4])
        layer.colormap = DirectLabelColormap(color_dict=colors)

    def _select_class(self, value: Any) -> None:
        name = (self.image_combo.value.name + SUFFIX) if self.image_combo.value is not None else ""
        if value is None or name not in self.viewer.layers:
            return
        layer = self.viewer.layers[name]
        layer.selected_label = int(value)
        layer.mode = "paint"

    def painted(self, layer: Any) -> np.ndarray:
        """A copy of the voxels of ``layer`` painted by hand since the widget watches it."""
        return self.painted_voxels.mask(layer).copy()

    # ------------------------------------------------------------------ snapshot
    def config(self) -> ScribbleConfig:
        return read_form(self.form, ScribbleConfig)

    def _request(self, targets: list[int], what: str, whole: bool) -> Request:
        """Snapshot for ``targets`` (ValueError with the reason when something is missing)."""
        image, result = self.image_combo.value, self.result_combo.value
        if image is None or result is None:
            raise ValueError("Choose the image and the labels layer to correct")
        if tuple(result.data.shape) != tuple(image.data.shape):
            raise ValueError(f"'{result.name}' has shape {tuple(result.data.shape)} but "
                             f"'{image.name}' has {tuple(image.data.shape)}")
        scribbles = self.scribbles_layer()
        if scribbles is None:
            raise ValueError("Press 'Scribble on this scan' and draw strokes first")
        cfg = self.config()
        vol = layer_to_volume(image)
        img = volume3d(image.data).astype(np.float32, copy=False)
        current = volume3d(result.data).copy()
        base = current.copy()
        painted = volume3d(self.painted_voxels.mask(result))
        for z in targets if not whole else ():
            # before its first stroke, with what was painted by hand since then
            base[z] = np.where(painted[z], current[z], self._base_slice(result, z, current[z]))
        scr = to_core_scribbles(volume3d(scribbles.data))
        keep = None
        if not cfg.overwrite_painted:
            keep = painted.copy()
        spacing = tuple(vol.spacing) if img.ndim == np.ndim(image.data) else (1.0,) + tuple(vol.spacing)
        probs = snapshot_probabilities(self.probs_combo.value, base, scr, cfg.confidence,
                                       None if whole else targets)
        return Request(result, img, spacing, probs, scr, base, keep, cfg.params(vol.modality),
                       tuple(targets), what)

    def _base_slice(self, result: Any, z: int, current: np.ndarray) -> np.ndarray:
        """The labels of slice ``z`` before its first stroke (each stroke recomputes from it)."""
        bases = self._bases.setdefault(result, {})
        key = id(result.data)
        if bases.get("data") != key:
            bases.clear()
            bases["data"] = key
        if z not in bases:
            bases[z] = current.copy()
        return bases[z]

    # ------------------------------------------------------------------ actions
    @property
    def busy(self) -> bool:
        return self.runner is not None and self.runner.running

    def current_slice(self) -> int:
        result = self.result_combo.value
        if result is None or np.ndim(result.data) == 2:
            return 0
        return ReviewTracker.for_layer(result, self.viewer).current_slice()

    def _on_stroke(self, event: Any) -> None:
        if not self.config().update_on_stroke:
            return
        layer = self.scribbles_layer()
        if layer is None:
            return
        if np.ndim(layer.data) == 2:
            touched = {0}
        else:
            touched = set()
            for atom in getattr(event, "value", None) or []:
                touched |= edited_slices(atom, 0, layer.data.shape[0])
        for z in sorted(touched):
            self.correct(z)

    def correct(self, z: int, sync: bool | None = None) -> Any:
        """Recompute slice ``z`` from its strokes and write it (one undoable edit)."""
        if self.busy:
            self._pending.add(int(z))
            return None
        try:
            req = self._request([int(z)], f"slice {z}", whole=False)
        except ValueError as exc:
            self.info.value = str(exc)
            return None
        if sync is None:
            sync = self._last_stroke_s is None or self._last_stroke_s < STROKE_SYNC_S
        t0 = time.perf_counter()

        def done(out: dict) -> None:
            self._last_stroke_s = time.perf_counter() - t0
            self._apply(req, out, reviewed=True)

        return self._run(lambda: slice_job(req), done, "Scribbles", sync)

    def apply_neighbours(self, sync: bool = False) -> Any:
        z = self.current_slice()
        n = self.config().neighbours
        return self._propagate([t for t in range(z - n, z + n + 1) if t != z],
                               "neighbouring slices", sync)

    def apply_volume(self, sync: bool = False) -> Any:
        result = self.result_combo.value
        nz = 1 if result is None or np.ndim(result.data) == 2 else result.data.shape[0]
        return self._propagate(list(range(nz)), "volume", sync)

    def _free_targets(self, targets: list[int], req_scr: np.ndarray) -> list[int]:
        """Targets inside the volume, without strokes of their own and (without consent) not
        reviewed."""
        from ..interactive import IGNORE

        nz = req_scr.shape[0]
        drawn = (req_scr != IGNORE).reshape(nz, -1).any(axis=1)
        reviewed: set[int] = set()
        if not self.config().overwrite_painted and self.result_combo.value is not None:
            reviewed = set(ReviewTracker.for_layer(self.result_combo.value, self.viewer).reviewed_slices())
        return [t for t in targets if 0 <= t < nz and not drawn[t] and t not in reviewed]

    def _propagate(self, targets: list[int], what: str, sync: bool) -> Any:
        try:
            req = self._request([], what, whole=True)
        except ValueError as exc:
            self.info.value = str(exc)
            return None
        from ..interactive import IGNORE

        if not (req.scribbles != IGNORE).any():
            self.info.value = "Draw scribbles first"
            return None
        free = self._free_targets(targets, req.scribbles)
        if not free:
            self.info.value = f"No slice to correct in the {what} (scribbled or reviewed)"
            return None
        req = dataclasses.replace(req, targets=tuple(free))
        return self._run(lambda: propagation_job(req), lambda out: self._apply(req, out),
                         f"Apply to {what}", sync)

    def fill_between(self, sync: bool = False) -> Any:
        """Interpolate the labels between the reviewed or scribbled slices."""
        from ..interactive import IGNORE

        try:
            req = self._request([], "fill", whole=True)
        except ValueError as exc:
            self.info.value = str(exc)
            return None
        tracker = ReviewTracker.for_layer(req.result, self.viewer)
        drawn = (req.scribbles != IGNORE).reshape(req.scribbles.shape[0], -1).any(axis=1)
        keys = sorted(set(tracker.reviewed_slices()) | {int(z) for z in np.flatnonzero(drawn)})
        if len(keys) < 2:
            self.info.value = "Correct (or mark reviewed) at least two slices to fill between"
            return None
        req = dataclasses.replace(req, targets=tuple(keys))
        return self._run(lambda: fill_job(req), lambda out: self._apply(req, out),
                         "Fill between slices", sync)

    def _run(self, factory: Any, on_result: Any, context: str, sync: bool) -> Any:
        self.runner = JobRunner(factory, self.progress, on_result=on_result,
                                on_finished=self._next_pending, context=context)
        if not sync:
            return self.runner.start()
        out = self.runner.run_sync()
        self._next_pending()
        return out

    def _next_pending(self) -> None:
        if self._pending and not self.busy:
            z = min(self._pending)
            self._pending.discard(z)
            self.correct(z)

    # ------------------------------------------------------------------ results (GUI thread)
    def _apply(self, req: Request, out: dict, reviewed: bool = False) -> None:
        """Write the new slices into the result layer as one undoable edit. Propagated / filled
        slices edited since the snapshot are left alone; painted voxels (as of now: a stroke job
        may have run while the user painted) are kept without consent."""
        layer = req.result
        if layer not in self.viewer.layers or tuple(volume3d(layer.data).shape) != req.base.shape:
            self.info.value = "The labels layer changed; nothing written"
            return
        tracker = ReviewTracker.for_layer(layer, self.viewer)
        before = set(tracker.reviewed_slices())
        keep = None if req.keep is None else volume3d(self.painted_voxels.mask(layer))
        written, n = self.painted_voxels.write(layer, out, None if reviewed else req.base, keep)
        if reviewed:
            tracker.mark(*out)
        else:
            tracker.unmark(*(set(tracker.reviewed_slices()) - before))
        self.info.value = f"{req.what}: {n} voxels changed in {len(written)} slice(s)"
