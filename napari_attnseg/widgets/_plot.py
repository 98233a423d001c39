"""The live training plot of the Fine-tune widget: loss and held-out Dice against the step."""

from __future__ import annotations

import time
from typing import Any

from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

__all__ = ["PLOT_INTERVAL_S", "LossPlot"]

PLOT_INTERVAL_S = 0.5  #: the live plot redraws at most this often


class LossPlot(QWidget):
    """Training loss (blue line) and validation Dice (orange dots) against the step.

    Kept cheap for the GUI thread: one axes, the curves blitted onto a cached background
    (about 1 ms); the full redraw (about 50 ms) happens only when an axis limit doubles, and
    updates are throttled to one per ``PLOT_INTERVAL_S``.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.5, 2.0))
        self.figure.subplots_adjust(left=0.12, right=0.97, bottom=0.14, top=0.95)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(140)  # docked among many rows it was squeezed to a line
        self.ax = self.figure.add_subplot(111)
        (self.loss_line,) = self.ax.plot([], [], color="tab:blue", lw=1, animated=True)
        (self.dice_line,) = self.ax.plot([], [], "o", color="tab:orange", ms=3, animated=True)
        self._background = None
        self.canvas.mpl_connect("draw_event", self._on_draw)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.canvas)
        lay.addWidget(QLabel("blue: training loss · orange: held-out Dice"))
        self.clear()

    def clear(self) -> None:
        self.loss: list[tuple[float, float]] = []
        self.dice: list[tuple[float, float]] = []
        self._last_draw = 0.0
        self.n_full_draws = 0
        self.ax.set_xlim(0, 16)
        self.ax.set_ylim(0, 1.0)
        self.full_redraw()

    def add(self, stage: str, info: dict) -> None:
        """A train step adds a loss point, a validation a Dice point."""
        step = float(info.get("step") or 0)
        if stage == "train" and info.get("loss") is not None:
            self.loss.append((step, float(info["loss"])))
        elif stage == "validate" and info.get("val_dice") is not None:
            self.dice.append((step, float(info["val_dice"])))
        else:
            return
        if time.perf_counter() - self._last_draw >= PLOT_INTERVAL_S:
            self.redraw()

    def _on_draw(self, _event: Any = None) -> None:
        self._background = self.canvas.copy_from_bbox(self.ax.bbox)
        self._draw_lines()

    def _draw_lines(self) -> None:
        self.ax.draw_artist(self.loss_line)
        self.ax.draw_artist(self.dice_line)

    def full_redraw(self) -> None:
        self.n_full_draws += 1
        self.canvas.draw_idle()

    def redraw(self) -> None:
        for line, pts in ((self.loss_line, self.loss), (self.dice_line, self.dice)):
            line.set_data([p[0] for p in pts], [p[1] for p in pts])
        self._last_draw = time.perf_counter()
        x_max = max([p[0] for p in self.loss + self.dice], default=0.0)
        y_max = max([p[1] for p in self.loss], default=0.0)
        x0, x1 = self.ax.get_xlim()
        y0, y1 = self.ax.get_ylim()
        if x_max > x1 or y_max > y1:
            while x1 < x_max:
                x1 *= 2
            self.ax.set_xlim(0, x1)
            self.ax.set_ylim(0, max(y1, 1.2 * y_max))
            self.full_redraw()
        elif self._background is not None:
            self.canvas.restore_region(self._background)
            self._draw_lines()
            self.canvas.blit(self.ax.bbox)
        else:
            self.full_redraw()
