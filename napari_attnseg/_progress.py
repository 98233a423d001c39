"""The progress protocol shared by every long job.

Long work is written as a *generator* that yields :class:`Progress` records and ``return``s its
result. The GUI runs it in a napari thread worker (progress bar, Cancel closes the generator);
scripts and tests drain it with :func:`drain`. Closing the generator (``gen.close()``) is the
cancel signal: jobs must stop at the next ``yield`` and leave nothing half-written.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """One progress report: ``done`` of ``total`` units of ``stage``; ``info`` carries extras
    (e.g. a training loss) that a GUI may plot."""

    done: int
    total: int
    stage: str = ""
    message: str = ""
    info: dict[str, Any] | None = None

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, self.done / self.total)


Job = Generator[Progress, None, T]


def drain(job: Job[T], callback: Callable[[Progress], Any] | None = None) -> T:
    """Run a progress generator to its end and return its result.

    ``callback`` (if given) sees every :class:`Progress`; if it returns ``False`` the job is
    closed (cancelled) and :class:`Cancelled` is raised.
    """
    try:
        while True:
            p = next(job)
            if callback is not None and callback(p) is False:
                job.close()
                raise Cancelled(p.stage or "job")
    except StopIteration as stop:
        return stop.value


class Cancelled(Exception):
    """Raised by :func:`drain` when its callback asked to stop."""
