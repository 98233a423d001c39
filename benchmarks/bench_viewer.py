"""The interactive path in a real napari viewer: first vs steady preview, event-loop stalls.

Each measurement runs in a fresh child process (a first call only happens once per process):

* ``core-cold`` / ``core-warm``: the preview's core path alone (``predict_slice`` on the compute
  thread, no viewer), without / after :func:`~napari_attnseg.inference.predictor.warm_up`;
* ``preview-cold``: the Segment widget with its background warm-up disabled; the first
  "Preview slice" vs the steady state;
* ``preview-warm``: the same with the warm-up the widget starts when a model and an image are
  chosen (the product default), waited for before the first preview;
* ``volume``: "Segment volume" with a QTimer probe ticking every 10 ms on the GUI thread: the
  longest gap between ticks while the worker computes, while the result layers are added the
  first time (new layers), and on a re-run (layers updated in place).

Times of the preview are the core's own (``Prediction.seconds``) and the wall time of the whole
click ("Preview slice": a worker the first time, synchronous once previews are known to be
fast, which the warm-up measures) until the result layers are shown; the first preview
creates the layers. Every preview follows a 0.5 s pause (a user's click rhythm). Without the
warm-up the first preview runs threaded while the GUI repaints (it competes for the 2 cores)
and the later ones synchronously, so that ratio mixes both effects; the core modes isolate
the first-call cost. The scan is the bundled CT phantom resampled to
128 x 256 x 256 (the issue's 256 x 256 x 128 volume); the model is the registry default.

``--first-open`` measures instead the first real scan opened in a fresh viewer (default the
spleen CT of ``../shared/data``; ``--scan``/``--mask`` to change), each in fresh processes:

* ``plain``: plain napari, no plugin widget: the stall of napari's own first layer (the volume
  read before timing, then ``viewer.add_image``, until it is drawn);
* ``docked``: every plugin widget docked (as ``attnseg-demo`` docks them), the plugin left to
  settle, then the scan opened through the Load widget (list, Open) and left until the Segment
  widget has chosen a model, planned and warmed up; then every job button clicked in turn
  (Segment: preview, volume; Refine: volume; Compare: recompute against the mask; Baselines:
  run; Fine-tune: train, then cancel), each timed from the click until control is back in the
  event loop, and the longest event-loop gap in the second after it;
* ``docked-now``: the same, with the scan opened right after docking (no settling).

The stall is the longest gap between ticks of a 10 ms QTimer on the GUI thread from the open
until 2 s after the layer is shown. Targets: docked <= 1.5x plain; every click < 100 ms.

Run under a display: ``xvfb-run -a .venv/bin/python benchmarks/bench_viewer.py``
(or with ``QT_QPA_PLATFORM=offscreen``); ``--first-open --repeat 3`` for the first-open figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _scan():
    import numpy as np
    from scipy.ndimage import zoom

    from napari_attnseg.io import read_volume
    from napari_attnseg.volume import Volume

    src = read_volume(ROOT / "sample_data" / "ct_phantom.nii.gz")
    target = (128, 256, 256)
    factors = [t / s for t, s in zip(target, src.shape)]
    data = zoom(np.asarray(src.data, np.float32), factors, order=1)
    spacing = tuple(float(sp) / f for sp, f in zip(src.spacing, factors))
    return Volume(data=data, spacing=spacing, origin=src.origin, direction=src.direction,
                  modality="CT", source="ct_phantom (resampled)")


def _setup(threads: int):
    import napari
    import torch
    from qtpy.QtWidgets import QApplication

    from napari_attnseg._napari.layers import volume_to_layer_kwargs
    from napari_attnseg.widgets.segment import SegmentWidget

    torch.set_num_threads(threads)
    viewer = napari.Viewer(show=True)
    vol = _scan()
    viewer.add_image(vol.data, **volume_to_layer_kwargs(vol, name="ct"))
    app = QApplication.instance()
    return viewer, app, SegmentWidget


def _pump(app, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.005)


def _wait(app, cond, timeout: float = 120.0) -> float:
    t0 = time.perf_counter()
    while not cond():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("timed out")
        app.processEvents()
        time.sleep(0.002)
    return time.perf_counter() - t0


def child_preview(warm: bool, threads: int, rounds: int) -> dict:
    viewer, app, SegmentWidget = _setup(threads)
    if not warm:
        SegmentWidget._warm_up = lambda self, *a, **k: None
    t0 = time.perf_counter()
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    create_s = time.perf_counter() - t0
    warm_s = _wait(app, lambda: widget._warm_worker is None) if warm else 0.0
    _pump(app, 0.5)
    core, wall = [], []
    for _ in range(rounds + 1):
        before = widget.last_prediction
        t0 = time.perf_counter()
        widget.preview_slice()  # the button: a worker the first time, then synchronous if fast
        _wait(app, lambda: widget.last_prediction is not before and widget._pending_layers == 0
              and not (widget.runner is not None and widget.runner.running))
        wall.append(time.perf_counter() - t0)
        core.append(widget.last_prediction.seconds)
        _pump(app, 0.5)  # a user pause between clicks, as before the first one
    viewer.close()
    return {"create_s": create_s, "warm_s": warm_s, "core_first": core[0], "wall_first": wall[0],
            "core_steady": statistics.median(core[1:]), "wall_steady": statistics.median(wall[1:])}


def child_core(warm: bool, threads: int, rounds: int) -> dict:
    """The preview's core path alone (no viewer), on the compute thread, 0.5 s between calls."""
    import torch

    from napari_attnseg._compute import compute_thread
    from napari_attnseg.inference.predictor import PredictConfig, intensity_for, predict_slice, warm_up
    from napari_attnseg.model.checkpoint import load_model
    from napari_attnseg.model.registry import ModelRegistry

    torch.set_num_threads(threads)
    vol, ct, cfg = _scan(), compute_thread(), PredictConfig()
    model = ct.call(load_model, ModelRegistry().default_model().path)
    index = vol.shape[0] // 2
    t0 = time.perf_counter()
    intensity = (ct.call(warm_up, model, vol, cfg, index=index).intensity if warm
                 else ct.call(intensity_for, model, vol, cfg))
    warm_s = time.perf_counter() - t0 if warm else 0.0
    times = []
    for _ in range(rounds + 1):
        time.sleep(0.5)
        times.append(ct.call(lambda: predict_slice(model, vol, index, cfg, intensity=intensity).seconds))
    return {"warm_s": warm_s, "core_first": times[0], "core_steady": statistics.median(times[1:]),
            "wall_first": times[0], "wall_steady": statistics.median(times[1:])}


