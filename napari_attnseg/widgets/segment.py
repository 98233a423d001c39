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

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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

from .._napari.layers import META_KEY, derived_layer_kwargs, layer_to_volume
from ._worker import JobRunner, ProgressPanel, notify_error, upsert_layer

logger = logging.getLogger(__name__)

BROWSE = "Browse folder..."
NO_MODEL_TEXT = "no model installed: train one with `attnseg train` or pick a folder"
PREVIEW_SYNC_S = 0.1  #: previews faster than this run on the GUI thread


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
        self._last_preview_s: float | None = None
        self.runner: JobRunner | None = None
        self.last_prediction = None
        self._model_picked = False  #: the user chose a model: no preselection by modality

        self.image_combo = QComboBox()
        self.model_combo = QComboBox()
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
        from ..model.registry import ModelRegistry

        reg = ModelRegistry()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        default = reg.default_model()
        entries = reg.list_models()
        for e in entries:
            tag = " (shipped)" if e.shipped else ""
            self.model_combo.addItem(f"{e.ref}{tag}", str(e.path))
        if default is not None:
            idx = self.model_combo.findData(str(default.path))
            if idx >= 0:
                self.model_combo.setCurrentIndex(idx)
        self.model_combo.addItem(BROWSE, None)
        self.model_combo.blockSignals(False)

    def _preselect_model(self, *_: Any) -> None:
        """Select the shipped model for the image's modality (``metadata["attnseg"]["modality"]``)
        unless the user picked a model."""
        from ..model.registry import ModelRegistry

        name = self.image_combo.currentText()
        if self._model_picked or not name or name not in self.viewer.layers:
            return
        meta = self.viewer.layers[name].metadata.get(META_KEY) or {}
        modality = meta.get("modality") if isinstance(meta, dict) else None
        if not modality:
            return
        entry = ModelRegistry().default_model(str(modality))
        if entry is None:
            return
        idx = self.model_combo.findData(str(entry.path))
        if idx >= 0 and idx != self.model_combo.currentIndex():
            self.model_combo.setCurrentIndex(idx)

    def set_model_folder(self, folder: str | Path) -> None:
        """Add a model folder (from "Browse folder..." or a test) and select it."""
        self._model_picked = True
        folder = Path(folder)
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
            cached = (stamp, load_model(folder))
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
        if slice_index is None:
            factory = lambda: predict_job(model, req.volume, req.config)  # noqa: E731
        else:
            intensity = self._intensity_for(model, req)

            def factory():
                from .._progress import Progress

                yield Progress(0, 1, "preview", f"slice {slice_index}")
                return predict_slice(model, req.volume, slice_index, req.config,
                                     intensity=intensity)
        self.runner = JobRunner(factory, self.progress, context="Segment",
                                on_result=lambda pred: self.show_result(req, pred))
        return self.runner

    def _intensity_for(self, model: Any, req: SegmentRequest) -> Any:
        from ..inference.predictor import intensity_for

        key = (req.image_name, id(req.volume.data), str(req.model_folder), req.config.modality)
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

    def show_result(self, req: SegmentRequest, pred: Any) -> None:
        """Write the labels and probability layers (GUI thread)."""
        if req.image_name not in self.viewer.layers:
            raise ValueError(f"the image layer '{req.image_name}' was removed during the run")
        source = self.viewer.layers[req.image_name]
        name = self._target_name(req.image_name)
        prob_name = f"{name} probabilities"
        labels, classes = pred.labels, np.asarray(pred.probabilities, dtype=np.float32)
        probs = foreground_probability(classes)
        classes = classes if classes.shape[0] > 2 else None
        shape = tuple(source.data.shape)
        if req.slice_index is not None and len(shape) == 3:
            self._last_preview_s = pred.seconds
            labels = self._into_volume(name, labels, req.slice_index, shape, labels.dtype)
            probs = self._into_volume(prob_name, probs, req.slice_index, shape, np.float32)
            if classes is not None:
                classes = self._classes_into_volume(prob_name, classes, req.slice_index, shape)
        kw = derived_layer_kwargs(source, name, provenance=pred.provenance)
        layer = upsert_layer(self.viewer, labels, self._unchanged_dropped(kw), "labels")
        self._watch_edits(layer)
        pkw = derived_layer_kwargs(source, prob_name, provenance=pred.provenance)
        # None for two classes, so a stale array of an earlier multi-class run is dropped
        pkw["metadata"][META_KEY]["class_probabilities"] = classes
        pkw.update(colormap="magma", contrast_limits=(0.0, 1.0), blending="additive",
                   visible=False)
        upsert_layer(self.viewer, probs, self._unchanged_dropped(pkw), "image")
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

    def _into_volume(self, name: str, part: np.ndarray, index: int, shape: tuple,
                     dtype: Any) -> np.ndarray:
        """A full-size array with ``part`` at slice ``index`` (keeping an existing result)."""
        full = None
        if name in self.viewer.layers:
            old = np.asarray(self.viewer.layers[name].data)
            if old.shape == shape and old.dtype == dtype:
                full = old.copy()
        if full is None:
            full = np.zeros(shape, dtype=dtype)
        if len(shape) == part.ndim + 1:
            full[index] = part
        else:
            full[:, index] = part
        return full

    def _classes_into_volume(self, prob_name: str, part: np.ndarray, index: int,
                             shape: tuple) -> np.ndarray:
        """The (C, *shape) class probabilities with ``part`` (C, y, x) at slice ``index``,
        keeping the other slices of an existing result."""
        full_shape = (part.shape[0],) + tuple(shape)
        full = None
        if prob_name in self.viewer.layers:
            meta = self.viewer.layers[prob_name].metadata.get(META_KEY) or {}
            old = meta.get("class_probabilities")
            if isinstance(old, np.ndarray) and old.shape == full_shape:
                full = old.copy()
        if full is None:
            full = np.zeros(full_shape, np.float32)
        full[:, index] = part
        return full

    def _watch_edits(self, layer: Any) -> None:
        if getattr(layer, "_attnseg_watch", False):
            return

        def mark(*_: Any) -> None:
            layer.metadata.setdefault(META_KEY, {})["edited"] = True

        layer.events.paint.connect(mark)
        layer._attnseg_watch = True


def foreground_probability(probabilities: np.ndarray) -> np.ndarray:
    """(C, *spatial) class probabilities -> (*spatial) foreground probability: class 1 for two
    classes, else 1 - p(background) (the probability of any structure)."""
    p = np.asarray(probabilities, dtype=np.float32)
    if p.shape[0] == 2:
        return p[1]
    return np.clip(1.0 - p[0], 0.0, 1.0).astype(np.float32)
