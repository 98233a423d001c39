"""Run a core progress generator off the GUI thread, with a progress bar and a Cancel button.

Usage in a widget (GUI thread)::

    self.progress = ProgressPanel()            # add to the widget's layout
    inputs = snapshot()                        # read layers/widgets on the GUI thread
    self.runner = JobRunner(lambda: core_job(inputs), self.progress,
                            on_result=self._show, on_error=None, on_progress=None)
    self.runner.start()

The job is a generator yielding :class:`~napari_attnseg._progress.Progress` and returning its
result. Cancel sets a flag checked between yields, then closes the generator, so cancelled work
stops within one unit (one batch, one slice) and ``on_result`` is never called: no partial
layer appears. Errors are shown as a napari notification (the message, never a traceback in the
user's face) and passed to ``on_error``. Workers never touch layers or widgets: ``on_result`` and
``on_progress`` run on the GUI thread (Qt signals).
"""

from __future__ import annotations

import functools
import importlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QHBoxLayout, QLabel, QProgressBar, QPushButton, QSizePolicy, QVBoxLayout, QWidget,
)

from .._progress import Progress
from ..errors import AttnsegError

logger = logging.getLogger(__name__)

#: Returned by the worker when the job was cancelled (never passed to ``on_result``).
CANCELLED = object()
#: Progress updates within one stage are shown at most this often (seconds). Four a second look
#: live; each repaints widgets on the GUI thread (and the display server), which on 2 cores
#: takes time from the job (whole volume in the viewer: ~2.7 s at 10 Hz, ~2.1 s at 1 Hz).
PROGRESS_INTERVAL_S = 0.25


def notify_error(exc: BaseException, context: str = "") -> None:
    """Show an error to the user as a napari notification (message only; traceback in the log)."""
    from napari.utils.notifications import show_error

    prefix = f"{context}: " if context else ""
    if isinstance(exc, (AttnsegError, ValueError, FileNotFoundError, MemoryError)):
        text = f"{prefix}{exc}"
    else:
        text = f"{prefix}unexpected {type(exc).__name__}: {exc}"
    logger.error("%s", text, exc_info=(type(exc), exc, exc.__traceback__))
    show_error(text)


#: Modules napari and vispy import on first use when the first Labels / Image layer is added:
#: pandas (layer features), skimage.color (the labels colormap), scipy.linalg (transforms) and
#: the vispy layer/overlay visuals. Importing them on the GUI thread stalls it ~0.35 s once.
_LAYER_MODULES = (
    "pandas", "skimage.color", "scipy.linalg", "napari._vispy.layers.labels",
    "napari._vispy.layers.image", "napari._vispy.overlays.labels_polygon",
    "vispy.visuals.line.dash_atlas",
)


@functools.cache
def warm_layer_machinery() -> None:
    """Do, once per process and off the GUI thread, what napari otherwise does on the GUI
    thread when a worker's first result layer is added: import the modules above and fill
    vispy's dash-pattern cache (every Labels layer's polygon overlay builds a ``DashAtlas``;
    its 13 patterns cost ~0.1 s the first time and are cached by vispy). Pure Python/numpy, no
    OpenGL; safe in a worker thread. Failures are logged and ignored: this only saves time."""
    t0 = time.perf_counter()
    try:
        for name in _LAYER_MODULES:
            importlib.import_module(name)
        from vispy.visuals.line.dash_atlas import DashAtlas

        DashAtlas()
    except Exception as exc:  # an optional speed-up; napari does the same work later anyway
        logger.debug("warming napari's layer machinery failed: %s", exc)
    logger.debug("napari layer machinery warmed in %.0f ms", (time.perf_counter() - t0) * 1e3)