def child_volume(threads: int) -> dict:
    from qtpy.QtCore import QTimer

    viewer, app, SegmentWidget = _setup(threads)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    _wait(app, lambda: widget._warm_worker is None)
    _pump(app, 0.5)
    out = {}
    for run in ("first", "again"):
        stamps: list[float] = []
        marks: dict[str, float] = {}
        show = widget.show_result

        def timed_show(req, pred, *rest, show=show, marks=marks, **kw):
            marks["result"] = time.perf_counter()
            show(req, pred, *rest, **kw)
            marks["shown"] = time.perf_counter()

        widget.show_result = timed_show
        timer = QTimer()
        timer.setInterval(10)
        timer.timeout.connect(lambda: stamps.append(time.perf_counter()))
        timer.start()
        t0 = time.perf_counter()
        widget.segment_volume()
        _wait(app, lambda: "shown" in marks)
        _pump(app, 0.3)
        timer.stop()
        widget.show_result = show
        import numpy as np

        s = np.asarray(stamps)
        computing = np.diff(s[s < marks["result"]])
        after = np.diff(s[s >= (s[s < marks["result"]][-1] if (s < marks["result"]).any() else 0)])
        out[run] = {"seconds": marks["result"] - t0,
                    "stall_computing_ms": float(computing.max() * 1e3) if computing.size else None,
                    "stall_showing_ms": float(after.max() * 1e3) if after.size else None,
                    "show_ms": (marks["shown"] - marks["result"]) * 1e3, "ticks": int(s.size)}
    # the same run without the GUI (core only, on the same thread), for the overhead ratio
    from napari_attnseg._compute import compute_thread
    from napari_attnseg.inference.predictor import predict

    req = widget.snapshot()
    model = widget._load(req.model_folder)
    t0 = time.perf_counter()
    compute_thread().call(predict, model, req.volume, req.config)
    out["core_seconds"] = time.perf_counter() - t0
    viewer.close()
    return out


