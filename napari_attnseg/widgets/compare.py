"""Compare one or more candidate Labels layers with a ground-truth Labels layer: a metrics table
(rows = candidate × label), a per-slice Dice plot (click a point to jump to that slice; per-class
Dice bars for a 2D image), a false-positive / false-negative overlay layer, for 2D images the head
circumference (HC18's measure) with the fitted ellipses drawn, and CSV / JSON export. Layers not
on the ground truth's grid (shape, spacing, origin, orientation) are refused, never scored
silently. The form is built from :class:`~._compare_form.CompareParams`; the ground-truth picker
tracks the viewer and never defaults to a method's output (a prediction, CRF or baseline
result). The job, request and result are in ``_compare_job``, the plot and the HC layer in
``_compare_plot``."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from magicgui.widgets import Container, EmptyWidget, PushButton
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (QFileDialog, QLabel, QListWidget, QListWidgetItem, QTableWidget,
                            QTableWidgetItem)

from .._napari.layers import META_KEY, derived_layer_kwargs, layer_label_names, layer_to_volume
from ..errors import GeometryError
from ..volume import spacing_is_nominal
from ._layers import follow_layers
from ._compare_job import (  # noqa: F401  (re-exported: the widget's public names)
    TABLE_METRICS, CompareConfig, CompareResult, _fmt, _label_text, compare_job, hc_summary,
    is_method_output,
)
from ._compare_form import HC_TOOLTIP, CompareParams, TruthPicker
from ._compare_plot import HC_SUFFIX, ComparePlot, show_hc_layer
from ._form import align_labels, build_form, read_form
from ._results import inactive_additions
from ._worker import JobRunner, ProgressPanel, notify_error, upsert_layer

logger = logging.getLogger(__name__)

ERRORS_SUFFIX = " [attnseg errors]"
DEBOUNCE_MS = 500


class CompareWidget(Container):
    """Score candidate Labels layers against a ground-truth Labels layer."""

    def __init__(self, napari_viewer: Any):
        super().__init__(scrollable=False)
        self.viewer = napari_viewer
        self._gt_picked = False  #: the user chose the ground truth (kept whatever it is)
        self._hc_picked = False  #: the user toggled HC (kept whatever the ground truth)
        self._hc_default_for: Any = None  #: the ground truth the HC default was chosen for
        self.ground_truth = TruthPicker(label="Ground truth", choices=self._gt_choices)
        self.candidates_list = QListWidget()
        self.candidates_list.setMaximumHeight(90)  # a few rows; it scrolls beyond
        candidates = EmptyWidget(label="Candidates")
        candidates.native.layout().setContentsMargins(0, 0, 0, 0)
        candidates.native.layout().addWidget(self.candidates_list)
        self.pickers = Container(widgets=[self.ground_truth, candidates], labels=True)
        self.form = build_form(CompareParams, labels=True)
        self.recompute_button = PushButton(text="Recompute")
        self.export_csv_button = PushButton(text="Export CSV...")
        self.export_json_button = PushButton(text="Export JSON...")
        exports = Container(widgets=[self.export_csv_button, self.export_json_button],
                            layout="horizontal", labels=False)
        # the results: Qt parts (progress, message, table, HC readout, plot) in one block
        self.progress = ProgressPanel()
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.table = QTableWidget(0, 0)
        self.hc_text = QLabel("")
        self.hc_text.setWordWrap(True)
        self.plot = ComparePlot(on_slice=self.go_to_slice)
        results = EmptyWidget()
        results.native.layout().setContentsMargins(0, 0, 0, 0)
        for qt in (self.progress, self.message, self.table, self.hc_text, self.plot):
            results.native.layout().addWidget(qt)
        self.extend([self.pickers, self.form, self.recompute_button, results, exports])
        align_labels(self, self.pickers, self.form)  # one column of fields
        self.report = None
        self.result: CompareResult | None = None
        self.runner: JobRunner | None = None
        self._connected: list[Any] = []
        self._timer = QTimer(self.native)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self._auto_fire)

        self.recompute_button.changed.connect(lambda *_: self.recompute())
        self.export_csv_button.changed.connect(lambda *_: self.export_csv())
        self.export_json_button.changed.connect(lambda *_: self.export_json())
        self.form.auto_recompute.changed.connect(lambda *_: self._reconnect_edits())
        self.hc_check.clicked.connect(self._on_hc_clicked)  # the user's click (not set here)
        self.ground_truth.changed.connect(lambda *_: self._refresh_candidates())
        self.gt_combo.activated.connect(self._on_gt_activated)
        self.candidates_list.itemChanged.connect(lambda _=None: self._reconnect_edits())
        follow_layers(self.viewer, self._layers_changed)
        self.ground_truth.after_reset = self._choose_truth
        self._layers_changed()

    # Qt handles of the pickers and fields, for scripts and tests (``setCurrentText``,
    # ``setChecked``, ``click``); the magicgui widgets above are the API.
    gt_combo = property(lambda self: self.ground_truth.native)
    tolerance_spin = property(lambda self: self.form.tolerance_mm.native)
    surface_check = property(lambda self: self.form.surface.native)
    auto_check = property(lambda self: self.form.auto_recompute.native)
    hc_check = property(lambda self: self.form.hc.native)
    hc_label_spin = property(lambda self: self.form.hc_label.native)
    # the plot's figure, canvas and axes (None until the first result is shown)
    figure = property(lambda self: self.plot.figure)
    canvas = property(lambda self: self.plot.canvas)
    axes = property(lambda self: self.plot.axes)

    # ------------------------------------------------------------------ layer choices
    def _labels_layers(self) -> list[Any]:
        return [ly for ly in self.viewer.layers if type(ly).__name__ == "Labels"
                and not ly.name.endswith((ERRORS_SUFFIX, HC_SUFFIX))]

    def _gt_choices(self, *_: Any) -> list:
        return [(ly.name, ly) for ly in self._labels_layers()]

    def _choose_truth(self, before: Any) -> None:
        """After the choices changed: the user's choice is kept; otherwise the first layer
        that is not a method's output (a model prediction, CRF or baseline result) is chosen,
        or none until such a layer appears: the ground truth never defaults to a model's own
        output."""
        layers = [ly for ly in self.ground_truth.choices if ly is not None]
        if before is not None and any(ly is before for ly in layers) and (
                self._gt_picked or not is_method_output(before)):
            if self.ground_truth.value is not before:
                self.ground_truth.value = before
            return
        truth = [ly for ly in layers if not is_method_output(ly)]
        if truth:
            if self.ground_truth.value is not truth[0]:
                self.ground_truth.value = truth[0]
        elif self.gt_combo.currentIndex() != -1:
            self.gt_combo.setCurrentIndex(-1)  # value None: nothing chosen

    def reset_choices(self, *_: Any) -> None:
        """The pickers follow the viewer's layers (napari calls this for a docked widget on
        insertions, removals, reorders and renames; the viewer's events call it otherwise)."""
        super().reset_choices()
        if getattr(self, "candidates_list", None) is not None:
            self._refresh_candidates()

    def _layers_changed(self, *_: Any) -> None:
        self.reset_choices()

    def _on_gt_activated(self, index: int) -> None:
        self._gt_picked = index >= 0  # a choice by the user (activated = user interaction)

    def _refresh_candidates(self) -> None:
        checked = set(self.checked_candidates())
        gt = self.ground_truth.value
        self.candidates_list.blockSignals(True)
        self.candidates_list.clear()
        for ly in self._labels_layers():
            if ly is gt:
                continue
            item = QListWidgetItem(ly.name)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Checked if ly.name in checked else Qt.Unchecked)
            self.candidates_list.addItem(item)
        self.candidates_list.blockSignals(False)
        self._update_hc_choice()
        self._reconnect_edits()

    def _on_hc_clicked(self, _checked: bool = False) -> None:
        self._hc_picked = True

    def _update_hc_choice(self) -> None:
        """Head circumference is for 2D ground truths: enabled for them, checked by default for
        a fetal-head image (HC18's CSV says so), unless the user chose."""
        layer = self.ground_truth.value
        is_2d = layer is not None and layer.ndim == 2
        for w in (self.form.hc, self.form.hc_label):
            w.enabled = is_2d
        self.form.hc.tooltip = HC_TOOLTIP + (
            "" if is_2d or layer is None else " (for 2D images only)")
        if not self._hc_picked and layer is not None and layer is not self._hc_default_for:
            self._hc_default_for = layer  # the default once per ground truth, not every event
            meta = (layer.metadata or {}).get(META_KEY) or {}
            header = meta.get("header") if isinstance(meta.get("header"), dict) else {}
            self.form.hc.value = is_2d and header.get("anatomy") == "fetal head"

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

    def settings(self) -> CompareParams:
        return read_form(self.form, CompareParams)

    # ------------------------------------------------------------------ auto recompute
    def _reconnect_edits(self) -> None:
        for ly in self._connected:
            for ev in (ly.events.data, getattr(ly.events, "paint", None)):
                if ev is not None:
                    ev.disconnect(self._schedule)
        self._connected = []
        if not self.form.auto_recompute.value:
            return
        gt = self.ground_truth.value
        layers = [gt] if gt is not None and gt in self.viewer.layers else []
        layers += [self.viewer.layers[n] for n in self.checked_candidates()
                   if n in self.viewer.layers]
        for ly in layers:
            ly.events.data.connect(self._schedule)
            if hasattr(ly.events, "paint"):
                ly.events.paint.connect(self._schedule)
            self._connected.append(ly)

    def _schedule(self, event: Any = None) -> None:
        """Restart the debounce timer (edits in quick succession recompute once)."""
        if self.form.auto_recompute.value:
            self._timer.start()

    def _auto_fire(self) -> None:
        if self.runner is not None and self.runner.running:
            self._timer.start()  # try again after the running job
            return
        self.recompute()

    # ------------------------------------------------------------------ compute
    def snapshot(self) -> CompareConfig:
        """Read the chosen layers on the GUI thread; refuse layers off the ground truth's grid."""
        gt_layer = self.ground_truth.value
        if gt_layer is None or gt_layer not in self.viewer.layers:
            raise ValueError("choose a ground-truth Labels layer")
        names = self.checked_candidates()
        if not names:
            raise ValueError("check at least one candidate Labels layer to compare")
        gt_name = gt_layer.name
        s = self.settings()
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
        hc_label, hc_problem = None, ""
        if s.hc and self.form.hc.enabled:
            hc_label = int(s.hc_label)
            if dict(gt_vol.header).get("pixel_size_source") == "assumed":
                hc_problem = (f"'{gt_name}' has no pixel size (1 mm was assumed): HC in pixels "
                              "is not mm; open it with its pixel size (Load: pixel size, or a "
                              "filename,pixel_size_mm CSV beside the image)")
        return CompareConfig(
            gt_name=gt_name, gt=np.array(gt_vol.data), candidates=tuple(cands),
            spacing=gt_vol.spacing, tolerance_mm=float(s.tolerance_mm), surface=s.surface,
            overlay_candidate=names[0],
            label_names=label_names, hc_label=hc_label, hc_problem=hc_problem,
            spacing_nominal=spacing_is_nominal(gt_vol),
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
        names = cfg.label_names
        self.plot.show_result(result, lambda lab, cand: _label_text(lab, names.get(cand, {})))
        self.hc_text.setText(hc_summary(result))
        n = len(cfg.candidates)
        seconds = time.perf_counter() - getattr(self, "_t0", time.perf_counter())
        self.progress.status.setText(
            f"scored {n} candidate{'s' if n != 1 else ''} in {seconds:.2f} s"
            + (f"; '{cfg.gt_name}' gives no voxel size (1 mm assumed): distances and volumes are "
               "in voxels, not mm" if cfg.spacing_nominal else ""))
        if result.overlay is not None and cfg.gt_name in self.viewer.layers:
            self._show_overlay(cfg.gt_name, result.overlay)
        if cfg.gt_name in self.viewer.layers:
            show_hc_layer(self.viewer, self.viewer.layers[cfg.gt_name], result)

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

    def _on_plot_click(self, event: Any) -> None:
        """Jump the viewer to the clicked slice (event.xdata = slice index along the axis)."""
        self.plot.on_click(event)

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
        # the colours given at creation: setting them afterwards re-colours the whole volume
        # again on the GUI thread (~50 ms per result); an updated layer keeps its own
        colours = {None: "transparent", 0: "transparent", 1: "red", 2: "blue"}
        kwargs["colormap"] = DirectLabelColormap(color_dict=colours)
        with inactive_additions(self.viewer):  # else the brush would then paint on the overlay
            layer = upsert_layer(self.viewer, overlay, kwargs, "labels")
        if not isinstance(layer.colormap, DirectLabelColormap):
            layer.colormap = kwargs["colormap"]
        return layer

    # ------------------------------------------------------------------ export
    def _export(self, kind: str, path: str | None) -> str | None:
        if self.report is None:
            self.message.setText("nothing to export yet: press Recompute")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self.native, f"Export metrics ({kind.upper()})",
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
