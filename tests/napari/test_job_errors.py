"""Issue 16: no exception can leave a widget running. For every widget (Segment, Refine,
Compare, Baselines, Fine-tune) a threaded job in a real viewer that raises RuntimeError,
MemoryError, a simulated CUDA out-of-memory or KeyboardInterrupt, or that is cancelled, ends
the run: one notification, the panel reset, nothing half-written, and a second run works.
Plus the JobRunner and compute-thread cases behind it (factory raising, ``on_result`` raising,
``run_sync`` raising, the Segment warm-up, a broken CRF process pool)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from napari_attnseg._progress import Progress
from napari_attnseg.widgets._worker import JobRunner, ProgressPanel

KINDS = ["runtime", "memory", "cuda_oom", "interrupt", "cancel"]
WAIT_MS = 30000  # a cap (a loaded 2-core machine is slow); the runs take well under 1 s


def _exception(kind: str) -> BaseException:
    return {
        "runtime": lambda: RuntimeError("shape mismatch inside the model (simulated)"),
        "memory": lambda: MemoryError("Unable to allocate 12.0 GiB (simulated)"),
        "cuda_oom": lambda: torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)"),
        "interrupt": lambda: KeyboardInterrupt(),
    }[kind]()


def _bad_job(kind: str, started: threading.Event):
    """A core job (any signature) that reports progress, then raises; for "cancel" it runs
    until the widget's Cancel stops it (between two reports)."""

    def job(*args, **kwargs):
        for i in range(3 if kind != "cancel" else 2000):
            yield Progress(i + 1, 2000, "work", f"step {i + 1}")
            started.set()
            if kind == "cancel":
                time.sleep(0.01)
        if kind == "cancel":
            raise AssertionError("the job was not cancelled")
        raise _exception(kind)

    return job


@pytest.fixture
def notes(monkeypatch):
    """The notifications shown (severity, text) through napari's show_error / show_info."""
    import napari.utils.notifications as n

    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(n, "show_error", lambda m: seen.append(("error", str(m))))
    monkeypatch.setattr(n, "show_info", lambda m: seen.append(("info", str(m))))
    return seen


def _layers(viewer) -> dict:
    return {ly.name: np.array(ly.data, copy=True) for ly in viewer.layers}


def _assert_same_layers(viewer, before: dict) -> None:
    now = _layers(viewer)
    assert list(now) == list(before)
    for name, data in before.items():
        np.testing.assert_array_equal(now[name], data, err_msg=name)


# ----------------------------------------------------------------------------- the widgets
def _segment(make_napari_viewer, qtbot, tmp_path):
    from napari_attnseg._napari.layers import volume_to_layer_kwargs
    from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
    from napari_attnseg.model.checkpoint import ModelSpec, save_model
    from napari_attnseg.volume import Volume
    from napari_attnseg.widgets.segment import SegmentWidget

    viewer = make_napari_viewer()
    vol = Volume(np.random.default_rng(0).normal(0, 300, (4, 32, 32)).astype(np.float32),
                 spacing=(2.5, 0.8, 0.7), modality="CT")
    viewer.add_image(vol.data, **volume_to_layer_kwargs(vol, name="scan"))
    w = SegmentWidget(viewer)
    qtbot.addWidget(w)
    torch.manual_seed(0)
    cfg = UNetConfig(spatial_dims=2, out_channels=2, channels=(4, 8, 16))
    spec = ModelSpec(arch=cfg, label_names={0: "bg", 1: "fg"}, modality="CT",
                     patch_size=(32, 32), name="tiny", version="1")
    w.set_model_folder(save_model(tmp_path / "tiny", AttentionUNet(cfg), spec))
    w.make_runner().run_sync()  # an earlier result: a failed re-run must leave it as it is
    qtbot.waitUntil(lambda: w._warm_worker is None, timeout=WAIT_MS)  # runs queue behind it
    return viewer, w, w.segment_volume


def _refine(make_napari_viewer, qtbot, tmp_path):
    pytest.importorskip("pydensecrf.densecrf")
    from napari_attnseg.widgets.refine import RefineWidget

    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    fg = np.clip(rng.random((4, 24, 24)), 0.01, 0.99).astype(np.float32)
    viewer.add_image((fg * 100).astype(np.float32), name="scan", scale=(3.0, 0.8, 0.8))
    viewer.add_image(np.stack([1 - fg, fg]), name="scan [attnseg] probabilities",
                     scale=(1.0, 3.0, 0.8, 0.8))
    w = RefineWidget(viewer)
    qtbot.addWidget(w.native)  # a magicgui Container
    w.source_combo.setCurrentText("scan [attnseg] probabilities")
    w.image_combo.setCurrentText("scan")
    w.mode_combo.setCurrentText("3d")
    w.iterations_spin.setValue(2)
    w.refine_volume(sync=True)
    return viewer, w, w.refine_volume