class ProgressPanel(QWidget):
    """A progress bar, a status line and a Cancel button; reused by every widget."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setRange(0, 100)
        self.bar.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        # room for two lines: a wrapped message (device, threads...) is never cut off
        self.status.setMinimumHeight(2 * self.status.fontMetrics().lineSpacing() + 4)
        self.status.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.MinimumExpanding)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        row = QHBoxLayout()
        row.addWidget(self.bar, 1)
        row.addWidget(self.cancel_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row)
        lay.addWidget(self.status)

    def set_running(self, running: bool) -> None:
        self.cancel_button.setEnabled(running)
        if running:
            self.bar.setValue(0)

    def show_progress(self, p: Progress) -> None:
        self.bar.setValue(int(round(100 * p.fraction)))
        text = p.message or (f"{p.stage} {p.done}/{p.total}" if p.total else p.stage)
        self.status.setText(text)


class JobRunner:
    """Runs one job at a time in a napari thread worker; see the module docstring."""

    def __init__(
        self,
        job_factory: Callable[[], Generator[Progress, None, Any]],
        panel: ProgressPanel | None = None,
        *,
        on_result: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        on_finished: Callable[[], None] | None = None,
        context: str = "",
    ):
        self._factory = job_factory
        self.panel = panel
        self.on_result = on_result
        self.on_error = on_error
        self.on_progress = on_progress
        self.on_finished = on_finished
        self.context = context
        self._cancel = threading.Event()
        self.worker = None
        self.cancelled = False
        self.error: BaseException | None = None
        self.result: Any = None
        self.elapsed_s: float = 0.0
        self._t0 = 0.0
        self.synchronous = False  #: True while :meth:`run_sync` runs (the caller waits for it)

    # -- the body, run in the worker thread
    def _drive(self, events: queue.SimpleQueue, ack: threading.Semaphore | None) -> None:
        """Run the job itself (on the compute thread, see ``napari_attnseg._compute``) and
        pass its progress, result or error to :meth:`_body` through ``events``; with ``ack``,
        wait after each progress report until it has been handled (lockstep)."""
        job = self._factory()
        try:
            while True:
                if self._cancel.is_set():
                    events.put(("done", CANCELLED))
                    return
                try:
                    p = next(job)
                except StopIteration as stop:
                    warm_layer_machinery()  # once: keeps napari's first-layer imports off the GUI
                    events.put(("done", stop.value))
                    return
                events.put(("progress", p))
                if ack is not None:
                    ack.acquire()
        except BaseException as exc:  # re-raised by _body in the caller's thread
            events.put(("error", exc))
        finally:
            job.close()

    def _body(self, lockstep: bool = False) -> Generator[Progress, None, Any]:
        """Relay the job's progress: the job runs on the process's compute thread (one OpenMP
        team for all torch work: much faster on few cores), this generator in the napari
        worker (or the caller's thread for :meth:`run_sync`).

        Threaded, the job never waits for the display and updates within one stage are shown
        at most every :data:`PROGRESS_INTERVAL_S` (each repaints widgets on the GUI thread,
        which competes with the job for the cores); reports carrying ``info`` (data for a live
        plot, e.g. a training loss) are all passed on. With ``lockstep`` every report is passed
        on and the job waits until it has been handled, as if it ran in the caller's thread.
        """
        from .._compute import compute_thread

        events: queue.SimpleQueue = queue.SimpleQueue()
        ack = threading.Semaphore(0) if lockstep else None
        compute_thread().submit(self._drive, events, ack)
        kind, pending, last_shown, last_stage = "", None, 0.0, None
        try:
            while True:
                try:
                    kind, value = events.get(timeout=PROGRESS_INTERVAL_S if pending else None)
                except queue.Empty:  # the job is quiet: show what was held back
                    kind, value, pending = "progress", pending, None
                    last_shown = time.perf_counter()
                    yield value
                    continue
                if kind == "progress":
                    now = time.perf_counter()
                    if not lockstep and not value.info and value.stage == last_stage and \
                            now - last_shown < PROGRESS_INTERVAL_S:
                        pending = value
                        continue
                    pending, last_shown, last_stage = None, now, value.stage
                    try:
                        yield value
                    finally:
                        if ack is not None:
                            ack.release()
                elif kind == "done":
                    if pending is not None and value is not CANCELLED:
                        yield pending
                    return value
                else:
                    raise value
        finally:
            if kind not in ("done", "error"):  # closed early: stop the job at its next step
                self._cancel.set()

    def run_sync(self) -> Any:
        """Run the same body synchronously (tests, scripts): every progress report is handled
        before the job goes on; returns the result or CANCELLED."""
        gen = self._body(lockstep=True)
        self.synchronous = True
        try:
            while True:
                p = next(gen)
                self._progress(p)
        except StopIteration as stop:
            self._returned(stop.value)
            return stop.value
        finally:
            self.synchronous = False

    @property
    def running(self) -> bool:
        return self.worker is not None and self.worker.is_running

    def start(self) -> Any:
        """Start in a napari thread worker; returns the worker."""
        from napari.qt.threading import GeneratorWorker

        if self.running:
            raise RuntimeError("a job is already running in this widget")
        self._cancel.clear()
        self.cancelled = False
        self.error = None
        self._t0 = time.perf_counter()
        worker = GeneratorWorker(self._body)
        worker.yielded.connect(self._progress)
        worker.returned.connect(self._returned)
        worker.errored.connect(self._errored)
        worker.finished.connect(self._finished)
        if self.panel is not None:
            self.panel.set_running(True)
            self.panel.cancel_button.clicked.connect(self.cancel)
        self.worker = worker
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the job to stop at its next progress report."""
        self._cancel.set()
        if self.panel is not None:
            self.panel.status.setText("Cancelling...")

    # -- signal handlers (GUI thread)
    def _progress(self, p: Progress) -> None:
        if self.panel is not None:
            self.panel.show_progress(p)
        if self.on_progress is not None:
            self.on_progress(p)

    def _returned(self, value: Any) -> None:
        self.elapsed_s = time.perf_counter() - self._t0 if self._t0 else 0.0
        if value is CANCELLED:
            self.cancelled = True
            if self.panel is not None:
                self.panel.status.setText("Cancelled.")
            return
        self.result = value
        if self.on_result is not None:
            try:
                self.on_result(value)
            except Exception as exc:  # a bug in showing results must still reach the user
                self._errored(exc)

    def _errored(self, exc: BaseException) -> None:
        self.error = exc
        if self.panel is not None:
            self.panel.status.setText(f"Failed: {exc}")
        notify_error(exc, self.context)
        if self.on_error is not None:
            self.on_error(exc)

    def _finished(self) -> None:
        if self.panel is not None:
            self.panel.set_running(False)
            try:
                self.panel.cancel_button.clicked.disconnect(self.cancel)
            except (TypeError, RuntimeError):
                pass
        if self.on_finished is not None:
            self.on_finished()


def _same_geometry(layer: Any, key: str, value: Any) -> bool:
    """Whether ``layer.<key>`` (scale / translate / affine) already equals ``value``."""
    try:
        current = layer.affine.affine_matrix if key == "affine" else getattr(layer, key)
        if key == "affine" and hasattr(value, "affine_matrix"):
            value = value.affine_matrix
        cur = np.asarray(current, dtype=float)
        new = np.asarray(value, dtype=float)
    except (TypeError, ValueError, AttributeError):
        return False
    return cur.shape == new.shape and bool(np.allclose(cur, new, rtol=0.0, atol=1e-12))


def upsert_layer(viewer: Any, data: Any, kwargs: dict, layer_type: str) -> Any:
    """Update the layer named ``kwargs['name']`` in place when it exists with the same type and
    shape (results re-run in place), else add a new one. Returns the layer."""
    name = kwargs["name"]
    existing = viewer.layers[name] if name in viewer.layers else None
    if existing is not None and type(existing).__name__.lower() == layer_type.lower() and \
            tuple(existing.data.shape) == tuple(data.shape):
        existing.data = data
        for key in ("scale", "translate", "affine"):
            if key in kwargs and not _same_geometry(existing, key, kwargs[key]):
                setattr(existing, key, kwargs[key])  # ~50 ms each in napari: only when changed
        for key, value in kwargs.get("metadata", {}).items():
            old = existing.metadata.get(key)
            if isinstance(old, dict) and isinstance(value, dict):
                merged = dict(old)  # keep what others added (e.g. reviewed slices)
                merged.update(value)
                existing.metadata[key] = merged
            else:
                existing.metadata[key] = value
        return existing
    if existing is not None:
        viewer.layers.remove(existing)
    add = getattr(viewer, f"add_{layer_type.lower()}")
    return add(data, **kwargs)
