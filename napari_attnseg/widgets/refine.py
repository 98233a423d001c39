"""Refine a segmentation with a dense CRF: preview on the current slice, refine the volume,
auto-tune the parameters against a ground-truth Labels layer. Output ``<image> [attnseg+crf]``
(a Labels layer on the image's grid, the parameters in its metadata)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QPushButton, QSpinBox,
    QVBoxLayout, QWidget,
)

from .._napari.layers import META_KEY, derived_layer_kwargs, layer_label_names, layer_to_volume
from .._progress import Job
from ._worker import JobRunner, ProgressPanel, notify_error, upsert_layer

logger = logging.getLogger(__name__)

SUFFIX = " [attnseg+crf]"
PREVIEW_SUFFIX = " [attnseg+crf preview]"
NONE = "(none)"


@dataclass(frozen=True)
class RefineConfig:
    """Inputs read on the GUI thread: probabilities ((C, *spatial) or foreground), image, spacing,
    the CRF parameters, the image layer's name and the source layer's name."""

    probabilities: np.ndarray
    image: np.ndarray
    spacing: tuple[float, ...]
    params: Any  # CRFParams
    image_name: str
    source_name: str
    slice_index: int | None = None  # preview: the z index refined in 2D
    ground_truth: np.ndarray | None = None


def labels_to_probabilities(labels: np.ndarray, confidence: float) -> np.ndarray:
    """One-hot probabilities from labels: ``confidence`` on the label, the rest spread evenly."""
    lab = np.asarray(labels).astype(np.int64)
    if lab.min(initial=0) < 0:
        raise ValueError("labels must be >= 0 to build probabilities")
    c = max(int(lab.max(initial=0)) + 1, 2)
    other = (1.0 - confidence) / (c - 1)
    probs = np.full((c,) + lab.shape, other, np.float32)
    np.put_along_axis(probs, lab[None], np.float32(confidence), axis=0)
    return probs


def class_probabilities(layer: Any, spatial_shape: tuple[int, ...]) -> np.ndarray | None:
    """The full (C, *spatial) class probabilities the Segment widget keeps in
    ``layer.metadata["attnseg"]["class_probabilities"]`` for a multi-class model (the layer
    itself shows only the foreground), or ``None`` when absent or not on ``spatial_shape``."""
    meta = (getattr(layer, "metadata", None) or {}).get(META_KEY)
    arr = meta.get("class_probabilities") if isinstance(meta, dict) else None
    if arr is None:
        return None
    arr = np.asarray(arr)
    if arr.ndim != len(spatial_shape) + 1 or tuple(arr.shape[1:]) != tuple(spatial_shape) \
            or tuple(np.shape(layer.data)) != tuple(spatial_shape):
        logger.info("ignoring class probabilities of shape %s on '%s' (image %s)", arr.shape,
                    getattr(layer, "name", "?"), spatial_shape)
        return None
    return arr


def _drop_broken_pool(exc: BaseException) -> None:
    """A CRF worker process died (e.g. killed for memory): the shared slice pool is unusable
    for good (``BrokenProcessPool``), so drop it and let the next run start a fresh one."""
    from concurrent.futures import BrokenExecutor

    if isinstance(exc, BrokenExecutor):
        from ..crf import shutdown_pool

        shutdown_pool()


def preview_job(cfg: RefineConfig) -> Job[tuple[Any, int]]:
    """Refine one z slice in 2D (the whole image when it is 2D); the boundary band, when set,
    applies within the slice (so a small object previews faster)."""
    from ..crf import refine_job

    z = cfg.slice_index
    probs, img, sp = cfg.probabilities, cfg.image, cfg.spacing
    if img.ndim == 3 and z is not None:
        img, sp = img[z], sp[1:]
        probs = probs[z] if probs.ndim == 3 else probs[:, z]
    res = yield from refine_job(probs, img, sp, replace(cfg.params, mode="2d"))
    return res, z


class RefineWidget(QWidget):
    """Dense-CRF refinement of a probability (or labels) layer, guided by an image layer."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.source_combo = QComboBox()
        self.image_combo = QComboBox()
        self.gt_combo = QComboBox()
        self.confidence_spin = self._dspin(0.51, 0.99, 0.8, 2)
        self.sxy_gaussian_spin = self._dspin(0.1, 100, 1.0, 2, " mm")
        self.gaussian_weight_spin = self._dspin(0, 100, 2.0, 2)
        self.sxy_bilateral_spin = self._dspin(0.1, 500, 5.0, 2, " mm")
        self.srgb_spin = self._dspin(0.5, 255, 20.0, 1)
        self.bilateral_weight_spin = self._dspin(0, 100, 3.0, 2)
        self.iterations_spin = QSpinBox()
        self.iterations_spin.setRange(1, 50)
        self.iterations_spin.setValue(5)
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(["auto", "2d", "3d"])
        self.band_spin = self._dspin(0, 200, 0.0, 1, " mm")
        self.band_spin.setSpecialValueText("off (whole volume)")
        self.workers_spin = QSpinBox()
        self.workers_spin.setRange(1, 64)
        self.workers_spin.setValue(2)
        self.preview_button = QPushButton("Preview current slice")
        self.refine_button = QPushButton("Refine volume")
        self.autotune_button = QPushButton("Auto-tune")
        self.progress = ProgressPanel()
        self.status = self.progress.status  # one line for progress and results (not twice)
        self.runner: JobRunner | None = None
        self.last_result: Any = None
        self.last_autotune: Any = None

        form = QFormLayout()
        form.addRow("Probabilities / labels", self.source_combo)
        form.addRow("Confidence (labels input)", self.confidence_spin)
        form.addRow("Image", self.image_combo)
        form.addRow("Smoothness bandwidth", self.sxy_gaussian_spin)
        form.addRow("Smoothness weight", self.gaussian_weight_spin)
        form.addRow("Appearance bandwidth", self.sxy_bilateral_spin)
        form.addRow("Intensity bandwidth (0..255)", self.srgb_spin)
        form.addRow("Appearance weight", self.bilateral_weight_spin)
        form.addRow("Iterations", self.iterations_spin)
        form.addRow("Mode", self.mode_combo)
        form.addRow("Boundary band", self.band_spin)
        form.addRow("Workers", self.workers_spin)
        form.addRow("Ground truth (auto-tune)", self.gt_combo)
        row = QHBoxLayout()
        row.addWidget(self.preview_button)
        row.addWidget(self.refine_button)
        row.addWidget(self.autotune_button)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(row)
        lay.addWidget(self.progress)
        lay.addStretch(1)

        self.preview_button.clicked.connect(self.preview)
        self.refine_button.clicked.connect(self.refine_volume)
        self.autotune_button.clicked.connect(self.autotune)
        self.image_combo.currentTextChanged.connect(self._apply_modality_defaults)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    @staticmethod
    def _dspin(lo: float, hi: float, value: float, decimals: int,
               suffix: str = "") -> QDoubleSpinBox:
        s = QDoubleSpinBox()
        s.setRange(lo, hi)
        s.setDecimals(decimals)
        s.setValue(value)
        if suffix:
            s.setSuffix(suffix)
        return s

    # ------------------------------------------------------------------ layer choices
    def _refresh_layers(self, event: Any = None) -> None:
        images = [ly.name for ly in self.viewer.layers if type(ly).__name__ == "Image"]
        labels = [ly.name for ly in self.viewer.layers if type(ly).__name__ == "Labels"
                  and not ly.name.endswith((SUFFIX, PREVIEW_SUFFIX))]
        plain = [n for n in images if "probabilit" not in n]
        probs = [n for n in images if "probabilit" in n] + labels + plain
        self._fill(self.source_combo, probs, prefer=" [attnseg] probabilities")
        self._fill(self.image_combo, plain)
        self._fill(self.gt_combo, [NONE] + labels)

    @staticmethod
    def _fill(combo: QComboBox, names: list[str], prefer: str = "") -> None:
        """Refill ``combo`` keeping its choice, except that a newly added layer whose name ends
        with ``prefer`` (a new segmentation's probabilities) is selected."""
        current = combo.currentText()
        before = {combo.itemText(i) for i in range(combo.count())}
        combo.blockSignals(True)
        combo.clear()
        combo.addItems(names)
        new = [n for n in names if prefer and n.endswith(prefer) and n not in before]
        if new:
            combo.setCurrentText(new[-1])
        elif current in names:
            combo.setCurrentText(current)
        elif prefer:
            for n in names:
                if n.endswith(prefer):
                    combo.setCurrentText(n)
                    break
        combo.blockSignals(False)
        if combo.currentText() != current:
            combo.currentTextChanged.emit(combo.currentText())

    def _apply_modality_defaults(self, name: str = "") -> None:
        from ..crf.dense_crf import default_params

        if not name or name not in self.viewer.layers:
            return
        meta = (self.viewer.layers[name].metadata or {}).get(META_KEY, {})
        modality = meta.get("modality", "") if isinstance(meta, dict) else ""
        try:
            self.set_params(default_params(modality or ""))
        except ValueError:
            self.set_params(default_params(""))

    def set_params(self, p: Any) -> None:
        """Show ``p`` (a CRFParams) in the spinboxes."""
        self.sxy_gaussian_spin.setValue(p.sxy_gaussian_mm)
        self.gaussian_weight_spin.setValue(p.gaussian_weight)
        self.sxy_bilateral_spin.setValue(p.sxy_bilateral_mm)
        self.srgb_spin.setValue(p.srgb_bilateral)
        self.bilateral_weight_spin.setValue(p.bilateral_weight)
        self.iterations_spin.setValue(p.iterations)
        self.mode_combo.setCurrentText(p.mode)
        self.band_spin.setValue(p.band_mm or 0.0)

    def params(self) -> Any:
        from ..crf.dense_crf import CRFParams

        band = self.band_spin.value()
        return CRFParams(
            sxy_gaussian_mm=self.sxy_gaussian_spin.value(),
            gaussian_weight=self.gaussian_weight_spin.value(),
            sxy_bilateral_mm=self.sxy_bilateral_spin.value(),
            srgb_bilateral=self.srgb_spin.value(),
            bilateral_weight=self.bilateral_weight_spin.value(),
            iterations=self.iterations_spin.value(),
            mode=self.mode_combo.currentText(),
            band_mm=band if band > 0 else None,
            workers=self.workers_spin.value(),
        )

    # ------------------------------------------------------------------ snapshot
    def config(self, preview: bool = False, with_gt: bool = False) -> RefineConfig:
        """Read the layers and parameters (GUI thread); ValueError names what is missing."""
        src_name, img_name = self.source_combo.currentText(), self.image_combo.currentText()
        if not src_name or src_name not in self.viewer.layers:
            raise ValueError("Choose a probability (or labels) layer to refine")
        if not img_name or img_name not in self.viewer.layers:
            raise ValueError("Choose the image layer the segmentation was made from")
        src, img_layer = self.viewer.layers[src_name], self.viewer.layers[img_name]
        image = np.asarray(img_layer.data)
        vol = layer_to_volume(img_layer, image)
        data = np.asarray(src.data)
        from ..io.validate import require_same_grid

        if data.shape == image.shape:  # same shape: it must also lie on the image (shape mismatches: below)
            require_same_grid(layer_to_volume(src, data), vol, f"layer '{src_name}'", f"image '{img_name}'")
        if type(src).__name__ == "Labels":
            if data.shape != image.shape:
                raise ValueError(f"Labels '{src_name}' has shape {data.shape} but image "
                                 f"'{img_name}' has {image.shape}")
            probs = labels_to_probabilities(data, self.confidence_spin.value())
        else:
            probs = class_probabilities(src, image.shape)
            if probs is None:
                probs = data
        z = None
        if preview and image.ndim == 3:
            z = self._current_z(img_layer, image.shape[0])
        gt = None
        if with_gt:
            gt_name = self.gt_combo.currentText()
            if gt_name in ("", NONE) or gt_name not in self.viewer.layers:
                raise ValueError("Choose a ground-truth Labels layer for auto-tune")
            gt = np.asarray(self.viewer.layers[gt_name].data)
        return RefineConfig(probabilities=probs, image=image, spacing=tuple(vol.spacing),
                            params=self.params(), image_name=img_name, source_name=src_name,
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
                                on_error=_drop_broken_pool)
        return self.runner.run_sync() if sync else self.runner.start()

    def _snapshot(self, context: str, **kw: Any) -> RefineConfig | None:
        try:
            return self.config(**kw)
        except ValueError as exc:
            self.status.setText(str(exc))
            notify_error(exc, context)
            return None

    def preview(self, sync: bool = False) -> Any:
        """Refine the current slice in 2D into ``<image> [attnseg+crf preview]``."""
        cfg = self._snapshot("CRF preview", preview=True)
        if cfg is None:
            return None
        return self._start(lambda: preview_job(cfg), lambda r: self._show_preview(cfg, r),
                           "CRF preview", sync)

    def refine_volume(self, sync: bool = False) -> Any:
        """Refine the whole volume into ``<image> [attnseg+crf]``."""
        from ..crf import refine_job

        cfg = self._snapshot("CRF refine")
        if cfg is None:
            return None
        return self._start(
            lambda: refine_job(cfg.probabilities, cfg.image, cfg.spacing, cfg.params),
            lambda r: self._show_result(cfg, r), "CRF refine", sync)

    def autotune(self, sync: bool = False) -> Any:
        """Search parameters maximising Dice against the ground-truth layer; shows the best."""
        from ..crf import autotune_job

        cfg = self._snapshot("CRF auto-tune", with_gt=True)
        if cfg is None:
            return None
        return self._start(
            lambda: autotune_job(cfg.probabilities, cfg.image, cfg.spacing, cfg.ground_truth,
                                 base=cfg.params),
            self._show_autotune, "CRF auto-tune", sync)

    # ------------------------------------------------------------------ results (GUI thread)
    def _provenance(self, cfg: RefineConfig, res: Any) -> dict[str, Any]:
        return {"crf": {"params": res.params.to_dict(), "n_changed": res.n_changed,
                        "seconds": round(res.seconds, 3), "source": cfg.source_name}}

    def _show_result(self, cfg: RefineConfig, res: Any) -> None:
        self.last_result = res
        img_layer = self.viewer.layers[cfg.image_name]
        kwargs = derived_layer_kwargs(img_layer, cfg.image_name + SUFFIX,
                                      self._provenance(cfg, res), shape=res.labels.shape)
        self._carry_label_names(kwargs, cfg.source_name)
        upsert_layer(self.viewer, res.labels, kwargs, "labels")
        pct = 100.0 * res.n_changed / max(res.labels.size, 1)
        self.status.setText(f"CRF changed {res.n_changed} voxels ({pct:.2f}%) in "
                            f"{res.seconds:.2f} s ({res.params.mode})")

    def _carry_label_names(self, kwargs: dict, source_name: str) -> None:
        """The refined labels mean what the source's classes meant: keep their names (the
        Compare table then shows "1 (organ)" for the CRF result too)."""
        names = {}
        if source_name in self.viewer.layers:
            names = layer_label_names(self.viewer.layers[source_name])
        # always set (also to {}): a re-run from another source must not keep stale names
        meta = kwargs.setdefault("metadata", {}).setdefault(META_KEY, {})
        meta["label_names"] = {str(k): v for k, v in names.items()}

    def _show_preview(self, cfg: RefineConfig, out: Any) -> None:
        res, z = out
        self.last_result = res
        img_layer = self.viewer.layers[cfg.image_name]
        labels = res.labels
        if z is not None:
            full = np.zeros(cfg.image.shape, labels.dtype)
            full[z] = labels
            labels = full
        kwargs = derived_layer_kwargs(img_layer, cfg.image_name + PREVIEW_SUFFIX,
                                      self._provenance(cfg, res), shape=labels.shape)
        self._carry_label_names(kwargs, cfg.source_name)
        upsert_layer(self.viewer, labels, kwargs, "labels")
        where = f"slice {z}" if z is not None else "image"
        self.status.setText(f"Preview ({where}): {res.n_changed} voxels changed in "
                            f"{res.seconds:.2f} s")

    def _show_autotune(self, res: Any) -> None:
        self.last_autotune = res
        self.set_params(res.best_params)
        self.status.setText(f"Auto-tune: Dice {res.baseline_dice:.4f} -> {res.best_dice:.4f} "
                            f"({res.gain:+.4f}) over {len(res.trials)} trials; best parameters "
                            "are now in the fields")