def _compare(make_napari_viewer, qtbot, tmp_path):
    from napari_attnseg.widgets.compare import CompareWidget

    viewer = make_napari_viewer()
    gt = np.zeros((4, 16, 16), np.uint8)
    gt[1:3, 4:10, 4:10] = 1
    viewer.add_labels(gt, name="gt")
    viewer.add_labels(np.roll(gt, 2, axis=2), name="pred")
    w = CompareWidget(viewer)
    qtbot.addWidget(w.native)
    w.gt_combo.setCurrentText("gt")
    w.set_candidates(["pred"])
    w.make_runner().run_sync()
    return viewer, w, w.recompute


def _baselines(make_napari_viewer, qtbot, tmp_path):
    from napari_attnseg.widgets.baselines import BaselinesWidget

    viewer = make_napari_viewer()
    img = np.zeros((4, 16, 16), np.float32)
    img[1:3, 4:10, 4:10] = 100.0
    viewer.add_image(img, name="ct")
    w = BaselinesWidget(viewer)
    qtbot.addWidget(w.native)  # a magicgui Container
    w.method_combo.setCurrentText("Otsu")
    w.make_runner().run_sync()
    return viewer, w, w.run


def _finetune(make_napari_viewer, qtbot, tmp_path):
    from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
    from napari_attnseg.model.checkpoint import ModelSpec
    from napari_attnseg.model.registry import ModelRegistry
    from napari_attnseg.widgets.finetune import FinetuneWidget

    torch.manual_seed(0)
    cfg = UNetConfig(spatial_dims=2, out_channels=2, channels=(4, 8, 16))
    spec = ModelSpec(arch=cfg, label_names={0: "background", 1: "blob"}, modality="CT",
                     patch_size=(32, 32), name="tiny")
    reg = ModelRegistry()
    reg.set_active("tiny", reg.add_version("tiny", AttentionUNet(cfg), spec).version)
    viewer = make_napari_viewer()
    yy, xx = np.mgrid[:32, :32]
    blob = np.broadcast_to((yy - 16) ** 2 + (xx - 16) ** 2 < 64, (4, 32, 32))
    viewer.add_image((blob * 200.0).astype(np.float32), name="img")
    labels = viewer.add_labels(np.zeros((4, 32, 32), np.uint8), name="img corrected")
    w = FinetuneWidget(viewer)
    qtbot.addWidget(w)
    w.image_combo.setCurrentText("img")
    w.labels_combo.setCurrentText("img corrected")
    for z in range(4):  # painted like napari's brush: these slices count as reviewed
        idx = np.nonzero(blob[z])
        labels.data_setitem((np.full(idx[0].size, z), *idx), 1)
    w.train_overrides = dict(epochs=1, steps_per_epoch=2, batch_size=2, patch_size=(32, 32),
                             seed=0)
    return viewer, w, w.train


WIDGETS = {  # builder, the core job the widget's factory calls (patched), the context
    "segment": (_segment, "napari_attnseg.inference.predictor.predict_job", "Segment"),
    "refine": (_refine, "napari_attnseg.crf.refine_job", "CRF refine"),
    "compare": (_compare, "napari_attnseg.widgets.compare.compare_job", "Compare"),
    "baselines": (_baselines, "napari_attnseg.baselines.baseline_job", "Baselines"),
    "finetune": (_finetune, "napari_attnseg.training.finetune.finetune_job", "Fine-tune"),
}


def _versions():
    from napari_attnseg.model.registry import ModelRegistry

    reg = ModelRegistry()
    return [e.version for e in reg.versions("tiny")], getattr(reg.active("tiny"), "version", None)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", list(WIDGETS))
