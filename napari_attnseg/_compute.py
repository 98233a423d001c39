"""One thread for the numeric work of an interactive (GUI) process.

Why: PyTorch's CPU kernels parallelize with OpenMP, and OpenMP keeps one thread team per
*calling* thread. Once two threads of a process have run parallel torch operations (say the GUI
thread loaded a model, and a worker thread then runs it), GNU OpenMP manages more threads than
there are cores and stops spinning between parallel regions, so every operator pays a
sleep/wake-up: on the 2-core reference machine a 256x256 forward of the default model takes
~22 ms instead of ~14 ms (1.5x slower), and a whole-volume run in the viewer 1.5x longer than
the same run from a script (``benchmarks/bench_viewer.py`` measures it). Teams die with their
threads, so the cure is to run all such work on one long-lived thread:

* :func:`compute_thread` is that thread, created on first use and shared by every widget of the
  process; :meth:`ComputeThread.call` runs a function there and waits for its result, and
  :meth:`ComputeThread.submit` returns a :class:`concurrent.futures.Future`;
* when it is busy with real work (a fine-tune is training and the user asks for a preview), the
  new work runs at once on a fresh thread that ends with it (its OpenMP team ends too), so nothing
  queues behind a long job; *background* work (a warm-up, under a second) never causes that: work
  submitted meanwhile queues behind it on the compute thread, and background work submitted while
  the thread is busy simply waits its turn;
* a call made on the compute thread itself runs directly.

Scripts and the command line run everything on their main thread and need none of this. The
module imports neither torch nor Qt.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class ComputeThread:
    """A persistent worker thread with an overflow thread per call while it is busy."""

    def __init__(self, name: str = "attnseg-compute"):
        self.name = name
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._in_flight = 0  #: foreground calls queued or running on the compute thread
        self._ident: int | None = None
        self.overflow_runs = 0  #: calls that ran on an extra thread because this one was busy

    def _run_primary(self, fn: Callable[..., T], args: tuple, kwargs: dict,
                     counted: bool) -> T:
        self._ident = threading.get_ident()
        try:
            return fn(*args, **kwargs)
        finally:
            if counted:
                with self._lock:
                    self._in_flight -= 1

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        """Run ``fn(*args, **kwargs)`` on the compute thread (or, when it is busy with other
        foreground work, on a fresh thread that exits afterwards); returns its future."""
        return self._submit(fn, args, kwargs, background=False)

    def submit_background(self, fn: Callable[..., T], *args: Any,
                          **kwargs: Any) -> concurrent.futures.Future:
        """Queue short optional work (a warm-up) on the compute thread: it never makes other work
        overflow to another thread, and waits behind work already queued."""
        return self._submit(fn, args, kwargs, background=True)

    def _submit(self, fn: Callable[..., T], args: tuple, kwargs: dict,
                background: bool) -> concurrent.futures.Future:
        with self._lock:
            busy = self._in_flight > 0 and not background
            if not busy and not background:
                self._in_flight += 1
        if not busy:
            return self._executor.submit(self._run_primary, fn, args, kwargs, not background)
        self.overflow_runs += 1
        future: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # handed to the caller through the future
                future.set_exception(exc)
            else:
                future.set_result(result)

        threading.Thread(target=run, name=f"{self.name}-overflow", daemon=True).start()
        return future

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` run on the compute thread; blocks until it returns and
        re-raises what it raised. Runs directly when already on the compute thread."""
        if threading.get_ident() == self._ident:
            return fn(*args, **kwargs)
        return self.submit(fn, *args, **kwargs).result()

    @property
    def ident(self) -> int | None:
        """The compute thread's identifier (``None`` before its first call)."""
        return self._ident


_lock = threading.Lock()
_shared: ComputeThread | None = None


def compute_thread() -> ComputeThread:
    """The process's compute thread (created on first use)."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = ComputeThread()
        return _shared
