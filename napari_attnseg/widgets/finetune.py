"""The Fine-tune widget: train a new model version on the user's corrected slices or scribbles,
off the GUI thread, with a live loss / validation-Dice plot and a Stop button; then show what to
correct next.

* The **labels** picker lists corrected-labels layers and scribbles layers (``<scan>
  [scribbles]`` of "Correct with scribbles", by role); the mode follows the chosen layer's role
  and is stated. *Corrected labels*: only the slices marked reviewed (painted on, "Mark current
  slice reviewed" or Shift-R) train. *Scribbles*: only the strokes train (unscribbled voxels
  carry no loss: partial cross-entropy + gated-CRF term, as ``attnseg finetune
  --ignore-label``); the slices with a stroke count as reviewed; the info line counts voxels /
  slices per class. Train is disabled with the reason while nothing can train.
* Train: layers are copied on the GUI thread into ``TrainingPair``\ s and the core fine-tune runs
  in a thread worker; a new version is saved only if it beats the base on held-out slices and
  made active only when the core's rules trust that validation; the result line says which and
  why (scribbles: with the caveat of a validation too small to judge). User layers are never
  modified. Re-segment writes the new prediction where the user's work wins.

Parts: :mod:`._finetune_form` (widgets, layout, TrainConfig, models), :mod:`._finetune_request`
(modes, scribble counts, Run's reasons, the training pairs), :mod:`._finetune_results` (what is
said and written after a run), :mod:`._finetune_uncertainty` (what to correct next),
:mod:`._finetune_scribble` (scribbles with a 2D model: the scribble fine-tune core, issue 13).
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QWidget

from .._napari.layers import META_KEY, derived_layer_kwargs, layer_to_volume
from ._layers import follow_layers
from ._finetune_form import DEFAULT_LR, budget_by_time, build_form, fill_models, train_config
from ._finetune_request import (
    MODE_LABELS, MODE_SCRIBBLES, MODE_TEXT, TrainRequest, build_request, class_names, labels_mode,
    pair_problems, scribble_caveat, scribble_summary, target_layers,
)
from ._finetune_results import budget_status, cancelled_text, result_text, resegmented
from ._finetune_scribble import (CORE_MODE_TEXT, ScribbleOutcome, ScribbleRequest,
                                 build_scribble_request, core_caveat, finetune_factory,
                                 outcome_text, uses_core)
from ._finetune_uncertainty import UncertaintyMixin
from ._plot import PLOT_INTERVAL_S, LossPlot  # noqa: F401  (LossPlot re-exported)
from ._review import ReviewTracker
from ._worker import JobRunner, notify_error, upsert_layer

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_LR", "FinetuneWidget", "LossPlot", "MODE_LABELS", "MODE_SCRIBBLES", "TrainRequest"]


class FinetuneWidget(UncertaintyMixin, QWidget):
    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.runner: JobRunner | None = None
        self.aux_runner: JobRunner | None = None
        self.pairs: list[tuple[str, str]] = []
        self._pair_layers: list[tuple[Any, Any]] = []  #: weak references to the pairs' layers
        self.tracker: ReviewTracker | None = None
        self.last_result: Any = None
        self.last_request: TrainRequest | None = None
        self.ranked: list[tuple[int, float]] = []
        self.train_overrides: dict[str, Any] = {}  #: extra TrainConfig fields (tests, experts)
        self.scribble_overrides: dict[str, Any] = {}  #: ScribbleFinetuneConfig fields (2D scribbles)
        self._stop = threading.Event()
        self._next_last: int | None = None
        self._watched = weakref.WeakSet()  # labels layers whose changes update the state
        self._summaries = weakref.WeakKeyDictionary()  # scribbles layer -> its ScribbleSummary
        self._training = False  # a threaded run is going (Train stays disabled)
        build_form(self, self._image_choices, self._labels_choices)
        self._recount = QTimer(self)
        self._recount.setSingleShot(True)
        self._recount.setInterval(0)
        self._recount.timeout.connect(self._on_reviewed_changed)

        self.refresh_models()
        self.refresh_layers()
        self._on_budget_mode()
        follow_layers(self.viewer, self.refresh_layers)
        self.labels.changed.connect(self._on_labels_chosen)
        self.image.changed.connect(self.update_state)
        self.model_combo.currentIndexChanged.connect(self.update_state)
        self.params.budget.changed.connect(self._on_budget_mode)
        self.add_pair_button.clicked.connect(self.add_pair)
        self.remove_pair_button.clicked.connect(self.remove_pair)
        self.mark_button.clicked.connect(self.mark_current)
        self.unmark_button.clicked.connect(lambda *_: self.tracker and self.tracker.unmark_current())
        self.train_button.clicked.connect(self.train)
        self.stop_button.clicked.connect(self.stop)
        self.resegment_button.clicked.connect(self.resegment)
        self.uncertainty_button.clicked.connect(self.compute_uncertainty)
        self.uncertainty_list.itemClicked.connect(
            lambda item: self.go_to_slice(self.ranked[self.uncertainty_list.row(item)][0]))
        self.next_button.clicked.connect(self.next_slice)
        self._attach_tracker()

    # ------------------------------------------------------------------ choices
    def _image_choices(self, *_: Any) -> list:
        return [(ly.name, ly) for ly in self.viewer.layers
                if type(ly).__name__ == "Image" and "[attnseg]" not in ly.name]

    def _labels_choices(self, *_: Any) -> list:
        return [(ly.name, ly) for ly in target_layers(self.viewer)]

    def refresh_layers(self, *_: Any) -> None:
        """The pickers follow the viewer (the choice is kept while its layer is there)."""
        self.pickers.reset_choices()
        self._rename_pairs()
        self._track_all_labels()
        self._attach_tracker()

    #: napari calls this for a docked widget on layer insertions, removals, reorders, renames
    reset_choices = refresh_layers

    def _track_all_labels(self) -> None:
        """Record strokes on every 2D/3D corrected-labels layer from its creation, so slices
        corrected before the layer is chosen here still count as reviewed (scribbles layers
        need no tracker: their strokes are their reviewed slices)."""
        for ly in self.viewer.layers:
            if type(ly).__name__ == "Labels" and np.ndim(ly.data) in (2, 3):
                if labels_mode(ly) == MODE_LABELS:
                    ReviewTracker.for_layer(ly, self.viewer)
                self._watch(ly)

    def _watch(self, layer: Any) -> None:
        """Update Run's state and the info line when ``layer`` changes (once per layer)."""
        if layer in self._watched:
            return
        self._watched.add(layer)
        if labels_mode(layer) == MODE_SCRIBBLES:
            ref = weakref.ref(layer)

            def changed(*_: Any) -> None:
                # napari emits ``paint`` for data_setitem before it writes: count on the next
                # turn of the event loop (one count for a burst of strokes)
                if ref() is not None:
                    self._summaries.pop(ref(), None)
                self._recount.start()

            layer.events.paint.connect(changed)
            layer.events.data.connect(changed)
        else:
            ReviewTracker.for_layer(layer, self.viewer).connect(self.update_state)

    refresh_models = fill_models

    def _on_budget_mode(self, *_: Any) -> None:
        by_time = budget_by_time(self)
        self.params.epochs.visible = not by_time  # (the row with its label)
        self.params.seconds.visible = by_time

    def add_pair(self) -> None:
        pair = (self.image_combo.currentText(), self.labels_combo.currentText())
        if not all(pair):
            raise ValueError("choose an image and its labels layer (corrected labels or scribbles) first")
        if pair not in self.pairs:
            self.pairs.append(pair)
            self._pair_layers.append(tuple(weakref.ref(self.viewer.layers[n]) for n in pair))
            self.pairs_list.addItem(f"{pair[0]}  ←  {pair[1]}")
        self.update_state()

    def _rename_pairs(self) -> None:
        """A pair follows its layers' renames (a removed layer keeps its name: the info line
        says it is gone)."""
        for row, refs in enumerate(self._pair_layers):
            names = tuple(ref().name if ref() is not None else old
                          for ref, old in zip(refs, self.pairs[row]))
            if names != self.pairs[row]:
                self.pairs[row] = names
                self.pairs_list.item(row).setText(f"{names[0]}  ←  {names[1]}")

    def remove_pair(self) -> None:
        row = self.pairs_list.currentRow()
        if 0 <= row < len(self.pairs):
            self.pairs.pop(row)
            self._pair_layers.pop(row)
            self.pairs_list.takeItem(row)
        self.update_state()

    # ------------------------------------------------------------------ the target
    def labels_layer(self) -> Any:
        name = self.labels_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    @property
    def mode(self) -> str:
        """:data:`MODE_SCRIBBLES` when the chosen labels layer is a scribbles layer."""
        layer = self.labels_layer()
        return labels_mode(layer) if layer is not None else MODE_LABELS

    def _on_labels_chosen(self, *_: Any) -> None:
        layer = self.labels_layer()
        if layer is not None and self.mode == MODE_SCRIBBLES:  # its scan, as the name says
            stem = layer.name.split(" [")[0]
            if self.image_combo.findText(stem) >= 0:
                self.image_combo.setCurrentText(stem)
        self._attach_tracker()

    def _attach_tracker(self, *_: Any) -> None:
        if self.tracker is not None:
            self.tracker.disconnect(self._on_reviewed_changed)
            self.tracker = None
        layer = self.labels_layer()
        if layer is not None and self.mode == MODE_LABELS:
            self.tracker = ReviewTracker.for_layer(layer, self.viewer)
            self.tracker.connect(self._on_reviewed_changed)
        self.mark_button.setEnabled(self.mode == MODE_LABELS)
        self.unmark_button.setEnabled(self.mode == MODE_LABELS)
        self._on_reviewed_changed()

    def reviewed_flags(self) -> np.ndarray | None:
        """Per-slice flags of the chosen target: its reviewed (or scribbled) slices."""
        layer = self.labels_layer()
        if layer is None:
            return None
        if self.mode == MODE_SCRIBBLES:
            s = self.summary(layer)
            flags = np.zeros(s.n_slices, bool)
            flags[list(s.slices)] = True
            return flags
        return self.tracker.reviewed_mask() if self.tracker is not None else None

    def current_slice(self) -> int | None:
        """The slice the viewer shows of the chosen target (None without one)."""
        if self.tracker is not None:
            return self.tracker.current_slice()
        layer = self.labels_layer()
        if layer is None or np.ndim(layer.data) != 3:
            return None if layer is None else 0
        idx = int(np.round(np.asarray(layer.world_to_data(self.viewer.dims.point[-layer.ndim:]))[0]))
        return int(np.clip(idx, 0, layer.data.shape[0] - 1))

    def _on_reviewed_changed(self, *_: Any) -> None:
        flags = self.reviewed_flags()
        done = [int(i) for i in np.flatnonzero(flags)] if flags is not None else []
        what = " (slices with a scribble)" if self.mode == MODE_SCRIBBLES else ""
        self.reviewed_label.setText(f"Reviewed slices: {len(done)} of {flags.shape[0]}{what}"
                                    if flags is not None else "Reviewed slices: -")
        self.reviewed_list.clear()
        self.reviewed_list.addItems([f"slice {i}" for i in done])
        if self.ranked:
            self.ranked = [(i, s) for i, s in self.ranked if i not in set(done)]
            self._show_ranking()
        self.update_state()

    def summary(self, layer: Any) -> Any:
        """The ScribbleSummary of a scribbles layer (kept until the layer's next change)."""
        if layer not in self._watched:  # its changes are not seen: count now
            return scribble_summary(layer.data)
        if layer not in self._summaries:
            self._summaries[layer] = scribble_summary(layer.data)
        return self._summaries[layer]

    def _pairs(self) -> list[tuple[str, str]]:
        return list(self.pairs) or [(self.image_combo.currentText(), self.labels_combo.currentText())]

    def problems(self) -> list[str]:
        """Why Train is disabled (empty when it can run)."""
        return pair_problems(self.viewer, self._pairs(),
                             lambda ly: ReviewTracker.for_layer(ly, self.viewer).reviewed_slices(),
                             self.summary)

    def update_state(self, *_: Any) -> None:
        """The mode line, the info line (scribble counts, or why Train is disabled) and Train."""
        layer, mode, ref = self.labels_layer(), self.mode, self.model_combo.currentData()
        core = mode == MODE_SCRIBBLES and uses_core(self.viewer, self._pairs(), ref)
        self.mode_label.setText((CORE_MODE_TEXT if core else MODE_TEXT[mode]) if layer is not None else "")
        problems = self.problems()
        text = ""
        if mode == MODE_SCRIBBLES and layer is not None:
            summary = self.summary(layer)
            text = summary.text(class_names(self.viewer, layer, ref))
            if not problems:
                text += " " + (core_caveat(self.scribble_overrides) if core else
                               scribble_caveat(summary, self.train_overrides))
        if problems:
            text = (text + " " if text else "") + "Cannot train: " + "; ".join(problems) + "."
        self.info_label.setText(text)
        self.train_button.setEnabled(not problems and not self._training)
        self.train_button.setToolTip("; ".join(problems))

    def mark_current(self) -> int:
        if self.tracker is None:
            raise ValueError("choose the corrected labels layer first (scribbled slices are reviewed)")
        return self.tracker.mark_current()

    # ------------------------------------------------------------------ training
    def train_config(self, spatial_dims: int = 2, model_patch: tuple = ()) -> Any:
        return train_config(self, spatial_dims, model_patch, sparse=self.mode == MODE_SCRIBBLES)

    def snapshot(self) -> TrainRequest | ScribbleRequest:
        """Copy the chosen layers into TrainingPairs, or the scribble fine-tune's request for
        one scribbles pair and a 2D model (GUI thread)."""
        pairs, ref = self._pairs(), self.model_combo.currentData()
        if uses_core(self.viewer, pairs, ref):
            return build_scribble_request(self.viewer, pairs, ref, self.params.seconds.value,
                                          self.scribble_overrides)
        return build_request(self.viewer, pairs, self.model_combo.currentData(),
                             lambda dims, patch, mode: train_config(
                                 self, dims, patch, sparse=mode == MODE_SCRIBBLES))

    def make_runner(self) -> JobRunner | None:
        try:
            req = self.snapshot()
        except Exception as exc:  # shown to the user, not raised into Qt
            return notify_error(exc, "Fine-tune")
        self.last_request = req
        self.last_result = None
        self.plot.clear()
        self.result_label.setText("")
        self._stop = threading.Event()
        self.runner = JobRunner(finetune_factory(req, self._stop), self.progress, on_result=self.show_result,
                                on_progress=self._on_progress, on_finished=self._on_finished,
                                context="Fine-tune")
        return self.runner

    def train(self, *_: Any) -> Any:
        if self.runner is not None and self.runner.running:
            return None
        runner = self.make_runner()
        if runner is None:
            return None
        self._training = True
        self.train_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        try:
            return runner.start()
        except Exception:
            self._training = False
            self.update_state()
            raise

    def stop(self, *_: Any) -> None:
        """End training after the current batch; the best weights are validated and saved as
        a new version, which is not activated (the previous model stays active)."""
        self._stop.set()
        self.stop_button.setEnabled(False)
        self.progress.status.setText("Stopping after this batch (the best weights are kept)...")

    def _on_progress(self, p: Any) -> None:
        if p.info:
            self.plot.add(p.stage, p.info)
            self._show_time_budget(p)

    def _show_time_budget(self, p: Any) -> None:
        """With a time budget the epoch count is only an internal cap ("epoch 1/1000"): show the
        elapsed / budget seconds instead, and fill the bar by time."""
        req = self.last_request
        budget = getattr(req.config, "max_seconds", None) if req is not None else None
        if not budget or not (budget_by_time(self) or isinstance(req, ScribbleRequest)):
            return
        text, value = budget_status(p, budget)
        self.progress.status.setText(text)
        self.progress.bar.setValue(value)

    def _on_finished(self) -> None:
        self.stop_button.setEnabled(False)
        self.plot.redraw()
        if self.runner is not None and self.runner.cancelled and self.last_request is not None:
            self.result_label.setText(cancelled_text(self.last_request))
        self.refresh_models()
        self._training = False
        self.update_state()  # Train enabled again, unless something is missing now

    def show_result(self, result: Any) -> None:
        self.last_result = result
        mode = self.last_request.mode if self.last_request is not None else MODE_LABELS
        self.result_label.setText(outcome_text(result) if isinstance(result, ScribbleOutcome)
                                  else result_text(result, mode))
        if result.entry is None:  # no epoch beat the base: no version was written
            self.resegment_button.setEnabled(False)
            return
        self.progress.bar.setValue(100)
        self.resegment_button.setEnabled(True)

    # ------------------------------------------------------------------ re-segment
    def resegment(self, *_: Any, sync: bool = False) -> Any:
        """Predict with the new version; reviewed slices keep the user's labels (scribbles:
        the strokes keep their class)."""
        if self.last_result is None or self.last_request is None:
            raise ValueError("train a model first")
        req = self.last_request
        img = self.viewer.layers[req.image_name]
        lab = self.viewer.layers[req.labels_name]
        volume = layer_to_volume(img, np.array(img.data))
        user = np.array(lab.data)
        reviewed = ReviewTracker.for_layer(lab, self.viewer).reviewed_mask() \
            if req.mode == MODE_LABELS else None
        path, version = self.last_result.entry.path, self.last_result.entry.version

        def factory():
            from ..inference.predictor import PredictConfig, predict_job
            from ..model.checkpoint import load_model

            return (yield from predict_job(load_model(path), volume, PredictConfig()))

        def done(pred: Any) -> None:
            out = resegmented(pred.labels, user, reviewed, req.mode)
            name = f"{req.image_name} [attnseg]"
            if name in self.viewer.layers and (
                    name == req.labels_name or
                    (self.viewer.layers[name].metadata.get(META_KEY) or {}).get("edited")):
                name = f"{name} (v{version})"
            kw = derived_layer_kwargs(img, name, provenance=pred.provenance)
            upsert_layer(self.viewer, out, kw, "labels")

        self.aux_runner = JobRunner(factory, self.progress, on_result=done, context="Re-segment")
        return self.aux_runner.run_sync() if sync else self.aux_runner.start()