def test_failed_or_cancelled_job_leaves_the_widget_usable(
        which, kind, make_napari_viewer, qtbot, tmp_path, monkeypatch, notes):
    build, target, context = WIDGETS[which]
    viewer, w, run = build(make_napari_viewer, qtbot, tmp_path)
    before, registry_before = _layers(viewer), _versions()
    notes.clear()
    started = threading.Event()
    with monkeypatch.context() as m:
        m.setattr(target, _bad_job(kind, started))
        run()
        runner = w.runner
        assert runner.running and w.progress.cancel_button.isEnabled()
        if kind == "cancel":
            qtbot.waitUntil(started.is_set, timeout=WAIT_MS)
            w.progress.cancel_button.click()
        qtbot.waitUntil(lambda: not runner.running, timeout=WAIT_MS)
    # the run has ended: panel reset, nothing half-written, the registry untouched
    assert not w.progress.cancel_button.isEnabled()
    _assert_same_layers(viewer, before)
    assert _versions() == registry_before
    status = w.progress.status.text()
    errors = [t for s, t in notes if s == "error"]
    if kind in ("cancel", "interrupt"):
        assert runner.cancelled and runner.error is None and errors == []
        assert status == ("Cancelled." if kind == "cancel" else "Cancelled (interrupted).")
        if kind == "interrupt":
            assert notes == [("info", f"{context}: interrupted; the run was cancelled")]
    else:
        assert type(runner.error) is type(_exception(kind))
        assert len(errors) == 1 and errors[0].startswith(f"{context}: "), notes
        assert ("out of memory" in errors[0]) == (kind != "runtime")
        assert "simulated" in errors[0] and status.startswith("Failed: ")
    if which == "finetune":
        assert w.train_button.isEnabled() and not w.stop_button.isEnabled()
    # and the widget runs again, for real
    notes.clear()
    run()
    second = w.runner
    assert second is not runner
    qtbot.waitUntil(lambda: not second.running, timeout=2 * WAIT_MS)
    assert second.error is None and not second.cancelled and second.result is not None
    assert [s for s, _ in notes] == [], notes


