"""The Compare dock's plot and head-circumference layer.

* :class:`ComparePlot` -- per-slice Dice for a 3D ground truth (click a point to jump to that
  slice), per-class Dice bars for a 2D image (there are no slices). matplotlib is imported and
  the figure built only when the first result is shown (the job has imported it already in its
  worker thread, so the GUI thread only builds the figure).
* :func:`show_hc_layer` -- the fitted ellipses as one Shapes layer on the ground truth's grid
  (role ``hc``), replaced in place on a re-run, never the active layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from .._napari.layers import derived_layer_kwargs
from ._results import _same_geometry, inactive_additions

HC_SUFFIX = " [attnseg hc]"
HC_TRUTH_COLOUR = "lime"
HC_COLOURS = ("orange", "magenta", "cyan", "yellow", "red")


class ComparePlot(QWidget):
    """Per-slice Dice (3D) or per-class Dice bars (2D) of a compare result."""

    def __init__(self, on_slice: Callable[[int], None] | None = None,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.on_slice = on_slice
        self.figure = self.canvas = self.axes = None
        self.result: Any = None
        self._key: tuple | None = None  # what is drawn: (kind, ...) -> update in place
        self.note = QLabel("the plot appears after the first comparison")
        self.note.setWordWrap(True)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.addWidget(self.note)

    def _build(self) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4, 2.2), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(140)
        self.axes = self.figure.add_subplot(111)
        self.canvas.mpl_connect("button_press_event", self.on_click)
        self._layout.insertWidget(0, self.canvas)

    def show_result(self, result: Any, label_text: Callable[[Any, str], str]) -> None:
        """Draw ``result``; a re-run with the same candidates and classes moves the existing
        lines or bars (``axes.clear()`` and a fresh legend cost ~30 ms of GUI-thread CPU)."""
        if self.canvas is None:
            self._build()
        self.result = result
        if result.config.gt.ndim == 3:
            series = {name: d for name, d in result.per_slice.items()}
            key = ("slices", result.config.slice_axis, tuple(series))
            if key != self._key or not self._update_lines(series):
                self._redraw(key, lambda ax: self._per_slice(ax, result))
            self.note.setText("per-slice Dice: click a point to go to that slice")
        else:
            names, labels, dice = self._class_table(result)
            key = ("classes", tuple(names), tuple(labels))
            if key != self._key or not self._update_bars(dice):
                self._redraw(key, lambda ax: self._per_class(ax, names, labels, dice,
                                                             label_text))
            self.note.setText("2D image: Dice per class (there are no slices to plot)")
        self.canvas.draw_idle()

    def _redraw(self, key: tuple, draw: Callable[[Any], None]) -> None:
        self.axes.clear()
        draw(self.axes)
        self._key = key

    def _update_lines(self, series: dict[str, np.ndarray]) -> bool:
        lines = self.axes.get_lines()
        if len(lines) != len(series):
            return False
        for line, d in zip(lines, series.values()):
            x = np.flatnonzero(np.isfinite(d))
            line.set_data(x, d[x])
        self.axes.relim()
        self.axes.autoscale_view(scaley=False)
        return True

    def _update_bars(self, dice: list[list[float]]) -> bool:
        groups = self.axes.containers
        if len(groups) != len(dice) or any(len(g) != len(d) for g, d in zip(groups, dice)):
            return False
        for group, values in zip(groups, dice):
            for bar, value in zip(group, values):
                bar.set_height(value)
        return True

    @staticmethod
    def _per_slice(ax: Any, result: Any) -> None:
        ax.set_xlabel(f"slice (axis {result.config.slice_axis})")
        ax.set_ylabel("Dice")
        for name, d in result.per_slice.items():
            x = np.flatnonzero(np.isfinite(d))
            ax.plot(x, d[x], ".-", label=name, picker=5)
        if result.per_slice:
            ax.set_ylim(-0.02, 1.02)
            ax.legend(fontsize="x-small", loc="lower right")

    @staticmethod
    def _class_table(result: Any) -> tuple[list, list, list[list[float]]]:
        """(candidates, labels, Dice[candidate][label]) of a 2D result's report."""
        rows = result.report.rows
        names = list(dict.fromkeys(r.get("candidate", "") for r in rows))
        labels = list(dict.fromkeys(r["label"] for r in rows))
        dice = [[next((float(r["dice"]) for r in rows
                       if r.get("candidate", "") == name and r["label"] == lab), np.nan)
                 for lab in labels] for name in names]
        return names, labels, dice

    @staticmethod
    def _per_class(ax: Any, names: list, labels: list, dice: list[list[float]],
                   label_text: Callable[[Any, str], str]) -> None:
        width = 0.8 / max(len(names), 1)
        for i, (name, values) in enumerate(zip(names, dice)):
            x = np.arange(len(labels)) + (i - (len(names) - 1) / 2) * width
            ax.bar(x, values, width=width, label=name or "prediction")
        ax.set_xticks(np.arange(len(labels)))
        ax.set_xticklabels([label_text(lab, names[0] if names else "") for lab in labels],
                           fontsize="x-small")
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("Dice")
        ax.set_xlabel("class")
        if names:
            ax.legend(fontsize="x-small", loc="lower right")

    def on_click(self, event: Any) -> None:
        """Jump to the clicked slice (event.xdata = slice index); nothing for a 2D image."""
        result = self.result
        if result is None or event.xdata is None or result.config.gt.ndim != 3:
            return
        n = result.config.gt.shape[result.config.slice_axis]
        index = int(np.clip(round(float(event.xdata)), 0, n - 1))
        if self.on_slice is not None:
            self.on_slice(index)


