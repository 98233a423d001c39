"""Refine a segmentation with a dense CRF: preview on the current slice, refine the volume,
auto-tune the parameters against a ground-truth Labels layer. Output ``<image> [attnseg+crf]``
(a Labels layer on the image's grid, ``metadata["attnseg"]["role"] = "crf"``, the parameters in
its provenance), drawn and named as the layer it refines (a model's probabilities or labels: the
model's label names and colours, :func:`~._result_style.derived_style`).

The form is built from :class:`~._refine_jobs.RefineParams` (its defaults, limits and
validation); choosing an image fills it with that modality's CRF preset, and **Reset to
defaults** shows the preset again. Layer pickers track the viewer: the source lists probability
layers first (a new segmentation's probabilities are selected as they appear), the ground truth
lists only Labels layers no method made (never a prediction or a CRF result)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
from magicgui.widgets import Container, Label, PushButton

from .._napari.layers import (META_KEY, derived_layer_kwargs, layer_label_names, layer_role,
                              layer_to_volume)
from ._layers import LayerPicker, follow_layers
from ._form import align_labels, build_form, read_form
from ._refine_jobs import (
    RefineParams, RefineRequest, autotune_job, class_probabilities, drop_broken_pool,
    labels_to_probabilities, preview_job, refine_volume_job, request_problems,
)
from ._result_style import derived_style, upsert_styled_labels
from ._worker import JobRunner, ProgressPanel, notify_error

logger = logging.getLogger(__name__)

SUFFIX = " [attnseg+crf]"
PREVIEW_SUFFIX = " [attnseg+crf preview]"
ROLE = "crf"
#: Roles of layers a method made (never the default ground truth, never refined from).
OUTPUT_ROLES = ("prediction", "crf", "errors", "uncertainty", "baseline", "scribbles")
__all__ = ["PREVIEW_SUFFIX", "ROLE", "SUFFIX", "RefineParams", "RefineRequest", "RefineWidget",
           "class_probabilities", "labels_to_probabilities"]


def is_probabilities(layer: Any) -> bool:
    return type(layer).__name__ == "Image" and (
        layer_role(layer) == "probabilities" or "probabilit" in layer.name)


def is_output(layer: Any) -> bool:
    """A layer a method made: by its role, its provenance or (older layers) its name."""
    meta = (getattr(layer, "metadata", None) or {}).get(META_KEY)
    prov = meta.get("provenance") if isinstance(meta, dict) else None
    prov = prov if isinstance(prov, dict) else {}
    return (layer_role(layer) in OUTPUT_ROLES or any(k in prov for k in ("model_id", "crf", "baseline"))
            or prov.get("kind") == "attnseg prediction" or "[attnseg" in layer.name)


class RefineWidget(Container):
    """Dense-CRF refinement of a probability (or labels) layer, guided by an image layer."""

    def __init__(self, napari_viewer: Any):
        super().__init__(scrollable=False)
        self.viewer = napari_viewer
        self.source = LayerPicker(label="Probabilities / labels", choices=self._source_choices)
        self.image = LayerPicker(label="Image", choices=self._image_choices)
        self.ground_truth = LayerPicker(label="Ground truth (auto-tune)", choices=self._gt_choices)
        self.pickers = Container(widgets=[self.source, self.image, self.ground_truth],
                                 labels=True)
        self.form = build_form(RefineParams, labels=True)
        self.preview_button = PushButton(text="Preview current slice")
        self.refine_button = PushButton(text="Refine volume")
        self.autotune_button = PushButton(text="Auto-tune")
        self.reset_button = PushButton(text="Reset to defaults")
        buttons = Container(widgets=[self.preview_button, self.refine_button,
                                     self.autotune_button], layout="horizontal", labels=False)
        self.info = Label(value="")
        self.extend([self.pickers, self.form, self.reset_button, buttons, self.info])
        align_labels(self, self.pickers, self.form)  # one column of fields
        self.progress = ProgressPanel()
        self.status = self.progress.status  # one line for progress and results (not twice)
        self.native.layout().addWidget(self.progress)
        self.runner: JobRunner | None = None
        self.last_result: Any = None
        self.last_autotune: Any = None

        self.preview_button.changed.connect(lambda *_: self.preview())
        self.refine_button.changed.connect(lambda *_: self.refine_volume())
        self.autotune_button.changed.connect(lambda *_: self.autotune())
        self.reset_button.changed.connect(lambda *_: self.reset_defaults())
        self.image.changed.connect(lambda *_: self.apply_modality_preset())
        self.source.changed.connect(self._source_changed)
        self.pickers.changed.connect(lambda *_: self.update_info())
        self.form.changed.connect(lambda *_: self.update_info())
        follow_layers(self.viewer, self._layers_changed)
        self._layers_changed()
        self.reset_defaults()

    # Qt handles of the pickers and fields, for scripts and benchmarks (``setCurrentText``,
    # ``setValue``, ``click``); the magicgui widgets above are the API.
    source_combo = property(lambda self: self.source.native)
    image_combo = property(lambda self: self.image.native)
    gt_combo = property(lambda self: self.ground_truth.native)
    mode_combo = property(lambda self: self.form.mode.native)
    iterations_spin = property(lambda self: self.form.iterations.native)
    workers_spin = property(lambda self: self.form.workers.native)

    # ------------------------------------------------------------------ layer choices
    def _source_choices(self, *_: Any) -> list:
        layers = list(self.viewer.layers)
        probs = [ly for ly in layers if is_probabilities(ly)]
        labels = [ly for ly in layers if type(ly).__name__ == "Labels" and layer_role(ly) != ROLE
                  and not ly.name.endswith((SUFFIX, PREVIEW_SUFFIX))]
        images = [ly for ly in layers if type(ly).__name__ == "Image" and not is_probabilities(ly)]
        return [(ly.name, ly) for ly in probs + labels + images]

    def _image_choices(self, *_: Any) -> list:
        return [(ly.name, ly) for ly in self.viewer.layers
                if type(ly).__name__ == "Image" and not is_probabilities(ly)
                and layer_role(ly) not in OUTPUT_ROLES]

    def _gt_choices(self, *_: Any) -> list:
        return [(ly.name, ly) for ly in self.viewer.layers
                if type(ly).__name__ == "Labels" and not is_output(ly)]

    def _layers_changed(self, event: Any = None) -> None:
        self.reset_choices()
        new = getattr(event, "value", None) if getattr(event, "type", "") == "inserted" else None
        if new is not None and is_probabilities(new):
            self.source.value = new  # a new segmentation's probabilities: refine those
        self.update_info()

    def _source_changed(self, source: Any) -> None:
        """Pick the image the source was made from (``<image> [...]``), when it is there."""
        if source is None:
            return
        stem = source.name.split(" [")[0]
        self.image.reset_choices()  # (the source may refresh first)
        for ly in self.image.choices:
            if ly.name == stem:
                self.image.value = ly

    # ------------------------------------------------------------------ form
    def settings(self) -> RefineParams:
        return read_form(self.form, RefineParams)

    def show_settings(self, s: RefineParams) -> None:
        """Show ``s`` in the form (values clamped to the fields' limits)."""
        for f in dataclasses.fields(RefineParams):
            w, v = getattr(self.form, f.name), getattr(s, f.name)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and hasattr(w, "max"):
                v = type(v)(min(max(v, w.min), w.max))
            w.value = v

    def modality(self) -> str:
        meta = (getattr(self.image.value, "metadata", None) or {}).get(META_KEY)
        return str(meta.get("modality", "") or "") if isinstance(meta, dict) else ""

    def reset_defaults(self) -> None:
        """The defaults, with the CRF preset of the chosen image's modality."""
        self.show_settings(RefineParams.for_modality(self.modality()))

    def apply_modality_preset(self) -> None:
        """The CRF fields from the chosen image's modality preset (confidence and workers kept)."""
        self.set_params(RefineParams.for_modality(self.modality()).as_core())

    def set_params(self, p: Any) -> None:
        """Show ``p`` (a CRFParams) in the form (the labels confidence is kept)."""
        self.show_settings(self.settings().with_core(p))

    def params(self) -> Any:
        """The CRFParams the form shows."""
        return self.settings().as_core()

    def problems(self, need_truth: bool = False) -> list[str]:
        return request_problems(self.source.value, self.image.value, self.ground_truth.value,
                                need_truth) + self.settings().problems()

    def update_info(self) -> None:
        """The info line says what is missing; the buttons run only when nothing is."""
        problems = self.problems()
        self.info.value = "; ".join(problems)
        for b in (self.preview_button, self.refine_button):
            b.enabled = not problems
        self.autotune_button.enabled = not self.problems(need_truth=True)

    # ------------------------------------------------------------------ snapshot
    def config(self, preview: bool = False, with_gt: bool = False) -> RefineRequest:
        """Read the layers and parameters (GUI thread); ValueError names what is missing."""
        problems = self.problems(need_truth=with_gt)
        if problems:
            raise ValueError(problems[0])
        src, img_layer = self.source.value, self.image.value
        image = np.asarray(img_layer.data)
        vol = layer_to_volume(img_layer, image)
        data = np.asarray(src.data)
        from ..io.validate import require_same_grid

        if data.shape == image.shape:  # same shape: it must also lie on the image
            require_same_grid(layer_to_volume(src, data), vol, f"layer '{src.name}'",
                              f"image '{img_layer.name}'")
        settings = self.settings()
        if type(src).__name__ == "Labels":
            probs = labels_to_probabilities(data, settings.confidence)
        else:
            probs = class_probabilities(src, image.shape)
            if probs is None:
                probs = data
        z = self._current_z(img_layer, image.shape[0]) if preview and image.ndim == 3 else None
        gt = np.asarray(self.ground_truth.value.data) if with_gt else None
        return RefineRequest(probabilities=probs, image=image, spacing=tuple(vol.spacing),
                             params=settings.as_core(), image_layer=img_layer, source_layer=src,
                             slice_index=z, ground_truth=gt)

    def _current_z(self, layer: Any, nz: int) -> int:
        try:
            point = tuple(self.viewer.dims.point)[-layer.ndim:]  # the layer's own world axes
            z = layer.world_to_data(point)[0]
        except (AttributeError, ValueError, IndexError):
            z = self.viewer.dims.current_step[0]
        return int(min(max(round(float(z)), 0), nz - 1))

    # ------------------------------------------------------------------ actions
    def _start(self, factory: Any, on_result: Any, context: str, sync: bool) -> Any:
        if self.runner is not None and self.runner.running:
            notify_error(RuntimeError("a CRF job is already running"), context)
            return None
        self.runner = JobRunner(factory, self.progress, on_result=on_result, context=context,
                                on_error=drop_broken_pool)
        return self.runner.run_sync() if sync else self.runner.start()

    def _snapshot(self, context: str, **kw: Any) -> RefineRequest | None:
        try:
            return self.config(**kw)
        except ValueError as exc:
            self.status.setText(str(exc))
            notify_error(exc, context)
            return None

    def preview(self, sync: bool = False) -> Any:
        """Refine the current slice in 2D into ``<image> [attnseg+crf preview]``."""
        req = self._snapshot("CRF preview", preview=True)
        if req is None:
            return None
        return self._start(lambda: preview_job(req), lambda r: self._show_preview(req, r),
                           "CRF preview", sync)

    def refine_volume(self, sync: bool = False) -> Any:
        """Refine the whole volume into ``<image> [attnseg+crf]``."""
        req = self._snapshot("CRF refine")
        if req is None:
            return None
        return self._start(lambda: refine_volume_job(req), lambda r: self._show_result(req, r),
                           "CRF refine", sync)

    def autotune(self, sync: bool = False) -> Any:
        """Search parameters maximising Dice against the ground-truth layer; shows the best."""
        req = self._snapshot("CRF auto-tune", with_gt=True)
        if req is None:
            return None
        return self._start(lambda: autotune_job(req), self._show_autotune, "CRF auto-tune", sync)

    # ------------------------------------------------------------------ results (GUI thread)
    def _output_kwargs(self, req: RefineRequest, res: Any, name: str, shape: tuple) -> dict:
        prov = {"crf": {"params": res.params.to_dict(), "n_changed": res.n_changed,
                        "seconds": round(res.seconds, 3), "source": req.source_name}}
        kwargs = derived_layer_kwargs(req.image_layer, name, prov, shape=shape)
        meta = kwargs["metadata"][META_KEY]
        meta["role"] = ROLE
        # the refined labels mean what the source's classes meant (Compare names them); always
        # set (also to {}): a re-run from another source must not keep stale names
        meta["label_names"] = {str(k): v for k, v in layer_label_names(req.source_layer).items()}
        return kwargs

    def _still_there(self, req: RefineRequest) -> bool:
        if req.image_layer in self.viewer.layers:
            return True
        self.status.setText(f"The image '{req.image_name}' was removed; nothing shown")
        return False

    def _show_result(self, req: RefineRequest, res: Any) -> None:
        self.last_result = res
        if not self._still_there(req):
            return
        kwargs = self._output_kwargs(req, res, req.image_name + SUFFIX, res.labels.shape)
        upsert_styled_labels(self.viewer, res.labels, kwargs, derived_style(req.source_layer))
        pct = 100.0 * res.n_changed / max(res.labels.size, 1)
        self.status.setText(f"CRF changed {res.n_changed} voxels ({pct:.2f}%) in "
                            f"{res.seconds:.2f} s ({res.params.mode})")

    def _show_preview(self, req: RefineRequest, out: Any) -> None:
        res, z = out
        self.last_result = res
        if not self._still_there(req):
            return
        labels = res.labels
        if z is not None:
            full = np.zeros(req.image.shape, labels.dtype)
            full[z] = labels
            labels = full
        kwargs = self._output_kwargs(req, res, req.image_name + PREVIEW_SUFFIX, labels.shape)
        upsert_styled_labels(self.viewer, labels, kwargs, derived_style(req.source_layer))
        where = f"slice {z}" if z is not None else "image"
        self.status.setText(f"Preview ({where}): {res.n_changed} voxels changed in "
                            f"{res.seconds:.2f} s")

    def _show_autotune(self, res: Any) -> None:
        self.last_autotune = res
        self.set_params(res.best_params)
        self.status.setText(f"Auto-tune: Dice {res.baseline_dice:.4f} -> {res.best_dice:.4f} "
                            f"({res.gain:+.4f}) over {len(res.trials)} trials; best parameters "
                            "are now in the fields")