class _Probe:
    """A 10 ms QTimer on the GUI thread; gaps between its ticks are the stalls."""

    def __init__(self):
        from qtpy.QtCore import QTimer

        self.stamps: list[float] = []
        self.cpu: list[float] = []  #: the GUI thread's CPU time at each tick
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)

    def _tick(self):
        self.stamps.append(time.perf_counter())
        self.cpu.append(time.thread_time())

    def longest_cpu(self, start: float = 0.0, end: float = float("inf")) -> float:
        """Most GUI-thread CPU time (ms) between two ticks in [start, end] (wall clock): the
        GUI thread's own work, without waiting for a core or the GIL."""
        pairs = [(c1 - c0) for t0, t1, c0, c1 in zip(self.stamps, self.stamps[1:], self.cpu,
                                                     self.cpu[1:]) if start <= t1 and t0 <= end]
        return float(max(pairs) * 1e3) if pairs else float("nan")

    def start(self):
        self.stamps.clear()
        self.cpu.clear()
        self.timer.start()
        return self

    def longest(self, start: float = 0.0, end: float = float("inf")) -> float:
        """Longest gap (ms) between ticks in [start, end] (a gap starting before ``start``
        counts from ``start``)."""
        import numpy as np

        inside = [t for t in self.stamps if start < t <= end]
        after = [t for t in self.stamps if t > end][:1]  # the gap that spans the end counts
        s = np.asarray([start] + inside + after)
        return float(np.diff(s).max() * 1e3) if s.size > 1 else float("nan")


def _first_open_scan(args):
    scan = Path(args.scan) if args.scan else ROOT.parent / "shared" / "data" / "ct_spleen" / "image.nii.gz"
    mask = Path(args.mask) if args.mask else scan.with_name("spleen_mask.nii.gz")
    if not scan.exists():
        raise SystemExit(f"{scan} is absent: give --scan PATH (and --mask PATH)")
    return scan, (mask if mask.exists() else None)


def child_first_open_plain(args) -> dict:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_attnseg._napari.layers import layer_data_tuple
    from napari_attnseg.io import read_volume

    scan, _ = _first_open_scan(args)
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    _pump(app, 1.5)
    data, kwargs, kind = layer_data_tuple(read_volume(scan), name="scan")
    probe = _Probe().start()
    _pump(app, 0.3)
    t0 = time.perf_counter()
    getattr(viewer, f"add_{kind}")(data, **kwargs)
    added = time.perf_counter()
    _pump(app, 2.0)
    probe.timer.stop()
    viewer.close()
    return {"stall_ms": probe.longest(t0), "stall_cpu_ms": probe.longest_cpu(t0),
            "add_ms": (added - t0) * 1e3}


def _click(app, probe, button, wait=None, timeout=120.0) -> dict:
    """Click, time until control is back in the event loop; the longest gap in the next second
    (or until ``wait()`` holds, if longer)."""
    t0 = time.perf_counter()
    getattr(button, "native", button).click()  # a QPushButton or a magicgui PushButton
    back = time.perf_counter()
    _pump(app, 1.0)
    if wait is not None:
        _wait(app, wait, timeout)
    return {"click_ms": (back - t0) * 1e3, "stall_after_ms": probe.longest(back, back + 1.0),
            "stall_after_cpu_ms": probe.longest_cpu(back, back + 1.0)}