def show_hc_layer(viewer: Any, gt_layer: Any, result: Any) -> Any:
    """The outlines of ``result.hc_outlines`` as the Shapes layer ``<gt> [attnseg hc]`` on the
    ground truth's grid (the truth lime, candidates in :data:`HC_COLOURS`): updated in place
    when it exists, removed when there is nothing to draw. The active layer is kept."""
    name = gt_layer.name + HC_SUFFIX
    existing = viewer.layers[name] if name in viewer.layers else None
    if existing is not None and type(existing).__name__ != "Shapes":
        viewer.layers.remove(existing)
        existing = None
    outlines = list(result.hc_outlines)
    if not outlines:
        if existing is not None:
            viewer.layers.remove(existing)
        return None
    gt_name = result.config.gt_name
    colours, k = [], 0
    for who, _ in outlines:
        if who == gt_name:
            colours.append(HC_TRUTH_COLOUR)
        else:
            colours.append(HC_COLOURS[k % len(HC_COLOURS)])
            k += 1
    polys = [np.asarray(p, dtype=float) for _, p in outlines]
    width = max(1.0, 0.004 * max(result.config.gt.shape))
    prov = {"hc_of": [w for w, _ in outlines], "colours": colours,
            "legend": f"{HC_TRUTH_COLOUR}: ground truth; " + ", ".join(
                f"{c}: {w}" for (w, _), c in zip(outlines, colours) if w != gt_name)}
    kwargs = derived_layer_kwargs(gt_layer, name, provenance=prov)
    kwargs["metadata"]["attnseg"]["role"] = "hc"
    active = viewer.layers.selection.active
    style = dict(edge_color=colours, face_color="transparent", edge_width=width)
    if existing is not None:
        drawn = existing.metadata.get("attnseg", {}).get("provenance", {})
        if existing.nshapes == len(polys) and drawn.get("colours") == colours and \
                np.allclose(existing.edge_width, width):
            existing.data = polys  # keeps the shapes' colours: ~10 ms less than remove + add
        else:
            existing.selected_data = set(range(existing.nshapes))
            existing.remove_selected()
            existing.add_polygons(polys, **style)
        for key in ("scale", "translate", "affine"):
            if key in kwargs and not _same_geometry(existing, key, kwargs[key]):
                setattr(existing, key, kwargs[key])
        existing.metadata.update(kwargs["metadata"])
        layer = existing
    else:
        with inactive_additions(viewer):  # new layers take it: the brush would follow
            layer = viewer.add_shapes(polys, shape_type="polygon", **style, **kwargs)
    if layer in viewer.layers.selection and layer is not active:
        viewer.layers.selection.discard(layer)
    return layer
