"""The Segment widget: pick an image and a model, see the window count and the device, then
preview the current slice or segment the whole volume off the GUI thread.

The model is preselected by the image's modality and anatomy with the rule ``attnseg predict``
uses (:mod:`napari_attnseg.model.choose`); the info line says when the model does not fit
("model is CT, image looks MR") or none fits ("no MR model installed"). The *modality* row shows
what the file says ("auto: MR (file name)") and lets the user set it.

Results (re-run in place, on the image's grid, provenance in ``metadata["attnseg"]``): Labels
``"<image> [attnseg]"`` and Image ``"<image> [attnseg] probabilities"`` (the foreground
probability; with more than two classes every class is kept in
``metadata["attnseg"]["class_probabilities"]`` for the CRF). An edited labels layer is never
overwritten: the new result goes to ``"<image> [attnseg] (new)"``. Nothing heavy runs on the
GUI thread: torch is imported, models are loaded and the plan is computed on the compute thread
(:mod:`napari_attnseg._compute`); see :mod:`._segment_model`, :mod:`._segment_jobs`,
:mod:`._segment_results`.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (QComboBox, QFormLayout, QHBoxLayout, QLabel, QPushButton,
                            QVBoxLayout, QWidget)

from .._napari.layers import layer_to_volume
from ._layers import follow_layers
from ._segment_info import INFO_DELAY_MS, InfoLine  # noqa: F401
from ._segment_jobs import (IntensityCache, SegmentRequest, WarmUp, prepare_in_background,
                            request_warm_up, segment_job)
from ._form import build_form, read_form
from ._segment_model import (BROWSE, MODALITY_CHOICES, NO_MODEL_TEXT, ModelCache,  # noqa: F401
                             ModelPicker, SegmentOptions, SegmentParams, image_facts)
from ._segment_results import (_Merged, _PreviewBase, foreground_probability,  # noqa: F401
                               preview_base, target_name, write_result)
from ._worker import JobRunner, ProgressPanel, notify_error

logger = logging.getLogger(__name__)

PREVIEW_SYNC_S = 0.1  #: previews faster than this run on the GUI thread
PREPARE_DELAY_MS = 500  #: the background imports start this long after the widget is made


class SegmentWidget(QWidget):
    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.models = ModelCache()
        self._intensity = IntensityCache()
        self._modality_override: dict[str, str] = {}  #: image name -> modality set here
        self.warm = WarmUp()
        self._pending_layers = 0  #: result layers scheduled for the next event-loop turn
        self._last_preview_s: float | None = None
        self.runner: JobRunner | None = None
        self.last_prediction = None

        self.image_combo = QComboBox()
        self.picker = ModelPicker(self, self.image_facts, self.update_info)
        self.model_combo = self.picker.combo
        self.modality_combo = QComboBox()
        self.modality_combo.addItems(MODALITY_CHOICES)
        self.modality_combo.setToolTip("The image's modality: 'auto' takes what the file says "
                                       "(shown here); it chooses the model")
        self.form = build_form(SegmentParams, labels=True)  # the inference options
        for name, attr in (("overlap", "overlap_spin"), ("tta", "tta_combo"),
                           ("device", "device_combo"), ("precision", "precision_combo"),
                           ("window", "window_combo")):
            setattr(self, attr, getattr(self.form, name).native)  # Qt handles (scripts, tests)
        self.info_label = QLabel("")
        self.info_label.setWordWrap(True)
        self.preview_button = QPushButton("Preview slice")
        self.run_button = QPushButton("Segment volume")
        self.progress = ProgressPanel()
        self.info = InfoLine(self)

        # one form layout: the pickers and the typed options' widgets (magicgui, from
        # SegmentParams) line up in the same two columns
        form = QFormLayout()
        for label, w in (("image", self.image_combo), ("modality", self.modality_combo),
                         ("model", self.model_combo)):
            form.addRow(label, w)
        for w in self.form:  # (a check box would say its label itself)
            form.addRow("" if type(w).__name__ == "CheckBox" else w.label, w.native)
        buttons = QHBoxLayout()
        buttons.addWidget(self.preview_button)
        buttons.addWidget(self.run_button)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.info_label)
        lay.addLayout(buttons)
        lay.addWidget(self.progress)
        lay.addStretch(1)

        self.picker.refresh()
        self.refresh_images()
        follow_layers(self.viewer, self.refresh_images)
        self.image_combo.currentIndexChanged.connect(self._on_image_changed)
        self.modality_combo.activated.connect(self._on_modality_chosen)
        self.model_combo.currentIndexChanged.connect(self.update_info)
        self.form.changed.connect(self.update_info)
        self.preview_button.clicked.connect(self.preview_slice)
        self.run_button.clicked.connect(self.segment_volume)
        self.update_info()
        # torch and napari's layer modules, before the first scan (once the docking is done)
        QTimer.singleShot(PREPARE_DELAY_MS, prepare_in_background)

    # ------------------------------------------------------------------ choices
    def refresh_images(self, *_: Any) -> None:
        """The image picker follows the viewer (items hold the layers): the chosen layer stays
        chosen when it or another layer is renamed, and keeps the modality set for it."""
        from napari.layers import Image

        combo = self.image_combo
        current = combo.currentData()
        for i in range(combo.count()):  # renamed layers keep their modality choice
            layer, old = combo.itemData(i), combo.itemText(i)
            if layer is not None and layer.name != old and old in self._modality_override:
                self._modality_override[layer.name] = self._modality_override.pop(old)
        layers = [ly for ly in self.viewer.layers
                  if isinstance(ly, Image) and "[attnseg]" not in ly.name]
        combo.blockSignals(True)
        combo.clear()
        for ly in layers:
            combo.addItem(ly.name, ly)
        index = next((i for i, ly in enumerate(layers) if ly is current), -1)
        if index >= 0:
            combo.setCurrentIndex(index)
        combo.blockSignals(False)
        if combo.currentData() is not current:
            self._on_image_changed()
        else:
            self.update_info()

    def refresh_models(self) -> None:
        """Re-read the registry (see :meth:`ModelPicker.refresh`)."""
        self.picker.refresh()

    def image_facts(self) -> Any:
        """The current image's modality and anatomy (:class:`ImageFacts`)."""
        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            return image_facts(None)
        return image_facts(self.viewer.layers[name], self._modality_override.get(name))

    def _on_image_changed(self, *_: Any) -> None:
        self._show_modality()
        self.picker.preselect()
        self.update_info()

    def _show_modality(self) -> None:
        """The modality row: the choice made here for this image, else "auto: <what the file
        says>"."""
        name = self.image_combo.currentText()
        auto = image_facts(self.viewer.layers[name]) if name in self.viewer.layers else None
        self.modality_combo.setItemText(0, f"auto: {auto.describe()}" if auto else "auto")
        self.modality_combo.setCurrentIndex(
            max(0, self.modality_combo.findText(self._modality_override.get(name, "auto"))))

    def _on_modality_chosen(self, index: int) -> None:
        self.set_modality(None if index == 0 else self.modality_combo.itemText(index))

    def set_modality(self, modality: str | None) -> None:
        """Set (or with ``None`` reset to what the file says) the current image's modality;
        the model is chosen again unless the user picked one."""
        name = self.image_combo.currentText()
        if not name:
            return
        if modality:
            self._modality_override[name] = modality
        else:
            self._modality_override.pop(name, None)
        self._show_modality()
        self.picker.preselect()
        self.update_info()

    def set_model_folder(self, folder: str | Path) -> None:
        """Add a model folder (from "Browse folder..." or a test) and select it."""
        self.picker.set_folder(folder)
        self.update_info()

    def model_folder(self) -> Path | None:
        return self.picker.folder()

    def options(self) -> SegmentOptions:
        return read_form(self.form, SegmentParams).options()

    def config(self) -> Any:
        """The :class:`~napari_attnseg.inference.predictor.PredictConfig` (imports torch)."""
        return self.options().predict_config()

    def image_layer(self) -> Any:
        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise ValueError("choose an image layer to segment (open a scan first)")
        return self.viewer.layers[name]

    def image_volume(self) -> Any:
        """The image as a Volume, with the modality chosen here (a cheap view, no copy)."""
        vol = layer_to_volume(self.image_layer())
        facts = self.image_facts()
        return dataclasses.replace(vol, modality=facts.modality) \
            if facts.modality != vol.modality else vol

    # ------------------------------------------------------------------ info line
    @property
    def info_pending(self) -> bool:
        """True while the info line waits for its plan (tests wait on it)."""
        return self.info.pending

    def update_info(self, *_: Any) -> None:
        """Say at once whether the model fits the image; the plan (window count, device,
        memory) follows from the compute thread a moment later (:class:`InfoLine`)."""
        self.info.update()

    # ------------------------------------------------------------------ running
    def snapshot(self, slice_index: int | None = None) -> SegmentRequest:
        folder = self.model_folder()
        if folder is None:
            raise ValueError(self.picker.no_model_text())
        layer = self.image_layer()
        return SegmentRequest(layer.name, self.image_volume(), folder, self.options(),
                              slice_index)

    def current_slice_index(self) -> int:
        layer = self.image_layer()
        if layer.ndim < 3:
            return 0
        coords = layer.world_to_data(self.viewer.dims.point)
        return int(np.clip(round(float(coords[0])), 0, layer.data.shape[0] - 1))

    def segment_volume(self, *_: Any) -> Any:
        """Start a whole-volume run in a worker; returns the runner (``None`` on bad input)."""
        runner = self.make_runner()
        if runner is not None:
            runner.start()
        return runner

    def make_runner(self, slice_index: int | None = None) -> JobRunner | None:
        """The JobRunner for a whole-volume run (or a slice preview), not started."""
        if self.runner is not None and self.runner.running:
            notify_error(ValueError("a segmentation is already running"), "Segment")
            return None
        try:
            req = self.snapshot(slice_index)
            self.models.check(req.model_folder, req.volume)
        except Exception as exc:
            notify_error(exc, "Segment")
            return None
        merged: dict[str, Any] = {}
        base = None if slice_index is None else self._preview_base(req)
        factory = segment_job(self.models, req, base, merged, self._intensity.get)
        self.runner = JobRunner(factory, self.progress, context="Segment",
                                on_result=lambda pred: self.show_result(
                                    req, pred, merged, defer=not self.runner.synchronous))
        return self.runner

    def _warm_up(self, folder: Path, options: SegmentOptions) -> None:
        """Warm the model up for this image in the background (see :func:`request_warm_up`),
        so the first real preview runs at the steady-state speed."""
        try:
            volume = self.image_volume()
            index = self.current_slice_index()
        except Exception as exc:  # nothing to warm up for; the buttons report problems
            logger.debug("no warm-up: %s", exc)
            return

        def preview_seconds(seconds: float) -> None:
            if self._last_preview_s is None:  # so the first preview, if fast, runs like the next
                self._last_preview_s = seconds

        request_warm_up(self.warm, self._intensity, self.models, self.image_combo.currentText(),
                        volume, index, folder, options, preview_seconds)

    @property
    def _warm_worker(self) -> Any:
        return self.warm.worker

    @property
    def _warm_key(self) -> tuple | None:
        return self.warm.key

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        """Re-read the registry whenever the widget is shown (e.g. its tab is chosen again
        after a fine-tune saved or activated a version)."""
        super().showEvent(event)
        self.refresh_models()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        """Let a running warm-up (well under a second) finish before the widget goes away, so
        its thread never reports to deleted Qt objects."""
        self.warm.wait()
        super().closeEvent(event)

    def preview_slice(self, *_: Any) -> Any:
        """Segment the current slice: synchronously when previews are fast and the result
        layers exist (updated in place), else in a worker (creating a layer takes napari
        ~100 ms on the GUI thread)."""
        try:
            index = self.current_slice_index()
        except Exception as exc:
            notify_error(exc, "Segment")
            return None
        runner = self.make_runner(slice_index=index)
        if runner is None:
            return None
        name = target_name(self.viewer, self.image_combo.currentText())
        in_place = name in self.viewer.layers and f"{name} probabilities" in self.viewer.layers
        fast = self._last_preview_s is not None and self._last_preview_s < PREVIEW_SYNC_S
        if fast and in_place:
            try:
                return runner.run_sync()
            except Exception as exc:  # reported like a worker error
                runner._errored(exc)
                return None
        return runner.start()

    # ------------------------------------------------------------------ results
    def _preview_base(self, req: SegmentRequest) -> _PreviewBase | None:
        return preview_base(self.viewer, target_name(self.viewer, req.image_name),
                            tuple(req.volume.shape))

    def show_result(self, req: SegmentRequest, pred: Any, merged: dict | None = None,
                    defer: bool = False) -> None:
        """Write the labels and probability layers (GUI thread; see :func:`write_result`:
        with ``defer``, a threaded run, a new probability layer follows a moment later)."""

        def count(n: int) -> None:
            self._pending_layers += n

        _, seconds = write_result(self.viewer, req, pred, merged, defer, count)
        if seconds is not None:
            self._last_preview_s = seconds
        self.last_prediction = pred
        where = "volume" if req.slice_index is None else f"slice {req.slice_index}"
        self.progress.status.setText(
            f"{where}: {pred.n_windows} windows in {pred.seconds:.2f} s on {pred.device}")