def child_first_open_docked(args, settle: bool) -> dict:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_attnseg import demo
    from napari_attnseg.widgets import _segment_jobs

    scan, mask = _first_open_scan(args)
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    _pump(app, 1.5)
    probe = _Probe().start()
    t_dock = time.perf_counter()
    w = demo.dock_widgets(viewer)
    dock_ms = (time.perf_counter() - t_dock) * 1e3
    out = {"dock_ms": dock_ms}
    if settle:
        _wait(app, lambda: bool(_segment_jobs._prepared)
              and all(f.done() for f in _segment_jobs._prepared))
        _pump(app, 1.0)
        out["settling_stall_ms"] = probe.longest(t_dock)
    load, seg = w["LoadWidget"], w["SegmentWidget"]
    t0 = time.perf_counter()
    load.set_path(scan)
    _wait(app, load.open_button.isEnabled)
    t_open = time.perf_counter()
    load.open_button.click()
    name = load.config().name
    _wait(app, lambda: name in viewer.layers)
    shown = time.perf_counter()
    _wait(app, lambda: not seg.info_pending and seg._warm_worker is None
          and (seg.model_folder() is None or seg._warm_key is not None))
    ready = time.perf_counter()
    _pump(app, 2.0)
    out.update(stall_ms=probe.longest(t0, ready + 2.0),
               stall_cpu_ms=probe.longest_cpu(t0, ready + 2.0), open_to_layer_s=shown - t_open,
               list_s=t_open - t0, open_to_ready_s=ready - t_open,
               info=seg.info_label.text()[:160], model=str(seg.model_folder()))
    clicks = {}
    if seg.model_folder() is None:  # a real scan with no fitting model: try the demo model
        from napari_attnseg.model.choose import choose_model

        seg.set_model_folder(choose_model("CT", "phantom").path)
        _wait(app, lambda: not seg.info_pending and seg._warm_worker is None)
        _pump(app, 1.0)
    clicks["segment: preview"] = _click(app, probe, seg.preview_button,
                                        lambda: not (seg.runner and seg.runner.running))
    clicks["segment: volume"] = _click(app, probe, seg.run_button,
                                       lambda: not seg.runner.running and not seg._pending_layers)
    refine = w["RefineWidget"]
    refine.source_combo.setCurrentText(f"{name} [attnseg] probabilities")
    refine.image_combo.setCurrentText(name)
    clicks["refine: volume"] = _click(app, probe, refine.refine_button,
                                      lambda: not (refine.runner and refine.runner.running))
    if mask is not None:
        gt = viewer.open(mask, plugin="napari-attnseg")[0]
        _pump(app, 1.0)
        compare = w["CompareWidget"]
        compare.gt_combo.setCurrentText(gt.name)
        compare.set_candidates([f"{name} [attnseg]"])
        clicks["compare: recompute"] = _click(
            app, probe, compare.recompute_button,
            lambda: not (compare.runner and compare.runner.running))
    base = w["BaselinesWidget"]
    base.image_combo.setCurrentText(name)
    clicks["baselines: run"] = _click(app, probe, base.run_button,
                                      lambda: not (base.runner and base.runner.running))
    tune = w["FinetuneWidget"]
    tune.image_combo.setCurrentText(name)
    tune.labels_combo.setCurrentText(f"{name} [attnseg]")
    tune.mark_button.click()  # the shown slice counts as reviewed
    clicks["fine-tune: train"] = _click(app, probe, tune.train_button)
    if tune.runner is not None and tune.runner.running:
        tune.runner.cancel()
        _wait(app, lambda: not tune.runner.running, 300)
    probe.timer.stop()
    out["clicks"] = clicks
    viewer.close()
    return out


def _first_open(args) -> None:
    import platform
    import subprocess as sp

    scan, _ = _first_open_scan(args)
    cpu = sp.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True)
    print(f"first scan opened: {scan} ({args.repeat} fresh processes per mode); "
          f"{cpu.stdout.strip()}; {platform.python_version()}")
    res: dict[str, list] = {"plain": [], "docked": [], "docked-now": []}
    for _ in range(args.repeat):
        for mode in res:
            res[mode].append(_run_child(f"first-open-{mode}", args))
    plain = statistics.median(r["stall_ms"] for r in res["plain"])
    plain_cpu = statistics.median(r["stall_cpu_ms"] for r in res["plain"])
    print(f"plain napari, first layer: stall {plain:.0f} ms (median; runs "
          f"{[round(r['stall_ms']) for r in res['plain']]}); GUI-thread CPU {plain_cpu:.0f} ms")
    for mode in ("docked", "docked-now"):
        stalls = [r["stall_ms"] for r in res[mode]]
        med = statistics.median(stalls)
        extra = (f"; settling after docking: {[round(r['settling_stall_ms']) for r in res[mode]]} ms"
                 if mode == "docked" else "")
        med_cpu = statistics.median(r["stall_cpu_ms"] for r in res[mode])
        print(f"{mode}: stall {med:.0f} ms (runs {[round(x) for x in stalls]}); "
              f"{med / plain:.2f}x plain (target <= 1.5x); GUI-thread CPU {med_cpu:.0f} ms "
              f"({med_cpu / plain_cpu:.2f}x); open click to layer "
              f"{statistics.median(r['open_to_layer_s'] for r in res[mode]):.2f} s, to model "
              f"chosen and warm {statistics.median(r['open_to_ready_s'] for r in res[mode]):.2f} s"
              f"{extra}")
    print(f"  info line: {res['docked'][-1]['info']}")
    names = list(res["docked"][0]["clicks"])
    for n in names:
        runs = [r["clicks"][n] for m in ("docked", "docked-now") for r in res[m] if n in r["clicks"]]
        worst = max(c["click_ms"] for c in runs)
        print(f"  click {n}: back in the event loop after {worst:.1f} ms (worst of {len(runs)}); "
              f"longest gap in the next second "
              f"{statistics.median(c['stall_after_ms'] for c in runs):.0f} ms (median; GUI-thread "
              f"CPU {statistics.median(c['stall_after_cpu_ms'] for c in runs):.0f} ms)")


