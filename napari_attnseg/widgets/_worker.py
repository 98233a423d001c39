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
layer appears. Whatever the job raises (``BaseException`` included) comes back as a value, never
as an exception escaping into the thread worker (superqt swallows a ``RuntimeError`` there and
the run would never end), so every threaded run ends: panel reset, ``running`` False,
``on_finished`` called. Errors are shown once as a napari notification (the message, never a
traceback in the user's face; the traceback goes to the log) and passed to ``on_error``. Workers
never touch layers or widgets: ``on_result`` and ``on_progress`` run on the GUI thread.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

from qtpy.QtWidgets import (
    QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QProgressBar, QPushButton, QSizePolicy,
    QTableWidget, QVBoxLayout, QWidget,
)

from .._progress import Progress
from ..errors import AttnsegError
from ._results import upsert_layer, warm_layer_machinery  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)

#: Returned by the worker when the job was cancelled (never passed to ``on_result``).
CANCELLED = object()
#: Progress updates within one stage are shown at most this often (seconds). Four a second look
#: live; each repaints widgets on the GUI thread (and the display server), which on 2 cores
#: takes time from the job (whole volume in the viewer: ~2.7 s at 10 Hz, ~2.1 s at 1 Hz).
PROGRESS_INTERVAL_S = 0.25


def _describe(exc: BaseException) -> str:
    """One line for the user: the message (the type too for unexpected errors); out of memory
    (``MemoryError``, torch's ``OutOfMemoryError``) says so and what to try."""
    text = str(exc).strip()
    if isinstance(exc, MemoryError) or \
            any(c.__name__ == "OutOfMemoryError" for c in type(exc).__mro__):
        return (f"out of memory{': ' + text if text else ''}. Try smaller settings (window, "
                "batch, patch, workers) or the CPU device")
    if isinstance(exc, (AttnsegError, ValueError, FileNotFoundError)) and text:
        return text
    return f"unexpected {type(exc).__name__}{': ' + text if text else ''}"


def notify_error(exc: BaseException, context: str = "") -> None:
    """Show an error to the user as a napari notification (message only; traceback in the log)."""
    from napari.utils.notifications import show_error

    text = f"{context}: {_describe(exc)}" if context else _describe(exc)
    logger.error("%s", text, exc_info=(type(exc), exc, exc.__traceback__))
    show_error(text)


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


