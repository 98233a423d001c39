"""The Segment widget: pick an image and a model, see the window count and the device, then
preview the current slice or segment the whole volume off the GUI thread.

Results (re-run in place, on the image's grid, with provenance in ``metadata["attnseg"]``):

* Labels ``"<image> [attnseg]"`` (uint8/uint16 class indices);
* Image ``"<image> [attnseg] probabilities"``: the foreground probability, shape (*spatial)
  (class 1 for a two-class model, 1 - p(background) for more classes, so no extra channel
  slider appears). For more than two classes every class, shape (C, *spatial), is kept in
  memory in ``layer.metadata["attnseg"]["class_probabilities"]`` (``None`` for two classes),
  which the Refine (CRF) widget uses when present.

A labels layer the user has edited (painted on, or ``metadata["attnseg"]["edited"]`` set by the
fine-tune tools) is never overwritten: the new result goes to ``"<image> [attnseg] (new)"``.
torch and the inference package are imported only when a model is used.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .._compute import compute_thread
from .._napari.layers import META_KEY, derived_layer_kwargs, layer_to_volume
from ._worker import JobRunner, ProgressPanel, notify_error, upsert_layer, warm_layer_machinery

logger = logging.getLogger(__name__)

BROWSE = "Browse folder..."
NO_MODEL_TEXT = "no model installed: train one with `attnseg train` or pick a folder"
PREVIEW_SYNC_S = 0.1  #: previews faster than this run on the GUI thread
LAYER_GAP_MS = 40  #: pause between adding two new result layers (the viewer redraws meanwhile)


class _RefreshingComboBox(QComboBox):
    """A combo box that refreshes its items just before its list opens."""

    def __init__(self, refresh: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self._refresh = refresh

    def showPopup(self) -> None:  # noqa: N802 (Qt API)
        self._refresh()
        super().showPopup()


@dataclass(frozen=True)
class SegmentRequest:
    """Everything a run needs, read on the GUI thread."""

    image_name: str
    volume: Any  # Volume
    model_folder: Path
    config: Any  # PredictConfig
    slice_index: int | None = None


class SegmentWidget(QWidget):
    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self._models: dict[str, Any] = {}
        self._intensity: dict[tuple, Any] = {}
        self._warm_key: tuple | None = None  #: what the model was last warmed up for
        self._warm_worker: Any = None
        self._warm_pending: tuple | None = None  #: (key, folder, config) asked for meanwhile
        self._warm_idle: threading.Event | None = None  #: set when the running warm-up ends
        self._pending_layers = 0  #: result layers scheduled for the next event-loop turn
        self._last_preview_s: float | None = None
        self.runner: JobRunner | None = None
        self.last_prediction = None
        self._model_picked = False  #: the user chose a model: no preselection by modality
        self._browsed: list[Path] = []  #: model folders picked with "Browse folder..."

        self.image_combo = QComboBox()
        self.model_combo = _RefreshingComboBox(lambda: self.refresh_models())
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(["auto", "CT", "MR", "US"])
        self.overlap_spin = QDoubleSpinBox()
        self.overlap_spin.setRange(0.0, 0.9)
        self.overlap_spin.setSingleStep(0.05)
        self.overlap_spin.setValue(0.5)
        self.tta_check = QCheckBox("mirror test-time augmentation")
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda"])
        self.precision_combo = QComboBox()
        self.precision_combo.addItems(["fp32", "amp", "bf16"])
        self.window_combo = QComboBox()
        self.window_combo.addItems(["auto", "slice", "patch"])
        self.window_combo.setToolTip(
            "2D models: 'slice' runs each whole slice as one window (fastest); 'patch' uses the "
            "model's training patch with Gaussian-blended overlap; 'auto' = slice unless huge")
        self.info_label = QLabel("")
        self.info_label.setWordWrap(True)
        self.preview_button = QPushButton("Preview slice")
        self.run_button = QPushButton("Segment volume")
        self.progress = ProgressPanel()

        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("model", self.model_combo)
        form.addRow("preset", self.preset_combo)
        form.addRow("overlap", self.overlap_spin)
        form.addRow("", self.tta_check)
        form.addRow("device", self.device_combo)
        form.addRow("precision", self.precision_combo)
        form.addRow("window", self.window_combo)
        buttons = QHBoxLayout()
        buttons.addWidget(self.preview_button)
        buttons.addWidget(self.run_button)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.info_label)
        lay.addLayout(buttons)
        lay.addWidget(self.progress)
        lay.addStretch(1)

        self.refresh_models()
        self.refresh_images()
        self.viewer.layers.events.inserted.connect(self.refresh_images)
        self.viewer.layers.events.removed.connect(self.refresh_images)
        self.model_combo.activated.connect(self._on_model_activated)
        self.image_combo.currentIndexChanged.connect(self._preselect_model)
        for sig in (self.image_combo.currentIndexChanged, self.model_combo.currentIndexChanged,
                    self.device_combo.currentIndexChanged, self.tta_check.toggled,
                    self.overlap_spin.valueChanged, self.window_combo.currentIndexChanged):
            sig.connect(self.update_info)
        self.preview_button.clicked.connect(self.preview_slice)
        self.run_button.clicked.connect(self.segment_volume)
        self.update_info()

    # ------------------------------------------------------------------ choices
    def refresh_images(self, *_: Any) -> None:
        from napari.layers import Image

        current = self.image_combo.currentText()
        names = [ly.name for ly in self.viewer.layers
                 if isinstance(ly, Image) and "[attnseg]" not in ly.name]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        self.image_combo.blockSignals(False)
        if self.image_combo.currentText() != current:
            self._preselect_model()
        self.update_info()

    def refresh_models(self) -> None:
        """List the registry's models (re-read each time the list is opened, so a version a
        fine-tune just saved appears). The user's choice is kept; otherwise the default model
        for the image's modality (a fine-tuned version once it is active) is selected."""
        from ..model.registry import ModelRegistry

        reg = ModelRegistry()
        previous = self.model_combo.currentData()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for e in reg.list_models():
            tag = " (shipped)" if e.shipped else ""
            self.model_combo.addItem(f"{e.ref}{tag}", str(e.path))
        for folder in self._browsed:  # folders picked with "Browse folder..."
            if self.model_combo.findData(str(folder)) < 0:
                self.model_combo.addItem(folder.name, str(folder))
        idx = self.model_combo.findData(previous) if previous else -1
        if not (self._model_picked and idx >= 0):
            default = reg.default_model(self._image_modality())
            idx = self.model_combo.findData(str(default.path)) if default is not None else -1
        if idx >= 0:
            self.model_combo.setCurrentIndex(idx)
        self.model_combo.addItem(BROWSE, None)
        self.model_combo.blockSignals(False)
        if self.model_combo.currentData() != previous:
            self.update_info()

    def _image_modality(self) -> str | None:
        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            return None
        meta = self.viewer.layers[name].metadata.get(META_KEY) or {}
        modality = meta.get("modality") if isinstance(meta, dict) else None
        return str(modality) if modality else None

    def _preselect_model(self, *_: Any) -> None:
        """Select the shipped model for the image's modality (``metadata["attnseg"]["modality"]``)
        unless the user picked a model."""
        from ..model.registry import ModelRegistry

        modality = self._image_modality()
        if self._model_picked or not modality:
            return
        entry = ModelRegistry().default_model(modality)
        if entry is None:
            return
        idx = self.model_combo.findData(str(entry.path))
        if idx >= 0 and idx != self.model_combo.currentIndex():
            self.model_combo.setCurrentIndex(idx)

    def set_model_folder(self, folder: str | Path) -> None:
        """Add a model folder (from "Browse folder..." or a test) and select it."""
        self._model_picked = True
        folder = Path(folder)
        if folder not in self._browsed:
            self._browsed.append(folder)
        idx = self.model_combo.findData(str(folder))
        if idx < 0:
            self.model_combo.insertItem(self.model_combo.count() - 1, folder.name, str(folder))
            idx = self.model_combo.findData(str(folder))
        self.model_combo.setCurrentIndex(idx)
        self.update_info()

    def _on_model_activated(self, index: int) -> None:
        if self.model_combo.itemText(index) != BROWSE:
            self._model_picked = True  # a choice by the user (activated = user interaction)
            return
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder")
        if folder:
            self.set_model_folder(folder)
        else:
            self.model_combo.setCurrentIndex(max(0, index - 1))

    def model_folder(self) -> Path | None:
        data = self.model_combo.currentData()
        return Path(data) if data else None

    def _load(self, folder: Path) -> Any:
        from ..model.checkpoint import load_model

        key = str(folder)
        cfg = folder / "config.json"
        stamp = cfg.stat().st_mtime_ns if cfg.exists() else 0
        cached = self._models.get(key)
        if cached is None or cached[0] != stamp:
            # on the compute thread: torch work on the GUI thread would slow every later run
            # (see napari_attnseg._compute)
            cached = (stamp, compute_thread().call(load_model, folder))
            self._models[key] = cached
        return cached[1]

    def config(self) -> Any:
        from ..inference.predictor import PredictConfig

        preset = self.preset_combo.currentText()
        return PredictConfig(
            overlap=self.overlap_spin.value(), tta=self.tta_check.isChecked(),
            device=self.device_combo.currentText(), precision=self.precision_combo.currentText(),
            modality=None if preset == "auto" else preset,
            window=self.window_combo.currentText(),
        )

    def image_layer(self) -> Any:
        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise ValueError("choose an image layer to segment (open a scan first)")
        return self.viewer.layers[name]

    # ------------------------------------------------------------------ info line
    def update_info(self, *_: Any) -> None:
        """Show the window count, device and memory plan before running."""
        folder = self.model_folder()
        if folder is None:
            self.info_label.setText(NO_MODEL_TEXT)
            return
        name = self.image_combo.currentText()
        if not name:
            self.info_label.setText("open an image to segment")
            return
        try:
            from ..inference.device import device_summary, select_device
            from ..inference.predictor import plan_prediction

            cfg = self.config()
            device = select_device(cfg.device)
            model = self._load(folder)
            plan = plan_prediction(model, layer_to_volume(self.image_layer()), cfg, device=device)
        except Exception as exc:  # shown in the info line; the buttons report it properly
            logger.debug("cannot plan: %s", exc)
            self.info_label.setText(f"cannot run: {exc}")
            return
        text = f"{plan.message}. Device: {device_summary(device)}."
        if device.type == "cpu":
            text += " Running on CPU: slower."
        if plan.decision == "refuse":
            text = f"cannot run: {plan.message}"
        self.info_label.setText(text)
        if plan.decision != "refuse":
            self._warm_up(folder, cfg)

    # ------------------------------------------------------------------ running
    def snapshot(self, slice_index: int | None = None) -> SegmentRequest:
        folder = self.model_folder()
        if folder is None:
            raise ValueError(NO_MODEL_TEXT)
        layer = self.image_layer()
        return SegmentRequest(layer.name, layer_to_volume(layer), folder, self.config(),
                              slice_index)

    def current_slice_index(self) -> int:
        layer = self.image_layer()
        if layer.ndim < 3:
            return 0
        coords = layer.world_to_data(self.viewer.dims.point)
        return int(np.clip(round(float(coords[0])), 0, layer.data.shape[0] - 1))

    def segment_volume(self, *_: Any) -> JobRunner | None:
        """Start a whole-volume run in a worker; returns the runner (``None`` on bad input)."""
        runner = self.make_runner()
        if runner is not None:
            runner.start()
        return runner

    def make_runner(self, slice_index: int | None = None) -> JobRunner | None:
        """The JobRunner for a whole-volume run (or a slice preview), not started."""
        from ..inference.predictor import as_volume, predict_job, predict_slice

        if self.runner is not None and self.runner.running:
            notify_error(ValueError("a segmentation is already running"), "Segment")
            return None
        try:
            req = self.snapshot(slice_index)
            model = self._load(req.model_folder)
            as_volume(model, req.volume)  # input checks with fix-it messages, before any thread
        except Exception as exc:
            notify_error(exc, "Segment")
            return None
        merged: dict[str, Any] = {}
        if slice_index is None:

            def factory():
                pred = yield from predict_job(model, req.volume, req.config)
                # the layer's foreground probability, computed here rather than on the GUI thread
                merged["foreground"] = foreground_probability(pred.probabilities)
                return pred
        else:
            intensity = self._intensity_for(model, req)
            base = self._preview_base(req)  # references only (GUI thread)

            def factory():
                from .._progress import Progress

                t0 = time.perf_counter()
                yield Progress(0, 1, "preview", f"slice {slice_index}")
                pred = predict_slice(model, req.volume, slice_index, req.config,
                                     intensity=intensity)
                if base is not None:  # the full-size copies, off the GUI thread
                    merged["arrays"] = base.merge(pred, slice_index)
                merged["seconds"] = time.perf_counter() - t0
                return pred
        self.runner = JobRunner(factory, self.progress, context="Segment",
                                on_result=lambda pred: self.show_result(
                                    req, pred, merged, defer=not self.runner.synchronous))
        return self.runner

    def _preview_base(self, req: SegmentRequest) -> _PreviewBase | None:
        """What a slice preview is merged into: the current result arrays (references, read
        on the GUI thread; the merge copies them in the worker, so nothing shared is written)."""
        shape = tuple(req.volume.shape)
        if len(shape) != 3:
            return None
        name = self._target_name(req.image_name)
        prob_name = f"{name} probabilities"

        def current(layer_name: str) -> np.ndarray | None:
            if layer_name not in self.viewer.layers:
                return None
            data = self.viewer.layers[layer_name].data
            return data if isinstance(data, np.ndarray) and data.shape == shape else None

        classes = None
        if prob_name in self.viewer.layers:
            meta = self.viewer.layers[prob_name].metadata.get(META_KEY) or {}
            classes = meta.get("class_probabilities")
        return _PreviewBase(name, shape, current(name), current(prob_name),
                            classes if isinstance(classes, np.ndarray) else None)

    @staticmethod
    def _intensity_key(image_name: str, volume: Any, folder: Path, config: Any) -> tuple:
        return (image_name, id(volume.data), str(folder), config.modality)

    def _warm_up(self, folder: Path, cfg: Any) -> None:
        """Warm the model up for this image in a background thread (one discarded preview at
        the image's slice shape, and the intensity statistics), so the first real preview runs
        at the steady-state speed. At most one warm-up runs; the latest request waits for it."""
        try:
            volume = layer_to_volume(self.image_layer())
            index = self.current_slice_index()
        except Exception as exc:  # nothing to warm up for; the buttons report problems
            logger.debug("no warm-up: %s", exc)
            return
        image_name = self.image_combo.currentText()
        key = self._intensity_key(image_name, volume, folder, cfg) + (
            cfg.device, cfg.precision, cfg.window, cfg.tta)
        if key == self._warm_key or (self._warm_pending and key == self._warm_pending[0]):
            return
        if self._warm_worker is not None:
            self._warm_pending = (key, folder, cfg)
            return
        from napari.qt.threading import create_worker

        from ..inference.predictor import warm_up

        model = self._load(folder)
        self._warm_key = key

        idle = threading.Event()
        self._warm_idle = idle

        def job() -> Any:
            try:
                warm = warm_up(model, volume, cfg, index=index)
                warm_layer_machinery()  # napari's first-layer imports, off the GUI thread too
                return warm
            finally:
                idle.set()

        worker = create_worker(lambda: compute_thread().submit_background(job).result(),
                               _start_thread=False)

        def done(warm: Any) -> None:
            self._intensity = {key[:4]: warm.intensity}
            if self._last_preview_s is None:  # so the first preview, if fast, runs like the next
                self._last_preview_s = warm.preview_seconds

        def finished() -> None:
            self._warm_worker = None
            pending, self._warm_pending = self._warm_pending, None
            if pending is not None and pending[0] != self._warm_key:
                self._warm_up(*pending[1:])

        worker.returned.connect(done)
        # a failed warm-up is harmless: the real run reports the problem properly
        worker.errored.connect(lambda exc: logger.debug("warm-up failed: %s", exc))
        worker.finished.connect(finished)
        self._warm_worker = worker
        worker.start()

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        """Re-read the registry whenever the widget is shown (e.g. its tab is chosen again
        after a fine-tune saved or activated a version)."""
        super().showEvent(event)
        self.refresh_models()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        """Let a running warm-up (well under a second) finish before the widget goes away, so
        its thread never reports to deleted Qt objects."""
        if self._warm_worker is not None and self._warm_idle is not None:
            self._warm_idle.wait(timeout=5.0)
        super().closeEvent(event)

    def _intensity_for(self, model: Any, req: SegmentRequest) -> Any:
        from ..inference.predictor import intensity_for

        key = self._intensity_key(req.image_name, req.volume, req.model_folder, req.config)
        if key not in self._intensity:
            self._intensity = {key: intensity_for(model, req.volume, req.config)}
        return self._intensity[key]

    def preview_slice(self, *_: Any) -> Any:
        """Segment the current slice: synchronously when previews are fast, else in a worker."""
        try:
            index = self.current_slice_index()
        except Exception as exc:
            notify_error(exc, "Segment")
            return None
        runner = self.make_runner(slice_index=index)
        if runner is None:
            return None
        if self._last_preview_s is not None and self._last_preview_s < PREVIEW_SYNC_S:
            try:
                return runner.run_sync()
            except Exception as exc:  # reported like a worker error
                runner._errored(exc)
                return None
        return runner.start()

    # ------------------------------------------------------------------ results
    def _target_name(self, image_name: str) -> str:
        name = f"{image_name} [attnseg]"
        if name in self.viewer.layers:
            meta = self.viewer.layers[name].metadata.get(META_KEY) or {}
            if meta.get("edited"):
                return f"{name} (new)"
        return name

    def show_result(self, req: SegmentRequest, pred: Any, merged: dict | None = None,
                    defer: bool = False) -> None:
        """Write the labels and probability layers (GUI thread). For a slice preview,
        ``merged`` holds the full-size arrays the worker built (``_PreviewBase.merge``). With
        ``defer`` (a threaded run) a new probability layer is added a moment after the labels;
        otherwise (scripts, ``run_sync``) both are there when this returns."""
        if req.image_name not in self.viewer.layers:
            raise ValueError(f"the image layer '{req.image_name}' was removed during the run")
        source = self.viewer.layers[req.image_name]
        name = self._target_name(req.image_name)
        prob_name = f"{name} probabilities"
        shape = tuple(source.data.shape)
        if req.slice_index is not None and len(shape) == 3:
            merged = merged or {}
            self._last_preview_s = merged.get("seconds", pred.seconds)
            arrays = merged.get("arrays")
            if arrays is None or arrays.name != name or arrays.shape != shape:
                # the target changed during the run (painted on, reshaped): merge here
                base = self._preview_base(dataclasses.replace(req, volume=layer_to_volume(source)))
                arrays = base.merge(pred, req.slice_index)
            labels, probs, classes = arrays.labels, arrays.probabilities, arrays.classes
        else:
            labels, classes = pred.labels, np.asarray(pred.probabilities, dtype=np.float32)
            probs = (merged or {}).get("foreground")
            if probs is None:
                probs = foreground_probability(classes)
            classes = classes if classes.shape[0] > 2 else None
        kw = derived_layer_kwargs(source, name, provenance=pred.provenance)
        layer = upsert_layer(self.viewer, labels, self._unchanged_dropped(kw), "labels")
        self._watch_edits(layer)
        pkw = derived_layer_kwargs(source, prob_name, provenance=pred.provenance)
        # None for two classes, so a stale array of an earlier multi-class run is dropped
        pkw["metadata"][META_KEY]["class_probabilities"] = classes
        pkw.update(colormap="magma", contrast_limits=(0.0, 1.0), blending="additive",
                   visible=False)
        if not defer or prob_name in self.viewer.layers:
            upsert_layer(self.viewer, probs, self._unchanged_dropped(pkw), "image")
        else:
            # Creating a napari layer costs ~100 ms on the GUI thread (and its first draw as
            # much again): the new probability layer (hidden) is added a moment after the
            # labels, so the viewer draws the labels and handles input in between instead of
            # freezing for both. Deferred adds run in order: a later result still wins.
            self._pending_layers += 1

            def add_probabilities() -> None:
                self._pending_layers -= 1
                if req.image_name in self.viewer.layers:
                    upsert_layer(self.viewer, probs, self._unchanged_dropped(pkw), "image")

            QTimer.singleShot(LAYER_GAP_MS, add_probabilities)
        self.last_prediction = pred
        self.progress.status.setText(
            f"{'slice ' + str(req.slice_index) if req.slice_index is not None else 'volume'}: "
            f"{pred.n_windows} windows in {pred.seconds:.2f} s on {pred.device}"
        )

    def _unchanged_dropped(self, kwargs: dict) -> dict:
        """Drop scale/translate/affine that an existing layer already has (setting them costs
        ~50 ms each in napari, on the GUI thread, even when unchanged)."""
        name = kwargs["name"]
        if name not in self.viewer.layers:
            return kwargs
        layer = self.viewer.layers[name]
        kw = dict(kwargs)
        for key in ("scale", "translate"):
            cur = np.asarray(getattr(layer, key), dtype=float)
            new = np.asarray(kw[key], dtype=float)
            if cur.shape == new.shape and np.allclose(cur, new):
                del kw[key]
        n = np.asarray(layer.scale).size
        new_aff = np.asarray(kw.get("affine", np.eye(n + 1)), dtype=float)
        cur_aff = np.asarray(layer.affine.affine_matrix, dtype=float)
        if cur_aff.shape == new_aff.shape and np.allclose(cur_aff, new_aff):
            kw.pop("affine", None)
        elif "affine" not in kw:
            kw["affine"] = new_aff  # the source lost its rotation: reset ours too
        return kw

    def _watch_edits(self, layer: Any) -> None:
        if getattr(layer, "_attnseg_watch", False):
            return

        def mark(*_: Any) -> None:
            layer.metadata.setdefault(META_KEY, {})["edited"] = True

        layer.events.paint.connect(mark)
        layer._attnseg_watch = True