def _run_child(mode: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--threads", str(args.threads),
           "--rounds", str(args.rounds)]
    if getattr(args, "scan", None):
        cmd += ["--scan", args.scan]
    if getattr(args, "mask", None):
        cmd += ["--mask", args.mask]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    for line in res.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"child {mode} failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=8, help="steady-state previews")
    ap.add_argument("--repeat", type=int, default=3, help="fresh processes per mode")
    ap.add_argument("--child", choices=["core-cold", "core-warm", "preview-cold", "preview-warm",
                                        "volume", "first-open-plain", "first-open-docked",
                                        "first-open-docked-now"])
    ap.add_argument("--first-open", action="store_true",
                    help="the first real scan opened with every widget docked vs plain napari")
    ap.add_argument("--scan", help="--first-open: the scan (default: ../shared/data/ct_spleen)")
    ap.add_argument("--mask", help="--first-open: its ground truth (for Compare)")
    args = ap.parse_args()
    if args.first_open and not args.child:
        _first_open(args)
        return
    if args.child:
        if args.child == "first-open-plain":
            result = child_first_open_plain(args)
        elif args.child.startswith("first-open-docked"):
            result = child_first_open_docked(args, settle=args.child == "first-open-docked")
        elif args.child == "volume":
            result = child_volume(args.threads)
        elif args.child.startswith("core"):
            result = child_core(args.child == "core-warm", args.threads, args.rounds)
        else:
            result = child_preview(args.child == "preview-warm", args.threads, args.rounds)
        print("RESULT " + json.dumps(result))
        return
    import torch

    print(f"torch {torch.__version__}, {args.threads} threads, fp32; scan 128x256x256 (CT phantom); "
          f"{args.repeat} fresh processes per mode")
    for mode in ("core-cold", "core-warm", "preview-cold", "preview-warm"):
        ratios = []
        for _ in range(args.repeat):
            r = _run_child(mode, args)
            ratios.append(r["core_first"] / r["core_steady"])
            wall = "" if mode.startswith("core") else (
                f" / {r['wall_first'] * 1e3:.1f} ms (click to layers shown)")
            wall_steady = "" if mode.startswith("core") else f" / {r['wall_steady'] * 1e3:.1f}"
            print(f"{mode}: first preview {r['core_first'] * 1e3:.1f} ms (core){wall}, steady "
                  f"{r['core_steady'] * 1e3:.1f}{wall_steady} ms; first/steady "
                  f"{ratios[-1]:.2f}x (core)"
                  + (f"; warm-up {r['warm_s'] * 1e3:.0f} ms" if r["warm_s"] else ""))
        print(f"  {mode}: median first/steady {statistics.median(ratios):.2f}x; target <= 2x")
    for _ in range(args.repeat):
        r = _run_child("volume", args)
        core = r.pop("core_seconds")
        for run, v in r.items():
            label = "first run (new layers)" if run == "first" else "re-run (in place)"
            print(f"whole volume, {label}: {v['seconds']:.2f} s; longest event-loop stall "
                  f"{v['stall_computing_ms']:.1f} ms while computing, {v['stall_showing_ms']:.1f} ms "
                  f"while showing the result (show_result {v['show_ms']:.0f} ms); target < 100 ms")
        print(f"  the same run without the viewer (predict() on the compute thread): {core:.2f} s; "
              f"viewer/core {r['again']['seconds'] / core:.2f}x (re-run)")


if __name__ == "__main__":
    main()
