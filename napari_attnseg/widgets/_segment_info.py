"""The Segment widget's info line: at once whether the model fits the image ("model is CT,
image looks MR", models skipped from the registry), then the plan (window count, device,
memory) from the compute thread a moment later (it loads the model and imports torch).

Changes are debounced (:data:`INFO_DELAY_MS`); one plan runs at a time (the newest inputs are
planned again when it ends); the last plan is kept with the inputs it depends on
(:func:`~._segment_model.plan_key`), so a run that only writes result layers shows it at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtCore import QTimer

from ._segment_jobs import alive, background
from ._segment_model import model_note, plan_info, plan_key

INFO_DELAY_MS = 30  #: the info line's plan waits this long for more changes (debounce)


class InfoLine:
    """Fills ``widget.info_label`` for a :class:`~.segment.SegmentWidget` (it reads the
    widget's image, model folder, options and model cache; a runnable plan warms the model up
    through ``widget._warm_up``)."""

    def __init__(self, widget: Any):
        self.widget = widget
        self.label = widget.info_label
        self.worker: Any = None
        self.generation = 0
        self.planned: tuple[tuple, str] | None = None  #: (plan_key, text) of the last plan
        self.note = ""  #: the warning about the model and the image
        self.timer = QTimer(widget)
        self.timer.setSingleShot(True)
        self.timer.setInterval(INFO_DELAY_MS)
        self.timer.timeout.connect(self._plan)

    @property
    def pending(self) -> bool:
        """True while the line waits for its plan."""
        return self.timer.isActive() or self.worker is not None

    def update(self) -> None:
        """Say at once whether the model fits; plan (debounced) unless the last plan still
        holds."""
        w = self.widget
        self.generation += 1
        folder = w.model_folder()
        broken = w.picker.problem_text()  # models skipped (e.g. a corrupt active.json)
        if folder is None:
            self.timer.stop()
            self.label.setText(broken + w.picker.no_model_text())
            return
        if not w.image_combo.currentText():
            self.timer.stop()
            self.label.setText(broken + "open an image to segment")
            return
        note = model_note(folder, w.image_facts())
        self.note = (f"Warning: {note}. " if note else "") + broken
        if self._show_planned(folder):  # nothing the plan depends on changed (e.g. a run ended)
            self.timer.stop()
            return
        self.label.setText(self.note + "planning...")
        self.timer.start()

    def _plan_key(self, folder: Path | None) -> tuple | None:
        w = self.widget
        name = w.image_combo.currentText()
        if folder is None or name not in w.viewer.layers:
            return None
        return plan_key(w.viewer.layers[name], folder, w.image_facts(), w.options())

    def _show_planned(self, folder: Path | None) -> bool:
        """Show the last plan when it is still the plan of the current inputs."""
        key = self._plan_key(folder)
        if key is None or self.planned is None or self.planned[0] != key:
            return False
        self.label.setText(self.note + self.planned[1])
        return True

    def _plan(self) -> None:
        if self.worker is not None:  # one at a time: the newest asks again when done
            return
        w = self.widget
        folder, generation = w.model_folder(), self.generation
        if self._show_planned(folder):
            return
        try:
            volume, options = w.image_volume(), w.options()
            key = self._plan_key(folder)
        except Exception as exc:  # shown in the info line; the buttons report it properly
            self.label.setText(f"cannot run: {exc}")
            return
        if folder is None:
            return
        models = w.models

        def job() -> tuple:
            try:
                return plan_info(models.load(folder), volume, options)
            except Exception as exc:  # the message is the info line
                return f"cannot run: {exc}", False

        def done(result: Any) -> None:
            self.worker = None
            if not alive(self.label):  # the widget was closed meanwhile
                return
            text, runnable = result if result is not None else ("cannot run", False)
            if result is not None:
                self.planned = (key, text)
            if generation != self.generation:
                self.timer.start()  # something changed meanwhile: plan again
                return
            self.label.setText(self.note + text)
            if runnable:
                w._warm_up(folder, options)

        self.worker = background(job, done)
        self.worker.start()
