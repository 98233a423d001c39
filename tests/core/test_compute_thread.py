"""The compute thread: one long-lived thread for torch work, an overflow thread while busy."""

from __future__ import annotations

import threading
import time

import pytest

from napari_attnseg._compute import ComputeThread


def test_calls_run_on_one_persistent_thread_and_return_results():
    ct = ComputeThread("t")
    idents = {ct.call(threading.get_ident) for _ in range(5)}
    assert len(idents) == 1 and threading.get_ident() not in idents
    assert ct.ident in idents
    assert ct.call(lambda a, b=0: a + b, 2, b=3) == 5
    # a call made from the compute thread itself runs directly (no deadlock)
    assert ct.call(lambda: ct.call(threading.get_ident)) == ct.ident


def test_errors_reach_the_caller():
    ct = ComputeThread("t")
    with pytest.raises(ZeroDivisionError):
        ct.call(lambda: 1 / 0)
    assert ct.call(lambda: "still usable") == "still usable"


def test_busy_thread_overflows_to_a_short_lived_thread():
    ct = ComputeThread("t")
    release = threading.Event()
    long_job = ct.submit(lambda: (release.wait(5), threading.get_ident())[1])
    time.sleep(0.05)
    overflow = {}

    def quick():
        overflow["thread"] = threading.current_thread()
        return threading.get_ident()

    ident = ct.call(quick)  # does not wait for the long job
    assert not long_job.done() and ct.overflow_runs == 1
    release.set()
    primary = long_job.result(timeout=5)
    assert ident != primary and primary == ct.ident
    overflow["thread"].join(timeout=5)
    assert not overflow["thread"].is_alive()  # its OpenMP team goes with it
    assert ct.call(threading.get_ident) == primary  # back on the persistent thread


def test_background_work_never_pushes_work_to_another_thread():
    """A warm-up (background) running when a job arrives: the job queues behind it on the
    compute thread instead of starting a second OpenMP team on an overflow thread."""
    ct = ComputeThread("t")
    release = threading.Event()
    warm = ct.submit_background(lambda: (release.wait(5), threading.get_ident())[1])
    time.sleep(0.05)
    job = ct.submit(threading.get_ident)
    time.sleep(0.05)
    assert not job.done()  # waiting behind the warm-up
    release.set()
    assert job.result(timeout=5) == warm.result(timeout=5) == ct.ident
    assert ct.overflow_runs == 0
    # while real work runs, background work waits its turn on the compute thread too
    release.clear()
    long_job = ct.submit(lambda: (release.wait(5), threading.get_ident())[1])
    time.sleep(0.05)
    later = ct.submit_background(threading.get_ident)
    release.set()
    assert later.result(timeout=5) == long_job.result(timeout=5) == ct.ident
    assert ct.overflow_runs == 0