@dataclass(frozen=True)
class _Merged:
    """Full-size result arrays with a preview slice merged in."""

    name: str
    shape: tuple
    labels: np.ndarray
    probabilities: np.ndarray  #: foreground probability, ``shape``
    classes: np.ndarray | None  #: (C, *shape) for more than two classes


@dataclass(frozen=True)
class _PreviewBase:
    """The current result arrays a slice preview is merged into (``None``: not there yet)."""

    name: str
    shape: tuple
    labels: np.ndarray | None
    probabilities: np.ndarray | None
    classes: np.ndarray | None

    def merge(self, pred: Any, index: int) -> _Merged:
        """New full-size arrays: copies of the current ones (zeros where there are none, or
        where the shape or dtype changed) with slice ``index`` replaced by ``pred``'s."""
        part = np.asarray(pred.probabilities, dtype=np.float32)

        def into(old: np.ndarray | None, new: np.ndarray, shape: tuple, dtype: Any) -> np.ndarray:
            full = old.copy() if old is not None and old.shape == shape and old.dtype == dtype \
                else np.zeros(shape, dtype=dtype)
            full[(slice(None),) * (len(shape) - 3) + (index,)] = new
            return full

        labels = into(self.labels, pred.labels, self.shape, pred.labels.dtype)
        probs = into(self.probabilities, foreground_probability(part), self.shape, np.float32)
        classes = None
        if part.shape[0] > 2:
            classes = into(self.classes, part, (part.shape[0],) + self.shape, np.float32)
        return _Merged(self.name, self.shape, labels, probs, classes)


def foreground_probability(probabilities: np.ndarray) -> np.ndarray:
    """(C, *spatial) class probabilities -> (*spatial) foreground probability: class 1 for two
    classes, else 1 - p(background) (the probability of any structure)."""
    p = np.asarray(probabilities, dtype=np.float32)
    if p.shape[0] == 2:
        return p[1]
    return np.clip(1.0 - p[0], 0.0, 1.0).astype(np.float32)