def test_real_notification_manager_gets_one_error(make_napari_viewer, qtbot, tmp_path,
                                                  monkeypatch):
    """Unpatched napari notifications: the failure reaches napari's notification manager
    once, as an error, with the message (not a traceback)."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    viewer, w, run = _segment(make_napari_viewer, qtbot, tmp_path)
    got = []
    notification_manager.notification_ready.connect(got.append)
    try:
        monkeypatch.setattr("napari_attnseg.inference.predictor.predict_job",
                            _bad_job("cuda_oom", threading.Event()))
        run()
        qtbot.waitUntil(lambda: not w.runner.running, timeout=WAIT_MS)
        qtbot.wait(50)
    finally:
        notification_manager.notification_ready.disconnect(got.append)
    assert [n.severity for n in got] == [NotificationSeverity.ERROR]
    assert got[0].message.startswith("Segment: out of memory: CUDA out of memory (simulated)")
    assert "Traceback" not in got[0].message


# ------------------------------------------------------------------------ JobRunner itself
def _panel_runner(qtbot, factory, **kw):
    panel = ProgressPanel()
    qtbot.addWidget(panel)
    return panel, JobRunner(factory, panel, context="Probe", **kw)


def test_factory_that_raises_ends_the_run(qtbot, notes):
    """The factory itself raising (before any generator exists) used to hang the relay."""
    def factory():
        raise RuntimeError("no generator for you")

    finished = []
    panel, runner = _panel_runner(qtbot, factory, on_finished=lambda: finished.append(1))
    runner.start()
    qtbot.waitUntil(lambda: not runner.running, timeout=WAIT_MS)
    assert finished == [1] and not panel.cancel_button.isEnabled()
    assert notes == [("error", "Probe: unexpected RuntimeError: no generator for you")]


def test_on_result_that_raises_still_ends_the_run(qtbot, notes):
    def job():
        yield Progress(1, 1, "work")
        return "value"

    def show(value):
        raise RuntimeError("layer update failed")

    finished = []
    panel, runner = _panel_runner(qtbot, job, on_result=show,
                                  on_finished=lambda: finished.append(1))
    runner.start()
    qtbot.waitUntil(lambda: not runner.running, timeout=WAIT_MS)
    assert finished == [1] and not panel.cancel_button.isEnabled()
    assert isinstance(runner.error, RuntimeError)
    assert [s for s, _ in notes] == ["error"] and "layer update failed" in notes[0][1]


def test_error_raised_outside_the_relay_is_still_reported(qtbot, notes):
    """``errored`` stays connected: a generator body that raises a non-RuntimeError outside
    the relay (what superqt does report) ends the run with one notification."""
    panel, runner = _panel_runner(qtbot, lambda: iter(()))

    def body():
        raise ValueError("outside the relay")
        yield  # makes this a generator

    runner._body = body
    runner.start()
    qtbot.waitUntil(lambda: not runner.running, timeout=WAIT_MS)
    assert notes == [("error", "Probe: outside the relay")]
    assert not panel.cancel_button.isEnabled()


def test_run_sync_raises_the_jobs_error_and_the_next_job_runs(qtbot):
    from napari_attnseg._compute import compute_thread

    def bad():
        yield Progress(1, 2, "work")
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    runner = JobRunner(bad)
    with pytest.raises(torch.cuda.OutOfMemoryError, match="simulated") as info:
        runner.run_sync()
    assert runner.error is info.value and "bad" in [f.name for f in info.traceback]
    where = []

    def good():
        where.append(threading.get_ident())
        yield Progress(1, 1, "work")
        return "ok"

    assert JobRunner(good).run_sync() == "ok"
    assert where == [compute_thread().ident]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt(), SystemExit(3)])
def test_compute_thread_survives_a_raising_job(exc):
    from napari_attnseg._compute import ComputeThread

    ct = ComputeThread(name="attnseg-test")

    def bad():
        raise exc

    with pytest.raises(type(exc)):
        ct.submit(bad).result(timeout=5)
    first = ct.ident
    assert ct.submit(threading.get_ident).result(timeout=5) == first
    assert ct.call(lambda: 7) == 7 and ct.overflow_runs == 0
    ct._executor.shutdown(wait=True)


# --------------------------------------------------------------------- Segment warm-up, CRF
@pytest.mark.parametrize("kind", ["runtime", "cuda_oom", "interrupt"])
def test_failed_warm_up_is_quiet_and_the_next_one_runs(kind, make_napari_viewer, qtbot,
                                                        tmp_path, monkeypatch, notes):
    calls = []

    def warm_up(*args, **kwargs):
        calls.append(1)
        raise _exception(kind)

    monkeypatch.setattr("napari_attnseg.inference.predictor.warm_up", warm_up)
    viewer, w, run = _segment(make_napari_viewer, qtbot, tmp_path)
    qtbot.waitUntil(lambda: bool(calls) and w._warm_worker is None, timeout=WAIT_MS)
    viewer.add_image(np.zeros((4, 32, 32), np.float32), name="other")
    w.image_combo.setCurrentText("other")
    w.update_info()
    qtbot.waitUntil(lambda: len(calls) == 2 and w._warm_worker is None, timeout=WAIT_MS)
    assert notes == []  # harmless: the real run reports problems
    run()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=2 * WAIT_MS)
    assert w.runner.error is None and "other [attnseg]" in viewer.layers


def test_broken_crf_process_pool_is_reported_and_replaced(make_napari_viewer, qtbot, tmp_path,
                                                          notes):
    """A CRF worker process that died (BrokenProcessPool, a RuntimeError) is reported, and the
    next run gets a fresh pool instead of failing again."""
    import multiprocessing as mp
    import os
    from concurrent.futures import BrokenExecutor, ProcessPoolExecutor

    from napari_attnseg.crf import dense_crf

    viewer, w, run = _refine(make_napari_viewer, qtbot, tmp_path)
    broken = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"))
    with pytest.raises(BrokenExecutor):
        broken.submit(os._exit, 1).result(timeout=30)
    try:
        with dense_crf._POOL_LOCK:
            dense_crf._POOL, dense_crf._POOL_KEY = broken, (2, "forkserver")
        w.mode_combo.setCurrentText("2d")
        w.workers_spin.setValue(2)
        before = _layers(viewer)
        run()
        qtbot.waitUntil(lambda: not w.runner.running, timeout=WAIT_MS)
        assert isinstance(w.runner.error, BrokenExecutor)
        assert len(notes) == 1 and notes[0][1].startswith("CRF refine: unexpected Broken")
        _assert_same_layers(viewer, before)
        assert dense_crf._POOL is None  # dropped: the next run starts a fresh one
        w.workers_spin.setValue(1)  # (a fresh pool costs seconds to start: not needed here)
        run()
        qtbot.waitUntil(lambda: not w.runner.running, timeout=2 * WAIT_MS)
        assert w.runner.error is None and w.runner.result is not None
    finally:
        dense_crf.shutdown_pool()
        broken.shutdown(wait=True)
