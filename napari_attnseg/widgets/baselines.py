"""Traditional baselines in napari: Otsu, seeded region growing (seed from a Points layer or a
seed Labels layer), morphological Chan-Vese and geodesic active contours. The result is a Labels
layer "<image> [<method>]" on the image's grid, ready for the compare widget."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QComboBox, QDoubleSpinBox, QFormLayout, QLabel, QPushButton, QSpinBox, QVBoxLayout, QWidget,
)

from .._napari.layers import derived_layer_kwargs, layer_to_volume
from .._progress import Job
from ..errors import GeometryError
from ._worker import JobRunner, ProgressPanel, notify_error, upsert_layer

logger = logging.getLogger(__name__)

#: Combo text → (core method name, layer-name suffix).
METHOD_CHOICES = {
    "Otsu": ("otsu", "otsu"),
    "Region growing": ("region_growing", "region growing"),
    "Chan-Vese": ("chan_vese", "chan-vese"),
    "Geodesic": ("geodesic", "geodesic"),
}
NO_SEED = "(none)"


@dataclass(frozen=True)
class BaselineConfig:
    image_name: str
    image: np.ndarray
    method: str
    seed: Any = None  # point index tuple or seed mask
    tolerance: float | None = None
    iterations: int = 100
    smoothing: int = 1
    init: np.ndarray | None = None
    suffix: str = ""

    def job(self) -> Job[np.ndarray]:
        from ..baselines import baseline_job

        if self.method in ("chan_vese", "geodesic"):
            return baseline_job(self.method, self.image, iterations=self.iterations,
                                init=self.init, smoothing=self.smoothing)
        return baseline_job(self.method, self.image, seed=self.seed, tolerance=self.tolerance)

    def provenance(self) -> dict[str, Any]:
        seed = self.seed if self.seed is None or isinstance(self.seed, tuple) else "mask"
        return {"baseline": self.method, "source_layer": self.image_name, "seed": seed,
                "tolerance": self.tolerance, "iterations": self.iterations,
                "smoothing": self.smoothing, "init": None if self.init is None else "mask"}


class BaselinesWidget(QWidget):
    """Run a traditional segmentation on an Image layer."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.image_combo = QComboBox()
        self.method_combo = QComboBox()
        self.method_combo.addItems(list(METHOD_CHOICES))
        self.seed_combo = QComboBox()
        self.tolerance_spin = QDoubleSpinBox()
        self.tolerance_spin.setRange(0.0, 1e6)
        self.tolerance_spin.setDecimals(3)
        self.tolerance_spin.setSpecialValueText("auto (10% of range)")
        self.tolerance_spin.setValue(0.0)
        self.iterations_spin = QSpinBox()
        self.iterations_spin.setRange(1, 10000)
        self.iterations_spin.setValue(100)
        self.smoothing_spin = QSpinBox()
        self.smoothing_spin.setRange(0, 10)
        self.smoothing_spin.setValue(1)
        self.run_button = QPushButton("Run")
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.progress = ProgressPanel()
        self.runner: JobRunner | None = None
        self.last_layer = None

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Method", self.method_combo)
        form.addRow("Seed / initial mask", self.seed_combo)
        form.addRow("Tolerance (region growing)", self.tolerance_spin)
        form.addRow("Iterations (active contours)", self.iterations_spin)
        form.addRow("Smoothing (active contours)", self.smoothing_spin)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.run_button)
        lay.addWidget(self.progress)
        lay.addWidget(self.message)
        self.run_button.clicked.connect(self.run)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    def _refresh_layers(self, event: Any = None) -> None:
        for combo, kinds, extra in ((self.image_combo, ("Image",), []),
                                    (self.seed_combo, ("Points", "Labels"), [NO_SEED])):
            current = combo.currentText()
            names = extra + [ly.name for ly in self.viewer.layers if type(ly).__name__ in kinds]
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)
            combo.blockSignals(False)

    # ------------------------------------------------------------------ inputs
    def _seed(self, image_layer: Any, image_vol: Any) -> Any:
        """A point index (from the first point, world → image data index) or a seed mask."""
        name = self.seed_combo.currentText()
        if not name or name == NO_SEED:
            return None
        layer = self.viewer.layers[name]
        if type(layer).__name__ == "Points":
            if len(layer.data) == 0:
                raise ValueError(f"the Points layer '{name}' has no point: click a seed first")
            world = layer.data_to_world(np.asarray(layer.data[0], dtype=float))
            idx = np.round(np.asarray(image_layer.world_to_data(world), dtype=float)).astype(int)
            idx = tuple(int(v) for v in idx[-image_vol.ndim:])
            if not all(0 <= i < n for i, n in zip(idx, image_vol.shape)):
                raise ValueError(f"the seed point {idx} lies outside the image {image_vol.shape}")
            return idx
        vol = layer_to_volume(layer)
        if not image_vol.same_grid(vol):
            raise GeometryError(f"the seed Labels layer '{name}' is not on the grid of the image "
                                f"'{image_layer.name}' ({vol.shape} vs {image_vol.shape})")
        mask = np.asarray(vol.data) != 0
        if not mask.any():
            raise ValueError(f"the seed Labels layer '{name}' is empty: paint a seed first")
        return mask

    def snapshot(self) -> BaselineConfig:
        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise ValueError("choose an Image layer")
        layer = self.viewer.layers[name]
        if getattr(layer, "rgb", False):
            raise ValueError(f"'{name}' is an RGB image; convert it to grayscale first")
        vol = layer_to_volume(layer)
        method, suffix = METHOD_CHOICES[self.method_combo.currentText()]
        seed = self._seed(layer, vol)
        init = None
        if method == "region_growing" and seed is None:
            raise ValueError("region growing needs a seed: add a Points layer and click the "
                             "object, or paint a seed Labels layer, and choose it as seed")
        if method in ("chan_vese", "geodesic") and seed is not None:
            if isinstance(seed, tuple):
                init = np.zeros(vol.shape, bool)
                init[seed] = True  # a point grows (geodesic balloon +1)
            else:
                init = seed
        tol = float(self.tolerance_spin.value())
        return BaselineConfig(
            image_name=name, image=np.array(vol.data), method=method,
            seed=seed if method == "region_growing" else None,
            tolerance=tol if tol > 0 else None, iterations=int(self.iterations_spin.value()),
            smoothing=int(self.smoothing_spin.value()), init=init, suffix=suffix,
        )

    # ------------------------------------------------------------------ run
    def make_runner(self) -> JobRunner | None:
        try:
            cfg = self.snapshot()
        except (GeometryError, ValueError) as exc:
            self.message.setText(str(exc))
            notify_error(exc, "Baselines")
            return None
        self.message.setText("")
        self.runner = JobRunner(cfg.job, self.progress, context="Baselines",
                                on_result=lambda labels: self.show_result(cfg, labels))
        return self.runner

    def run(self) -> None:
        if self.runner is not None and self.runner.running:
            self.message.setText("a baseline is already running")
            return
        runner = self.make_runner()
        if runner is not None:
            runner.start()

    def show_result(self, cfg: BaselineConfig, labels: np.ndarray) -> Any:
        if cfg.image_name not in self.viewer.layers:
            raise ValueError(f"the image layer '{cfg.image_name}' was removed during the run")
        source = self.viewer.layers[cfg.image_name]
        kwargs = derived_layer_kwargs(source, f"{cfg.image_name} [{cfg.suffix}]",
                                      provenance=cfg.provenance(), shape=labels.shape)
        self.last_layer = upsert_layer(self.viewer, labels, kwargs, "labels")
        self.message.setText(f"{cfg.suffix}: {int(np.count_nonzero(labels))} voxels labelled")
        return self.last_layer
