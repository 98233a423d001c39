"""JobRunner: progress, result, cancel within one unit, errors reported (not raised)."""

import time

import pytest

from napari_attnseg._progress import Progress
from napari_attnseg.errors import AttnsegError
from napari_attnseg.widgets._worker import CANCELLED, JobRunner, ProgressPanel


def _job(n, delay=0.0, fail_at=None, seen=None):
    for i in range(n):
        if fail_at == i:
            raise AttnsegError("bad batch 3 in case.nii.gz")
        time.sleep(delay)
        if seen is not None:
            seen.append(i)
        yield Progress(i + 1, n, "work")
    return "result"


def test_run_sync_reports_progress_and_result(qtbot):
    panel = ProgressPanel()
    qtbot.addWidget(panel)
    got = []
    runner = JobRunner(lambda: _job(4), panel, on_result=got.append)
    assert runner.run_sync() == "result"
    assert got == ["result"]
    assert panel.bar.value() == 100


def test_thread_run_and_cancel_stops_within_one_unit(qtbot):
    panel = ProgressPanel()
    qtbot.addWidget(panel)
    seen, results = [], []
    runner = JobRunner(lambda: _job(200, delay=0.02, seen=seen), panel, on_result=results.append)
    worker = runner.start()
    qtbot.waitUntil(lambda: len(seen) >= 3, timeout=5000)
    with qtbot.waitSignal(worker.finished, timeout=5000):
        panel.cancel_button.click()
    n_at_cancel = len(seen)
    assert runner.cancelled
    assert results == []  # on_result never called: no partial layer
    assert n_at_cancel < 200
    time.sleep(0.1)
    assert len(seen) == n_at_cancel  # nothing ran after the worker finished


def test_errors_are_reported_not_raised(qtbot, monkeypatch):
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", lambda msg: shown.append(msg))
    errors = []
    runner = JobRunner(lambda: _job(5, fail_at=3), None, on_error=errors.append, context="Segment")
    runner.start()
    # (waiting for the `finished` signal here would race a job this short: it may be emitted
    # before the wait connects to it)
    qtbot.waitUntil(lambda: bool(errors) and not runner.running, timeout=5000)
    assert len(errors) == 1 and isinstance(errors[0], AttnsegError)
    assert shown and "case.nii.gz" in shown[0] and shown[0].startswith("Segment:")


def test_cancelled_sentinel_from_sync_cancel(qtbot):
    runner = JobRunner(lambda: _job(10))
    runner.cancel()
    assert runner.run_sync() is CANCELLED
    assert runner.cancelled


@pytest.mark.parametrize("same_shape", [True, False])
def test_upsert_layer_updates_in_place(make_napari_viewer, same_shape):
    import numpy as np

    from napari_attnseg.widgets._worker import upsert_layer

    viewer = make_napari_viewer()
    a = np.zeros((4, 8, 8), np.uint8)
    upsert_layer(viewer, a, {"name": "x [attnseg]", "scale": (2, 1, 1)}, "labels")
    b = np.ones((4, 8, 8) if same_shape else (4, 8, 9), np.uint8)
    layer = upsert_layer(viewer, b, {"name": "x [attnseg]", "scale": (2, 1, 1)}, "labels")
    assert len(viewer.layers) == 1
    assert np.array_equal(layer.data, b)
    assert tuple(layer.scale) == (2, 1, 1)


def test_upsert_layer_skips_unchanged_geometry(make_napari_viewer):
    import numpy as np

    from napari_attnseg.widgets._worker import upsert_layer

    viewer = make_napari_viewer()
    kw = {"name": "x [attnseg]", "scale": (2.0, 1.0, 1.0), "translate": (1.0, 0.0, 0.0),
          "affine": np.eye(4)}
    layer = upsert_layer(viewer, np.zeros((4, 8, 8), np.uint8), kw, "labels")
    seen = []
    for key in ("scale", "translate", "affine"):
        getattr(layer.events, key).connect(lambda e, k=key: seen.append(k))
    upsert_layer(viewer, np.ones((4, 8, 8), np.uint8), kw, "labels")
    assert seen == []  # nothing re-set when unchanged
    upsert_layer(viewer, np.ones((4, 8, 8), np.uint8), dict(kw, scale=(3.0, 1.0, 1.0)), "labels")
    assert seen == ["scale"] and tuple(layer.scale) == (3.0, 1.0, 1.0)


