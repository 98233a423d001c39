"""The Fine-tune widget: train a new model version on the user's corrected slices, off the GUI
thread, with a live loss / validation-Dice plot and a Stop button; then show what to correct next.

* Pairs: (image, corrected labels) layers; only the slices marked reviewed (painted on, the
  "Mark current slice reviewed" button or Shift-R on the labels layer) are used for training.
* Train: layers are copied on the GUI thread into ``TrainingPair``s; the fine-tune job runs in a
  thread worker. A new registry version is saved only if its held-out Dice beats the base
  model's, and made active only when that validation can be trusted (foreground in the reviewed
  slices, more than one held-out slice, not stopped early); the result line says which and why.
  The user's labels layers are never modified.
* Uncertainty: entropy of the "<image> [attnseg] probabilities" layer (or of a test-time-flip
  prediction), shown as "<image> [attnseg] uncertainty", with the most uncertain unreviewed slices
  ranked and a "Next slice" button.
* Re-segment: predicts with the new version and writes a new layer where the reviewed slices keep
  the user's labels and only the unreviewed ones are replaced.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout,
                            QLabel, QListWidget, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from .._napari.layers import META_KEY, derived_layer_kwargs, layer_to_volume
from ._plot import PLOT_INTERVAL_S, LossPlot  # noqa: F401  (LossPlot re-exported)
from ._review import ReviewTracker
from ._worker import JobRunner, ProgressPanel, notify_error, upsert_layer

logger = logging.getLogger(__name__)

DEFAULT_LR = 1e-4  #: fine-tuning learning rate (small: the base is already trained)


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


class FinetuneWidget(QWidget):
    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.runner: JobRunner | None = None
        self.aux_runner: JobRunner | None = None
        self.pairs: list[tuple[str, str]] = []
        self.tracker: ReviewTracker | None = None
        self.last_result: Any = None
        self.last_request: TrainRequest | None = None
        self.ranked: list[tuple[int, float]] = []
        self.train_overrides: dict[str, Any] = {}  #: extra TrainConfig fields (tests, experts)
        self._stop = threading.Event()
        self._next_last: int | None = None

        self.image_combo = QComboBox()
        self.labels_combo = QComboBox()
        self.add_pair_button = QPushButton("Add pair")
        self.remove_pair_button = QPushButton("Remove pair")
        self.pairs_list = QListWidget()
        self.pairs_list.setMaximumHeight(60)
        self.model_combo = QComboBox()
        self.budget_combo = QComboBox()
        self.budget_combo.addItems(["epochs", "seconds"])
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 1000)
        self.epochs_spin.setValue(20)
        self.seconds_spin = QSpinBox()
        self.seconds_spin.setRange(5, 24 * 3600)
        self.seconds_spin.setValue(60)
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(5)
        self.lr_spin.setRange(1e-5, 1e-1)
        self.lr_spin.setSingleStep(1e-4)
        # 1e-3 wrecked a well-trained shipped model within a few steps (Dice 0.95 -> 0.40)
        self.lr_spin.setValue(DEFAULT_LR)
        self.freeze_check = QCheckBox("freeze encoder")
        self.precision_combo = QComboBox()
        self.precision_combo.addItems(["fp32", "bf16"])
        self.reviewed_label = QLabel("Reviewed slices: 0")
        self.reviewed_list = QListWidget()
        self.reviewed_list.setMaximumHeight(60)
        self.mark_button = QPushButton("Mark current slice reviewed (Shift-R)")
        self.train_button = QPushButton("Train")
        self.stop_button = QPushButton("Stop (keep best)")
        self.stop_button.setEnabled(False)
        self.progress = ProgressPanel()
        self.progress.cancel_button.setText("Cancel (discard)")
        self.plot = LossPlot()
        self.result_label = QLabel("")
        self.result_label.setWordWrap(True)
        self.resegment_button = QPushButton("Re-segment unreviewed slices")
        self.resegment_button.setEnabled(False)
        self.uncertainty_button = QPushButton("Compute uncertainty")
        self.uncertainty_list = QListWidget()
        self.uncertainty_list.setMaximumHeight(90)
        self.next_button = QPushButton("Next slice")

        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("corrected labels", self.labels_combo)
        row = QHBoxLayout()
        row.addWidget(self.add_pair_button)
        row.addWidget(self.remove_pair_button)
        form.addRow("", row)
        form.addRow("pairs", self.pairs_list)
        form.addRow("base model", self.model_combo)
        budget = QHBoxLayout()
        budget.addWidget(self.budget_combo)
        budget.addWidget(self.epochs_spin)
        budget.addWidget(self.seconds_spin)
        form.addRow("budget", budget)
        form.addRow("learning rate", self.lr_spin)
        form.addRow("", self.freeze_check)
        form.addRow("precision", self.precision_combo)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.reviewed_label)
        lay.addWidget(self.reviewed_list)
        lay.addWidget(self.mark_button)
        row = QHBoxLayout()
        row.addWidget(self.train_button)
        row.addWidget(self.stop_button)
        lay.addLayout(row)
        lay.addWidget(self.progress)
        lay.addWidget(self.plot)
        lay.addWidget(self.result_label)
        lay.addWidget(self.resegment_button)
        lay.addWidget(QLabel("What to correct next"))
        lay.addWidget(self.uncertainty_button)
        lay.addWidget(self.uncertainty_list)
        lay.addWidget(self.next_button)
        lay.addStretch(1)

        self.refresh_models()
        self.refresh_layers()
        self._on_budget_mode()
        self.viewer.layers.events.inserted.connect(self.refresh_layers)
        self.viewer.layers.events.removed.connect(self.refresh_layers)
        self.labels_combo.currentIndexChanged.connect(self._attach_tracker)
        self.budget_combo.currentIndexChanged.connect(self._on_budget_mode)
        self.add_pair_button.clicked.connect(self.add_pair)
        self.remove_pair_button.clicked.connect(self.remove_pair)
        self.mark_button.clicked.connect(self.mark_current)
        self.train_button.clicked.connect(self.train)
        self.stop_button.clicked.connect(self.stop)
        self.resegment_button.clicked.connect(self.resegment)
        self.uncertainty_button.clicked.connect(self.compute_uncertainty)
        self.uncertainty_list.itemClicked.connect(
            lambda item: self.go_to_slice(self.ranked[self.uncertainty_list.row(item)][0]))
        self.next_button.clicked.connect(self.next_slice)
        self._attach_tracker()

    # ------------------------------------------------------------------ choices
    def _layers(self, kind: str) -> list[str]:
        return [ly.name for ly in self.viewer.layers if type(ly).__name__ == kind
                and not (kind == "Image" and "[attnseg]" in ly.name)]

    def refresh_layers(self, *_: Any) -> None:
        for combo, kind in ((self.image_combo, "Image"), (self.labels_combo, "Labels")):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(self._layers(kind))
            if current:
                combo.setCurrentText(current)
            combo.blockSignals(False)
        self._track_all_labels()
        self._attach_tracker()

    def _track_all_labels(self) -> None:
        """Record strokes on every 2D/3D labels layer from its creation, so slices corrected
        before the layer is chosen here still count as reviewed."""
        for ly in self.viewer.layers:
            if type(ly).__name__ == "Labels" and np.ndim(ly.data) in (2, 3):
                ReviewTracker.for_layer(ly, self.viewer)

    def refresh_models(self) -> None:
        from ..errors import ModelError
        from ..model.registry import ModelRegistry

        reg = ModelRegistry()
        self.model_combo.clear()
        entries = reg.list_models()
        preferred = None
        broken: dict[str, str] = {}  # name -> why its active version cannot be told
        try:
            default = reg.default_model()
        except ModelError as exc:
            default = None
            broken["(default)"] = str(exc)
        actives: dict[str, Any] = {}
        for e in entries:
            if e.name not in actives and e.name not in broken:
                try:
                    actives[e.name] = reg.active(e.name)
                except ModelError as exc:  # listed, but the user must fix active.json
                    broken[e.name] = str(exc)
            active = actives.get(e.name)
            is_active = active is not None and active.version == e.version
            self.model_combo.addItem(f"{e.ref}{' (active)' if is_active else ''}", e.ref)
            if is_active and (preferred is None or (default and e.name == default.name)):
                preferred = e.ref
        if broken:
            self.result_label.setText("Model registry problem: " + next(iter(broken.values())))
        if preferred is None and default is not None:
            preferred = default.ref
        if preferred is not None:
            self.model_combo.setCurrentIndex(max(0, self.model_combo.findData(preferred)))

    def _on_budget_mode(self, *_: Any) -> None:
        by_time = self.budget_combo.currentText() == "seconds"
        self.epochs_spin.setVisible(not by_time)
        self.seconds_spin.setVisible(by_time)

    def add_pair(self) -> None:
        pair = (self.image_combo.currentText(), self.labels_combo.currentText())
        if not all(pair):
            raise ValueError("choose an image and its corrected labels layer first")
        if pair not in self.pairs:
            self.pairs.append(pair)
            self.pairs_list.addItem(f"{pair[0]}  ←  {pair[1]}")

    def remove_pair(self) -> None:
        row = self.pairs_list.currentRow()
        if 0 <= row < len(self.pairs):
            self.pairs.pop(row)
            self.pairs_list.takeItem(row)

    # ------------------------------------------------------------------ reviewed slices
    def _attach_tracker(self, *_: Any) -> None:
        name = self.labels_combo.currentText()
        if self.tracker is not None:
            self.tracker.disconnect(self._on_reviewed_changed)
            self.tracker = None
        if name and name in self.viewer.layers:
            self.tracker = ReviewTracker.for_layer(self.viewer.layers[name], self.viewer)
            self.tracker.connect(self._on_reviewed_changed)
        self._on_reviewed_changed()

    def _on_reviewed_changed(self, *_: Any) -> None:
        t = self.tracker
        done = t.reviewed_slices() if t is not None else []
        self.reviewed_label.setText(
            f"Reviewed slices: {len(done)} of {t.n_slices}" if t else "Reviewed slices: -")
        self.reviewed_list.clear()
        self.reviewed_list.addItems([f"slice {i}" for i in done])
        if self.ranked:
            self.ranked = [(i, s) for i, s in self.ranked if i not in set(done)]
            self._show_ranking()

    def mark_current(self) -> int:
        if self.tracker is None:
            raise ValueError("choose the corrected labels layer first")
        return self.tracker.mark_current()

    # ------------------------------------------------------------------ training
    def train_config(self, spatial_dims: int = 2, model_patch: tuple = ()) -> Any:
        from ..training import TrainConfig

        kw: dict[str, Any] = {"lr": self.lr_spin.value(),
                              "freeze_encoder": self.freeze_check.isChecked(),
                              "precision": self.precision_combo.currentText()}
        if self.budget_combo.currentText() == "seconds":
            kw.update(epochs=1000, max_seconds=float(self.seconds_spin.value()))
        else:
            kw.update(epochs=self.epochs_spin.value(), max_seconds=None)
        if spatial_dims != 2 and model_patch:  # the 2D default patch does not fit a 3D model
            kw["patch_size"] = tuple(model_patch)
        kw.update(self.train_overrides)
        return TrainConfig(**kw)

    def snapshot(self) -> TrainRequest:
        """Copy the chosen layers into TrainingPairs (GUI thread)."""
        from ..model.checkpoint import read_spec
        from ..model.registry import ModelRegistry
        from ..training.dataset import TrainingPair

        pairs = list(self.pairs) or [(self.image_combo.currentText(),
                                      self.labels_combo.currentText())]
        out = []
        for img_name, lab_name in pairs:
            if img_name not in self.viewer.layers or lab_name not in self.viewer.layers:
                raise ValueError(f"layer '{img_name}' or '{lab_name}' is not in the viewer")
            img, lab = self.viewer.layers[img_name], self.viewer.layers[lab_name]
            tracker = ReviewTracker.for_layer(lab, self.viewer)
            if not tracker.reviewed_slices():
                raise ValueError(f"no slice of '{lab_name}' is marked reviewed: correct some "
                                 "slices (painting marks them) or press 'Mark current slice'")
            labels = layer_to_volume(lab, np.array(lab.data))
            flags = tracker.reviewed_mask()
            reviewed = flags.copy() if labels.ndim == 3 else np.full(labels.shape, flags[0])
            image = layer_to_volume(img, np.array(img.data))
            from ..io.validate import require_same_grid

            require_same_grid(labels, image, f"labels '{lab_name}'", f"image '{img_name}'")
            out.append(TrainingPair(image=image, labels=labels, reviewed=reviewed))
        ref = self.model_combo.currentData()
        if not ref:
            raise ValueError("no base model: add one to the registry first")
        reg = ModelRegistry()
        base_path = reg.resolve(ref)
        spec = read_spec(base_path)
        name = ref.partition("@")[0]
        active = reg.active(name)
        config = self.train_config(spec.arch.spatial_dims, spec.patch_size)
        return TrainRequest(base_path, tuple(out), config, name,
                            tuple(e.version for e in reg.versions(name)),
                            active.version if active else None, ref.partition("@")[2] or "",
                            pairs[0][0], pairs[0][1])

    def make_runner(self) -> JobRunner | None:
        try:
            req = self.snapshot()
        except Exception as exc:  # shown to the user, not raised into Qt
            notify_error(exc, "Fine-tune")
            return None
        self.last_request = req
        self.last_result = None
        self.plot.clear()
        self.result_label.setText("")
        self._stop = stop = threading.Event()

        def factory():
            from ..model.checkpoint import load_model
            from ..model.registry import ModelRegistry
            from ..training.finetune import finetune_job

            base = load_model(req.base_path)
            return (yield from finetune_job(base, list(req.pairs), req.config, ModelRegistry(),
                                            name=req.name, stop=stop, activate_on_stop=False))

        self.runner = JobRunner(factory, self.progress, on_result=self.show_result,
                                on_progress=self._on_progress, on_finished=self._on_finished,
                                context="Fine-tune")
        return self.runner

    def train(self, *_: Any) -> Any:
        if self.runner is not None and self.runner.running:
            return None
        runner = self.make_runner()
        if runner is None:
            return None
        self.train_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        return runner.start()

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
        if not budget or self.budget_combo.currentText() != "seconds":
            return
        info = p.info
        elapsed = float(info.get("seconds") or 0.0)
        text = f"{elapsed:.0f} s / {budget:.0f} s"
        if p.stage == "train" and info.get("loss") is not None:
            text += f" · loss {float(info['loss']):.4f}"
        elif p.stage == "validate" and info.get("val_dice") is not None:
            text += f" · validation Dice {float(info['val_dice']):.4f}"
            if info.get("best_val_dice") is not None:
                text += f" (best {float(info['best_val_dice']):.4f})"
        self.progress.status.setText(text)
        self.progress.bar.setValue(int(min(100.0, 100.0 * elapsed / float(budget))))

    def _on_finished(self) -> None:
        self.train_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self.plot.redraw()
        if self.runner is not None and self.runner.cancelled and self.last_request is not None:
            self.result_label.setText(self._cancelled_message(self.last_request))
        self.refresh_models()

    def _cancelled_message(self, req: TrainRequest) -> str:
        from ..model.registry import ModelRegistry

        from ..errors import ModelError

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

    def show_result(self, result: Any) -> None:
        self.last_result = result
        entry = result.entry
        stopped = getattr(result.train_result, "stopped", "") == "stopped"
        dice = (f"{'Stopped: ' if stopped else ''}held-out Dice before {result.before_dice:.3f}"
                f" → {'best ' if entry is None else 'after '}{result.after_dice:.3f}")
        n_val = int(getattr(result, "val_slices", 0) or 0)
        if n_val:
            dice += f" on {n_val} held-out slice{'s' if n_val != 1 else ''}"
        if entry is None:  # no epoch beat the base: no version was written
            self.result_label.setText(f"{dice}. No improvement within the budget: nothing saved; the "
                                      "previous version stays active.")
            self.resegment_button.setEnabled(False)
            return
        self.progress.bar.setValue(100)
        # the job is run with activate_on_stop=False: Stop never changes the active model
        text = f"{dice}; saved as {entry.ref}. "
        if result.activated:
            text += f"{entry.ref} is now active."
        else:
            why = "; ".join(getattr(result, "not_activated_because", ()) or ())
            if not why and stopped:
                why = "training was stopped"
            text += (f"Not activated{(' because ' + why) if why else ''}: the previous version stays active; "
                     f"you can still pick v{entry.version}.")
        self.result_label.setText(text)
        self.resegment_button.setEnabled(True)

    # ------------------------------------------------------------------ re-segment
    def resegment(self, *_: Any, sync: bool = False) -> Any:
        """Predict with the new version; reviewed slices keep the user's labels."""
        if self.last_result is None or self.last_request is None:
            raise ValueError("train a model first")
        req = self.last_request
        img = self.viewer.layers[req.image_name]
        lab = self.viewer.layers[req.labels_name]
        volume = layer_to_volume(img, np.array(img.data))
        user = np.array(lab.data)
        reviewed = ReviewTracker.for_layer(lab, self.viewer).reviewed_mask()
        path, version = self.last_result.entry.path, self.last_result.entry.version

        def factory():
            from ..inference.predictor import PredictConfig, predict_job
            from ..model.checkpoint import load_model

            return (yield from predict_job(load_model(path), volume, PredictConfig()))

        def done(pred: Any) -> None:
            out = np.asarray(pred.labels).astype(user.dtype, copy=True)
            if out.ndim == 3:
                out[reviewed] = user[reviewed]
            name = f"{req.image_name} [attnseg]"
            if name in self.viewer.layers and (
                    name == req.labels_name or
                    (self.viewer.layers[name].metadata.get(META_KEY) or {}).get("edited")):
                name = f"{name} (v{version})"
            kw = derived_layer_kwargs(img, name, provenance=pred.provenance)
            upsert_layer(self.viewer, out, kw, "labels")

        self.aux_runner = JobRunner(factory, self.progress, on_result=done, context="Re-segment")
        return self.aux_runner.run_sync() if sync else self.aux_runner.start()

    # ------------------------------------------------------------------ uncertainty
    def compute_uncertainty(self, *_: Any, sync: bool = False) -> Any:
        from ..inference.uncertainty import entropy_map

        name = self.image_combo.currentText()
        if name not in self.viewer.layers:
            raise ValueError("choose an image layer first")
        img = self.viewer.layers[name]
        prob_name = f"{name} [attnseg] probabilities"
        if prob_name in self.viewer.layers:
            from .refine import class_probabilities

            layer = self.viewer.layers[prob_name]
            probs = class_probabilities(layer, tuple(img.data.shape))  # every class, if kept
            probs = np.asarray(layer.data if probs is None else probs, dtype=np.float32)
            if probs.ndim == img.data.ndim:  # the layer holds the foreground probability
                probs = np.stack([1.0 - probs, probs])
            self.show_uncertainty(name, entropy_map(probs))
            return None
        volume = layer_to_volume(img, np.array(img.data))
        ref = self.model_combo.currentData()
        if not ref:
            raise ValueError("no model to predict with: segment first or add a model")

        def factory():
            from ..inference.uncertainty import flip_uncertainty_job
            from ..model.checkpoint import load_model
            from ..model.registry import ModelRegistry

            model = load_model(ModelRegistry().resolve(ref))
            return (yield from flip_uncertainty_job(model, volume))

        self.aux_runner = JobRunner(factory, self.progress, context="Uncertainty",
                                    on_result=lambda r: self.show_uncertainty(name, r.entropy))
        return self.aux_runner.run_sync() if sync else self.aux_runner.start()

    def show_uncertainty(self, image_name: str, umap: np.ndarray) -> None:
        from ..inference.uncertainty import rank_slices

        img = self.viewer.layers[image_name]
        kw = derived_layer_kwargs(img, f"{image_name} [attnseg] uncertainty")
        kw.update(colormap="inferno", contrast_limits=(0.0, 1.0), blending="additive")
        upsert_layer(self.viewer, umap, kw, "image")
        reviewed = self.tracker.reviewed_mask() if self.tracker is not None and \
            umap.ndim == 3 and self.tracker.n_slices == umap.shape[0] else None
        self.ranked = rank_slices(umap, reviewed=reviewed, top_k=20) if umap.ndim == 3 else []
        self._show_ranking()

    def _show_ranking(self) -> None:
        self.uncertainty_list.clear()
        self.uncertainty_list.addItems([f"slice {i}: {s:.3f}" for i, s in self.ranked])

    def go_to_slice(self, index: int) -> None:
        name = self.image_combo.currentText()
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        if layer is None or layer.ndim != 3:
            return
        world = layer.data_to_world((index, 0, 0))
        axis = self.viewer.dims.ndim - layer.ndim
        self.viewer.dims.set_point(axis, float(world[0]))

    def next_slice(self, *_: Any) -> int | None:
        """Go to the next most uncertain unreviewed slice: the top one, or the one after the
        slice "Next" showed last if the viewer still shows it (wrapping)."""
        if not self.ranked:
            return None
        order = [i for i, _ in self.ranked]
        current = self.tracker.current_slice() if self.tracker is not None else None
        last = self._next_last
        pos = order.index(last) + 1 if last in order and last == current else 0
        target = order[pos % len(order)]
        self._next_last = target
        self.go_to_slice(target)
        return target
