"""Compare one or more candidate Labels layers with a ground-truth Labels layer: a metrics table
(rows = candidate × label), a per-slice Dice plot (click a point to jump to that slice), a
false-positive / false-negative overlay layer and CSV / JSON export. Layers not on the ground
truth's grid (shape, spacing, origin, orientation) are refused, never scored silently."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
    QListWidget, QListWidgetItem, QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout,
    QWidget,
)

from .._napari.layers import META_KEY, derived_layer_kwargs, layer_label_names, layer_to_volume
from .._progress import Job, Progress
from ..errors import GeometryError
from ._worker import JobRunner, ProgressPanel, notify_error, upsert_layer

logger = logging.getLogger(__name__)

#: Columns shown in the table (every metric is exported).
TABLE_METRICS = ("dice", "jaccard", "sensitivity", "specificity", "precision", "hd", "hd95",
                 "assd", "surface_dice", "rel_volume_diff", "volume_pred_mm3", "volume_gt_mm3")
ERRORS_SUFFIX = " [attnseg errors]"
DEBOUNCE_MS = 500


@dataclass(frozen=True)
class CompareConfig:
    """Everything the worker needs, read on the GUI thread (arrays are copies)."""

    gt_name: str
    gt: np.ndarray
    candidates: tuple[tuple[str, np.ndarray], ...]
    spacing: tuple[float, ...]
    tolerance_mm: float = 1.0
    surface: bool = True
    overlay_candidate: str | None = None
    slice_axis: int = 0
    #: candidate name -> {label index: name} (from the layers' metadata; may be empty)
    label_names: dict[str, dict[int, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class CompareResult:
    report: Any  # MetricsReport
    per_slice: dict[str, np.ndarray]
    overlay: np.ndarray | None
    config: CompareConfig


def compare_job(cfg: CompareConfig) -> Job[CompareResult]:
    """Metrics of every candidate, per-slice Dice and the FP/FN overlay (core calls only)."""
    from ..metrics import error_overlay, evaluate_job, per_slice_dice

    report = yield from evaluate_job(dict(cfg.candidates), cfg.gt, cfg.spacing,
                                     tolerance_mm=cfg.tolerance_mm, surface=cfg.surface)
    per_slice = {}
    n = len(cfg.candidates)
    for i, (name, arr) in enumerate(cfg.candidates):
        if cfg.gt.ndim == 3:
            per_slice[name] = per_slice_dice(arr, cfg.gt, axis=cfg.slice_axis)
        yield Progress(i + 1, n, "per-slice Dice", name)
    overlay = None
    if cfg.overlay_candidate is not None:
        overlay = error_overlay(dict(cfg.candidates)[cfg.overlay_candidate], cfg.gt)
    return CompareResult(report, per_slice, overlay, cfg)


def _label_text(label: Any, names: dict[int, str]) -> str:
    try:
        name = names.get(int(label))
    except (TypeError, ValueError):
        name = None
    return f"{label} ({name})" if name else _fmt(label)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


#: Provenance keys of layers a method made (model prediction, CRF, baseline, fine-tune).
_OUTPUT_KEYS = ("model_id", "crf", "baseline")


def is_method_output(layer: Any) -> bool:
    """True for a layer a method made (a segmentation, CRF or baseline result, an overlay):
    never the default ground truth."""
    meta = (getattr(layer, "metadata", None) or {}).get("attnseg")
    if isinstance(meta, dict):
        prov = meta.get("provenance") if isinstance(meta.get("provenance"), dict) else {}
        if meta.get("role") in ("prediction", "crf", "errors", "uncertainty", "baseline") or \
                any(k in prov for k in _OUTPUT_KEYS) or prov.get("kind") == "attnseg prediction":
            return True
    return "[attnseg" in getattr(layer, "name", "")


class CompareWidget(QWidget):
    """Score candidate Labels layers against a ground-truth Labels layer."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.gt_combo = QComboBox()
        self._gt_picked = False  #: the user chose the ground truth (kept whatever it is)
        self.candidates_list = QListWidget()
        self.candidates_list.setMaximumHeight(90)  # a few rows; it scrolls beyond
        self.tolerance_spin = QDoubleSpinBox()
        self.tolerance_spin.setRange(0.0, 100.0)
        self.tolerance_spin.setDecimals(2)
        self.tolerance_spin.setValue(1.0)
        self.tolerance_spin.setSuffix(" mm")
        self.surface_check = QCheckBox("surface metrics (HD, HD95, ASSD, surface Dice)")
        self.surface_check.setChecked(True)
        self.auto_check = QCheckBox("auto-recompute after edits")
        self.recompute_button = QPushButton("Recompute")
        self.export_csv_button = QPushButton("Export CSV...")
        self.export_json_button = QPushButton("Export JSON...")
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.table = QTableWidget(0, 0)
        self.progress = ProgressPanel()
        self.figure, self.canvas, self.axes = self._make_plot()
        self.report = None
        self.result: CompareResult | None = None
        self.runner: JobRunner | None = None
        self._connected: list[Any] = []
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self._auto_fire)

        form = QFormLayout()
        form.addRow("Ground truth", self.gt_combo)
        form.addRow("Candidates", self.candidates_list)
        form.addRow("Surface Dice tolerance", self.tolerance_spin)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.surface_check)
        lay.addWidget(self.auto_check)
        lay.addWidget(self.recompute_button)
        lay.addWidget(self.progress)
        lay.addWidget(self.message)
        lay.addWidget(self.table)
        lay.addWidget(self.canvas)
        row = QHBoxLayout()
        row.addWidget(self.export_csv_button)
        row.addWidget(self.export_json_button)
        lay.addLayout(row)

        self.recompute_button.clicked.connect(self.recompute)
        self.export_csv_button.clicked.connect(lambda: self.export_csv())
        self.export_json_button.clicked.connect(lambda: self.export_json())
        self.auto_check.toggled.connect(lambda _=None: self._reconnect_edits())
        self.gt_combo.currentTextChanged.connect(lambda _=None: self._refresh_candidates())
        self.gt_combo.activated.connect(self._on_gt_activated)
        self.candidates_list.itemChanged.connect(lambda _=None: self._reconnect_edits())
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    # ------------------------------------------------------------------ layer choices
    def _make_plot(self):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4, 2.2), tight_layout=True)
        canvas = FigureCanvasQTAgg(fig)
        axes = fig.add_subplot(111)
        axes.set_xlabel("slice")
        axes.set_ylabel("Dice")
        canvas.mpl_connect("button_press_event", self._on_plot_click)
        return fig, canvas, axes

    def _labels_layers(self) -> list[Any]:
        return [ly for ly in self.viewer.layers if type(ly).__name__ == "Labels"
                and not ly.name.endswith(ERRORS_SUFFIX)]

    def _refresh_layers(self, event: Any = None) -> None:
        """List the Labels layers as ground-truth choices. The user's choice is kept; otherwise
        the first layer that is not a method's output (a model prediction, CRF or baseline
        result) is chosen, or none until such a layer appears: the ground truth never defaults
        to a model's own output."""
        layers = self._labels_layers()
        names = [ly.name for ly in layers]
        current = self.gt_combo.currentText()
        self.gt_combo.blockSignals(True)
        self.gt_combo.clear()
        self.gt_combo.addItems(names)
        keep = current in names and (self._gt_picked or not is_method_output(
            self.viewer.layers[current]))
        if keep:
            self.gt_combo.setCurrentText(current)
        else:
            truth = [i for i, ly in enumerate(layers) if not is_method_output(ly)]
            self.gt_combo.setCurrentIndex(truth[0] if truth else -1)
        self.gt_combo.blockSignals(False)
        self._refresh_candidates()

    def _on_gt_activated(self, index: int) -> None:
        self._gt_picked = index >= 0  # a choice by the user (activated = user interaction)

    def _refresh_candidates(self) -> None:
        checked = set(self.checked_candidates())
        gt = self.gt_combo.currentText()
        self.candidates_list.blockSignals(True)
        self.candidates_list.clear()
        for ly in self._labels_layers():
            if ly.name == gt:
                continue
            item = QListWidgetItem(ly.name)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Checked if ly.name in checked else Qt.Unchecked)
            self.candidates_list.addItem(item)
        self.candidates_list.blockSignals(False)
        self._reconnect_edits()

    def checked_candidates(self) -> list[str]:
        out = []
        for i in range(self.candidates_list.count()):
            item = self.candidates_list.item(i)
            if item.checkState() == Qt.Checked:
                out.append(item.text())
        return out

    def set_candidates(self, names: list[str]) -> None:
        """Check exactly ``names`` in the candidate list (tests, scripts)."""
        for i in range(self.candidates_list.count()):
            item = self.candidates_list.item(i)
            item.setCheckState(Qt.Checked if item.text() in names else Qt.Unchecked)

    # ------------------------------------------------------------------ auto recompute
    def _reconnect_edits(self) -> None:
        for ly in self._connected:
            for ev in (ly.events.data, getattr(ly.events, "paint", None)):
                if ev is not None:
                    ev.disconnect(self._schedule)
        self._connected = []
        if not self.auto_check.isChecked():
            return
        names = [self.gt_combo.currentText(), *self.checked_candidates()]
        for name in names:
            if name and name in self.viewer.layers:
                ly = self.viewer.layers[name]
                ly.events.data.connect(self._schedule)
                if hasattr(ly.events, "paint"):
                    ly.events.paint.connect(self._schedule)
                self._connected.append(ly)

    def _schedule(self, event: Any = None) -> None:
        """Restart the debounce timer (edits in quick succession recompute once)."""
        if self.auto_check.isChecked():
            self._timer.start()

    def _auto_fire(self) -> None:
        if self.runner is not None and self.runner.running:
            self._timer.start()  # try again after the running job
            return
        self.recompute()

    # ------------------------------------------------------------------ compute
    def snapshot(self) -> CompareConfig:
        """Read the chosen layers on the GUI thread; refuse layers off the ground truth's grid."""
        gt_name = self.gt_combo.currentText()
        if not gt_name or gt_name not in self.viewer.layers:
            raise ValueError("choose a ground-truth Labels layer")
        names = self.checked_candidates()
        if not names:
            raise ValueError("check at least one candidate Labels layer to compare")
        gt_layer = self.viewer.layers[gt_name]
        gt_vol = layer_to_volume(gt_layer)
        cands = []
        for name in names:
            vol = layer_to_volume(self.viewer.layers[name])
            if vol.shape != gt_vol.shape:
                raise GeometryError(
                    f"'{name}' has shape {vol.shape} but the ground truth '{gt_name}' has "
                    f"{gt_vol.shape}: not scored (resample it onto the ground-truth grid)")
            if not gt_vol.same_grid(vol):
                raise GeometryError(
                    f"'{name}' is not on the grid of the ground truth '{gt_name}' (spacing "
                    f"{vol.spacing} vs {gt_vol.spacing} mm, or a different origin/orientation): "
                    "not scored")
            cands.append((name, np.array(vol.data)))
        gt_names = layer_label_names(gt_layer)
        label_names = {name: {**layer_label_names(self.viewer.layers[name]), **gt_names}
                       for name in names}
        return CompareConfig(
            gt_name=gt_name, gt=np.array(gt_vol.data), candidates=tuple(cands),
            spacing=gt_vol.spacing, tolerance_mm=float(self.tolerance_spin.value()),
            surface=self.surface_check.isChecked(), overlay_candidate=names[0],
            label_names=label_names,
        )

    def make_runner(self) -> JobRunner | None:
        """Snapshot and build the runner (None with a message when the inputs are refused)."""
        try:
            cfg = self.snapshot()
        except (GeometryError, ValueError) as exc:
            self.message.setText(str(exc))
            notify_error(exc, "Compare")
            return None
        self.message.setText("")
        self._t0 = time.perf_counter()
        self.runner = JobRunner(lambda: compare_job(cfg), self.progress, on_result=self.show_result,
                                context="Compare")
        return self.runner

    def recompute(self) -> None:
        if self.runner is not None and self.runner.running:
            self.message.setText("a computation is running; it will not be restarted")
            return
        runner = self.make_runner()
        if runner is not None:
            runner.start()

    # ------------------------------------------------------------------ results
    def show_result(self, result: CompareResult) -> None:
        self.result = result
        self.report = result.report
        cfg = result.config
        self._fill_table(result.report, cfg.label_names)
        self._plot(result)
        n = len(cfg.candidates)
        seconds = time.perf_counter() - getattr(self, "_t0", time.perf_counter())
        self.progress.status.setText(
            f"scored {n} candidate{'s' if n != 1 else ''} in {seconds:.2f} s")
        if result.overlay is not None and cfg.gt_name in self.viewer.layers:
            self._show_overlay(cfg.gt_name, result.overlay)

    def _fill_table(self, report: Any, label_names: dict[str, dict[int, str]] | None = None) -> None:
        cols = ["candidate", "label"] + [m for m in TABLE_METRICS if m in report.columns]
        label_names = label_names or {}
        self.table.clear()
        self.table.setColumnCount(len(cols))
        self.table.setRowCount(len(report.rows))
        self.table.setHorizontalHeaderLabels(cols)
        for i, row in enumerate(report.rows):
            for j, c in enumerate(cols):
                value = row.get(c, "")
                text = _label_text(value, label_names.get(row.get("candidate"), {})) \
                    if c == "label" else _fmt(value)
                self.table.setItem(i, j, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()

    def _plot(self, result: CompareResult) -> None:
        ax = self.axes
        ax.clear()
        ax.set_xlabel(f"slice (axis {result.config.slice_axis})")
        ax.set_ylabel("Dice")
        for name, d in result.per_slice.items():
            x = np.flatnonzero(np.isfinite(d))
            ax.plot(x, d[x], ".-", label=name, picker=5)
        if result.per_slice:
            ax.set_ylim(-0.02, 1.02)
            ax.legend(fontsize="x-small", loc="lower right")
        self.canvas.draw_idle()

    def _on_plot_click(self, event: Any) -> None:
        """Jump the viewer to the clicked slice (event.xdata = slice index along the axis)."""
        if self.result is None or event.xdata is None:
            return
        cfg = self.result.config
        n = cfg.gt.shape[cfg.slice_axis]
        index = int(np.clip(round(float(event.xdata)), 0, n - 1))
        self.go_to_slice(index)

    def go_to_slice(self, index: int) -> None:
        if self.result is None or self.result.config.gt_name not in self.viewer.layers:
            return
        cfg = self.result.config
        layer = self.viewer.layers[cfg.gt_name]
        point = [0.0] * layer.ndim
        point[cfg.slice_axis] = float(index)
        world = np.asarray(layer.data_to_world(point), dtype=float)
        axis = self.viewer.dims.ndim - layer.ndim + cfg.slice_axis
        self.viewer.dims.set_point(axis, world[cfg.slice_axis])

    def _show_overlay(self, gt_name: str, overlay: np.ndarray) -> Any:
        from napari.utils.colormaps import DirectLabelColormap

        gt_layer = self.viewer.layers[gt_name]
        prov = {"errors_of": self.result.config.overlay_candidate,
                "legend": "1 = false positive, 2 = false negative"}
        kwargs = derived_layer_kwargs(gt_layer, gt_name + ERRORS_SUFFIX, provenance=prov)
        kwargs["metadata"]["attnseg"]["role"] = "errors"
        active = self.viewer.layers.selection.active
        layer = upsert_layer(self.viewer, overlay, kwargs, "labels")
        # napari makes a new layer the active one: the brush would then paint on the overlay
        if active is not None and active is not layer and active in self.viewer.layers:
            self.viewer.layers.selection.active = active
        layer.colormap = DirectLabelColormap(color_dict={
            None: "transparent", 0: "transparent", 1: "red", 2: "blue"})
        return layer

    # ------------------------------------------------------------------ export
    def _export(self, kind: str, path: str | None) -> str | None:
        if self.report is None:
            self.message.setText("nothing to export yet: press Recompute")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, f"Export metrics ({kind.upper()})",
                                                  f"metrics.{kind}", f"{kind.upper()} (*.{kind})")
            if not path:
                return None
        try:
            getattr(self.report, f"to_{kind}")(path)
        except Exception as exc:  # WriteError etc.: shown, not swallowed
            notify_error(exc, "Export")
            return None
        self.message.setText(f"saved {path}")
        return str(path)

    def export_csv(self, path: str | None = None) -> str | None:
        return self._export("csv", path)

    def export_json(self, path: str | None = None) -> str | None:
        return self._export("json", path)