class _Failed:
    """Returned (not raised) by the worker's generator when the job raised: superqt takes a
    ``RuntimeError`` escaping a generator for "worker deleted" and emits neither ``errored`` nor
    ``finished`` (issue 16). Not an Exception itself: superqt would treat it the same way."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException):
        self.exc = exc


#: How often a lockstep job waiting for its report to be handled checks for cancellation.
_ACK_POLL_S = 0.05


class JobRunner:
    """Runs one job at a time in a napari thread worker; see the module docstring. A
    ``KeyboardInterrupt`` raised by the job counts as a cancellation (with a notification)."""

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
        self._active = False  #: from start() until the finished signal has been handled
        self.cancelled = False
        self.error: BaseException | None = None
        self.result: Any = None
        self.elapsed_s: float = 0.0
        self._t0 = 0.0
        self.synchronous = False  #: True while :meth:`run_sync` runs (the caller waits for it)

    # -- the body, run in the worker thread
    def _drive(self, events: queue.SimpleQueue, ack: threading.Semaphore | None) -> None:
        """Run the job itself (on the compute thread, see ``napari_attnseg._compute``) and
        pass its progress, result or error to :meth:`_relay` through ``events``; with ``ack``,
        wait after each progress report until it has been handled (lockstep). Always ends
        with one "done" or "error" event, whatever the job (or its factory) raises."""
        job = None
        try:
            job = self._factory()
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
                # the relay may stop without handling the report: then go on to the cancel check
                while ack is not None and not ack.acquire(timeout=_ACK_POLL_S):
                    if self._cancel.is_set():
                        break
        except BaseException as exc:  # handed back as a value by _body, in the caller's thread
            events.put(("error", exc))
        finally:
            if job is not None and hasattr(job, "close"):
                try:
                    job.close()
                except BaseException:  # the run has ended already: only worth a log line
                    logger.warning("%s: closing the job raised", self.context, exc_info=True)

    def _relay(self, lockstep: bool) -> Generator[Progress, None, Any]:
        """Relay the job's progress: the job runs on the process's compute thread (one OpenMP
        team for all torch work: much faster on few cores), this generator in the napari
        worker (or the caller's thread for :meth:`run_sync`). Re-raises the job's exception.

        Threaded, the job never waits for the display and updates within one stage are shown
        at most every :data:`PROGRESS_INTERVAL_S` (each repaints widgets on the GUI thread,
        which competes with the job for the cores); reports carrying ``info`` (data for a live
        plot, e.g. a training loss) are all passed on. With ``lockstep`` every report is passed
        on and the job waits until it has been handled, as if it ran in the caller's thread.
        """
        from .._compute import compute_thread

        events: queue.SimpleQueue = queue.SimpleQueue()
        ack = threading.Semaphore(0) if lockstep else None
        kind, pending, last_shown, last_stage = "", None, 0.0, None
        try:
            future = compute_thread().submit(self._drive, events, ack)
            future.add_done_callback(functools.partial(_report_lost, events))
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

    def _body(self, lockstep: bool = False) -> Generator[Progress, None, Any]:
        """The worker's generator: :meth:`_relay`, whose exceptions (any ``BaseException``:
        ``RuntimeError``, ``MemoryError``, CUDA out of memory, ``KeyboardInterrupt``...) are
        *returned* as :class:`_Failed` instead of escaping into the thread worker."""
        try:
            return (yield from self._relay(lockstep))
        except GeneratorExit:  # closed by its consumer: a generator must not go on
            raise
        except BaseException as exc:
            return _Failed(exc)

    def run_sync(self) -> Any:
        """Run the same body synchronously (tests, scripts): every progress report is handled
        before the job goes on; returns the result (after ``on_result``) or CANCELLED.

        Unlike a threaded run, a failure is *raised* (the job's own exception, traceback
        intact) and not reported: scripts and tests fail loudly, and a widget that runs a job
        synchronously catches it and reports it with ``_errored``. The job has
        stopped when this returns or raises; ``on_finished`` is not called."""
        self.synchronous = True
        self.cancelled, self.error = False, None
        self._t0 = time.perf_counter()
        gen = self._body(lockstep=True)
        try:
            while True:
                try:
                    p = next(gen)
                except StopIteration as stop:
                    value = stop.value
                    break
                self._progress(p)
            if isinstance(value, _Failed):
                self.elapsed_s = time.perf_counter() - self._t0
                self.error = value.exc
                raise value.exc
            self._returned(value)
            return value
        finally:
            gen.close()  # a handler that raised: stops the job (see _relay)
            self.synchronous = False

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the run's end has been handled on the GUI thread."""
        return self._active or (self.worker is not None and self.worker.is_running)

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
        worker.errored.connect(self._errored)  # raised outside the generator (should not happen)
        worker.finished.connect(self._finished)
        if self.panel is not None:
            self.panel.set_running(True)
            self.panel.cancel_button.clicked.connect(self.cancel)
        self.worker = worker
        self._active = True
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
        if isinstance(value, _Failed):
            if isinstance(value.exc, KeyboardInterrupt):
                self._interrupted(value.exc)
            else:
                self._errored(value.exc)
            return
        if value is CANCELLED:
            self.cancelled = True
            if self.panel is not None:
                self.panel.status.setText("Cancelled.")
            return
        self.result = value
        if self.panel is not None:  # done (a last "post-processing" step reports no fraction)
            self.panel.bar.setValue(100)
        if self.on_result is not None:
            try:
                self.on_result(value)
            except Exception as exc:  # a bug in showing results must still reach the user
                self._errored(exc)

    def _interrupted(self, exc: BaseException) -> None:
        """The job raised KeyboardInterrupt: a cancellation not asked for with Cancel."""
        from napari.utils.notifications import show_info

        self.cancelled = True
        logger.warning("%s: interrupted", self.context, exc_info=(type(exc), exc,
                                                                   exc.__traceback__))
        if self.panel is not None:
            self.panel.status.setText("Cancelled (interrupted).")
        show_info(f"{self.context + ': ' if self.context else ''}interrupted; the run was "
                  "cancelled")

    def _errored(self, exc: BaseException) -> None:
        self.error = exc
        if self.panel is not None:
            self.panel.status.setText(f"Failed: {_describe(exc)}")
        notify_error(exc, self.context)
        if self.on_error is not None:
            try:
                self.on_error(exc)
            except Exception:  # the failure itself has been shown; this is a second bug
                logger.exception("%s: the on_error handler raised", self.context or "job")

    def _finished(self) -> None:
        self._active = False
        try:
            if self.panel is not None:
                self.panel.set_running(False)
                self.panel.cancel_button.clicked.disconnect(self.cancel)
        except (TypeError, RuntimeError):  # not connected, or the panel's widget was closed
            pass
        if self.on_finished is not None:
            self.on_finished()


def _report_lost(events: queue.SimpleQueue, future: Any) -> None:
    """Done-callback of the compute thread's future: ``_drive`` reports every outcome itself;
    this ends the relay if it never ran (compute thread shut down) or failed outside its own
    handler. An event put after the relay returned is never read."""
    if future.cancelled():
        events.put(("error", RuntimeError("the compute thread stopped before the job ran")))
    elif future.exception() is not None:
        events.put(("error", future.exception()))


def selection_table(columns: list[str] | tuple[str, ...]) -> QTableWidget:
    """A read-only table of rows to pick one from (whole rows selected, columns fitted)."""
    table = QTableWidget(0, len(columns))
    table.setHorizontalHeaderLabels(list(columns))
    table.setSelectionBehavior(QAbstractItemView.SelectRows)
    table.setSelectionMode(QAbstractItemView.SingleSelection)
    table.setEditTriggers(QAbstractItemView.NoEditTriggers)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
    return table