def test_progress_status_has_room_for_two_lines(qtbot):
    from napari_attnseg.widgets._worker import ProgressPanel

    panel = ProgressPanel()
    qtbot.addWidget(panel)
    assert panel.status.wordWrap()
    assert panel.status.minimumHeight() >= 2 * panel.status.fontMetrics().lineSpacing()


def test_jobs_run_on_the_compute_thread(qtbot):
    """The job's own code (torch work) runs on the process's compute thread: not on the GUI
    thread, not on napari's worker thread."""
    import threading

    from napari_attnseg._compute import compute_thread

    where = []

    def job():
        where.append(threading.get_ident())
        yield Progress(1, 1, "work")
        return "ok"

    assert JobRunner(job).run_sync() == "ok"
    runner = JobRunner(job)
    runner.start()
    qtbot.waitUntil(lambda: runner.result == "ok" and not runner.running, timeout=5000)
    assert where == [compute_thread().ident] * 2
    assert threading.get_ident() not in where


def test_run_sync_handles_each_report_before_the_job_goes_on(qtbot):
    order = []

    def job():
        for i in range(3):
            order.append(("job", i))
            yield Progress(i + 1, 3, "work")
        return "done"

    runner = JobRunner(job, on_progress=lambda p: order.append(("shown", p.done - 1)))
    assert runner.run_sync() == "done"
    assert order == [("job", 0), ("shown", 0), ("job", 1), ("shown", 1), ("job", 2), ("shown", 2)]


def test_threaded_progress_is_throttled_and_ends_on_the_last_report(qtbot):
    """A job reporting 200 times in 0.2 s repaints the progress bar a few times a second, not
    200 times, and the bar ends on the job's last report."""
    panel = ProgressPanel()
    qtbot.addWidget(panel)
    shown = []
    runner = JobRunner(lambda: _job(200, delay=0.001), panel, on_progress=shown.append)
    runner.start()
    qtbot.waitUntil(lambda: runner.result == "result" and not runner.running, timeout=10000)
    assert 2 <= len(shown) < 40
    assert shown[-1].done == 200 and panel.bar.value() == 100


def test_reports_with_data_are_never_dropped(qtbot):
    """Reports carrying ``info`` (a training loss for the live plot) all reach the widget."""

    def job():
        for i in range(50):
            yield Progress(i + 1, 50, "train", info={"step": i + 1, "loss": 1.0 / (i + 1)})
        return "ok"

    shown = []
    runner = JobRunner(job, on_progress=shown.append)
    runner.start()
    qtbot.waitUntil(lambda: runner.result == "ok" and not runner.running, timeout=5000)
    assert [p.info["step"] for p in shown] == list(range(1, 51))


def test_a_finished_run_shows_a_full_bar_even_after_a_step_without_a_fraction(qtbot):
    """A whole-volume run ends with "post-processing" (no fraction): the bar said 0 % after a
    successful run; done is 100 %. A cancelled run does not claim it."""
    def job():
        yield Progress(3, 3, "windows")
        yield Progress(0, 0, "post-processing")
        return "labels"

    panel = ProgressPanel()
    qtbot.addWidget(panel)
    assert JobRunner(job, panel).run_sync() == "labels"
    assert panel.bar.value() == 100
    runner = JobRunner(lambda: _job(200, delay=0.02), panel)
    worker = runner.start()
    qtbot.waitUntil(lambda: 0 < panel.bar.value() < 100, timeout=5000)
    with qtbot.waitSignal(worker.finished, timeout=5000):
        panel.cancel_button.click()
    assert runner.cancelled and panel.bar.value() < 100
