"""Start the CRF's worker processes without re-running the user's ``__main__``.

With the "spawn" and "forkserver" start methods, :mod:`multiprocessing` sends every new process
the path (or module name) of ``__main__`` and the child runs it again as ``__mp_main__`` before
it starts working, so that functions defined in the script can be unpickled. A napari script
without an ``if __name__ == "__main__":`` guard therefore opened a second napari (and started
its own pool, which fails) in each CRF worker. The CRF workers only run module-level functions
of :mod:`napari_attnseg.crf.dense_crf`, so they never need ``__main__``: processes started
through :func:`no_main_context` are told nothing about it (the rest of the preparation data,
``sys.path``, the working directory, ..., is kept).

How: :func:`multiprocessing.spawn.get_preparation_data` builds what a new process is sent; it
is wrapped once (see :func:`_install`) to drop the two ``init_main_*`` keys while, and only
while, *this thread* starts one of our processes. Every other process (the user's own pools)
gets the unchanged data. Python 3.4-3.13 start "spawn" and "forkserver" processes through it.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from multiprocessing import context as _mpc
from multiprocessing import spawn
from typing import Any

#: What ``multiprocessing.spawn.prepare`` would use to run ``__main__`` again in the child.
MAIN_KEYS = ("init_main_from_path", "init_main_from_name")

_local = threading.local()
_install_lock = threading.Lock()


def _install() -> None:
    """Wrap ``spawn.get_preparation_data`` once (idempotent; thread-safe)."""
    with _install_lock:
        if getattr(spawn.get_preparation_data, "_attnseg_no_main", False):
            return
        original = spawn.get_preparation_data

        def get_preparation_data(name: str) -> dict:
            data = original(name)
            if getattr(_local, "no_main", False):
                for key in MAIN_KEYS:
                    data.pop(key, None)
            return data

        get_preparation_data._attnseg_no_main = True  # type: ignore[attr-defined]
        get_preparation_data.__wrapped__ = original  # type: ignore[attr-defined]
        spawn.get_preparation_data = get_preparation_data


def _no_main_popen(base: Any) -> Any:
    """``base._Popen`` (a Process class's start hook) with ``__main__`` left out."""

    def _Popen(process_obj: Any) -> Any:
        _local.no_main = True
        try:
            return base._Popen(process_obj)
        finally:
            _local.no_main = False

    return staticmethod(_Popen)


# Module level: the child unpickles the process object by its class's qualified name.
class _SpawnProcess(_mpc.SpawnProcess):  # type: ignore[misc, valid-type]
    _Popen = _no_main_popen(_mpc.SpawnProcess)


class _SpawnContext(_mpc.SpawnContext):
    Process = _SpawnProcess


_CONTEXTS: dict[str, type] = {"spawn": _SpawnContext}
if hasattr(_mpc, "ForkServerProcess"):  # POSIX only
    class _ForkServerProcess(_mpc.ForkServerProcess):  # type: ignore[misc, valid-type]
        _Popen = _no_main_popen(_mpc.ForkServerProcess)

    class _ForkServerContext(_mpc.ForkServerContext):
        Process = _ForkServerProcess

    _CONTEXTS["forkserver"] = _ForkServerContext


def no_main_context(method: str) -> Any:
    """A multiprocessing context for ``method`` whose processes never import ``__main__``
    ("fork" needs nothing: the child is a copy and runs no script)."""
    if method not in _CONTEXTS:
        return mp.get_context(method)
    _install()
    return _CONTEXTS[method]()
