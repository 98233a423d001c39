"""The multi-view average and argmax after it: before and after session 14, side by side in one run.

Run:  python benchmarks/bench_view_average.py [--threads 2] [--volumes 4] [--rounds 5] [--end-to-end]

For the shipped ``openkbp-headneck-ct-2d`` (an axial model with a coronal view) and its first
held-out volumes, the two networks' probabilities are computed once; then, alternating, the
previous code (``views.averaged`` as it was, out of place: volume-sized temporaries; numpy's argmax
below 4M voxels per class) and the current one (:func:`napari_attnseg.inference.views.averaged`
itself, in place, and :func:`labels_from_probabilities`' torch passes) are timed on fresh copies
of them (the view's probabilities mapped back to the scan's grid inside, as in a prediction). Prints the
median milliseconds of each, the ratio, and whether the labels are identical. The networks' own
time is not in it; ``--end-to-end`` also times whole predictions, alternating the current code
with the previous one patched in (the predictor imports ``views.averaged`` when it runs).
Data from ``ATTNSEG_DATA`` or ``../shared/data``; absent: skipped with a reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_attnseg.benchmark.splits import held_out_entries  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--volumes", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--end-to-end", action="store_true",
                    help="also whole predictions with the previous code patched in, alternating")
    args = ap.parse_args(argv)
    import torch

    from napari_attnseg._progress import drain
    from napari_attnseg.inference import sliding_window, views
    from napari_attnseg.inference.predictor import PredictConfig, predict, predict_job
    from napari_attnseg.inference.sliding_window import TORCH_ARGMAX_VOXELS, labels_from_probabilities
    from napari_attnseg.inference.views import view_volume
    from napari_attnseg.io import read_volume
    from napari_attnseg.model.checkpoint import load_model
    from napari_attnseg.model.registry import ModelRegistry

    torch.set_num_threads(args.threads)
    src = Path(os.environ.get("ATTNSEG_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "openkbp_ct"
    if not src.is_dir():
        print(f"skipped: {src} is absent")
        return 0
    model = load_model(ModelRegistry().resolve("openkbp-headneck-ct-2d"))
    (view, axes, w), = model.views
    print(f"{model.spec.name}@{model.spec.version}, view weight {w}, {args.threads} threads")
    ratios = []
    for e in held_out_entries(src)[: args.volumes]:
        vol = read_volume(src / e["image"])
        cfg = PredictConfig()
        p_ax = drain(predict_job(model, vol, cfg, views=False)).probabilities  # the axial model alone
        res_view = predict(view, view_volume(model, vol, axes), cfg)
        times: dict[str, list[float]] = {"previous": [], "current": []}
        labels = {}
        for _ in range(args.rounds):
            for name, (avg, threshold) in (("previous", (_previous_averaged, PREVIOUS_ARGMAX_VOXELS)),
                                           ("current", (views.averaged, TORCH_ARGMAX_VOXELS))):
                a = p_ax.copy()  # fresh arrays (averaged works in place on the job's own)
                fresh = dataclasses.replace(res_view, probabilities=res_view.probabilities.copy())
                sliding_window.TORCH_ARGMAX_VOXELS = threshold
                t = time.perf_counter()
                labels[name] = labels_from_probabilities(drain(avg(model, vol, a, cfg, _returning(fresh))))
                times[name].append(time.perf_counter() - t)
        sliding_window.TORCH_ARGMAX_VOXELS = TORCH_ARGMAX_VOXELS
        prev, cur = (statistics.median(times[k]) * 1e3 for k in ("previous", "current"))
        ratios.append(cur / prev)
        print(f"{Path(e['image']).name} {tuple(p_ax.shape)}: previous {prev:.1f} ms, current {cur:.1f} ms, "
              f"ratio {cur / prev:.2f}, labels identical: {bool((labels['previous'] == labels['current']).all())}")
    print(f"median ratio current/previous: {statistics.median(ratios):.2f}")
    if args.end_to_end:
        _end_to_end(model, [read_volume(src / e["image"]) for e in held_out_entries(src)[: args.volumes]],
                    args.rounds)
    return 0


#: where labels_from_probabilities began its torch passes before session 14
PREVIOUS_ARGMAX_VOXELS = 1 << 22


def _returning(prediction):
    """A stand-in for the predictor's job function: the view's prediction, computed once."""
    def run(*_args, **_kwargs):
        return prediction
        yield  # a generator, as predict_job is

    return run


def _previous_averaged(model, volume, probs, config, run):
    """views.averaged as it was before session 14 (out of place)."""
    from napari_attnseg.inference.views import from_view, view_volume

    views = tuple(getattr(model, "views", ()) or ())
    if not views or volume.ndim != 3:
        return probs
    out = probs * np.float32(1.0 - sum(w for _, _, w in views))
    for view, axes, weight in views:
        res = yield from run(view, view_volume(model, volume, axes), config, check_input=False)
        out += np.float32(weight) * from_view(model, volume, axes, res.probabilities)
    return out


def _end_to_end(model, volumes, rounds: int) -> None:
    """Whole predictions, alternating the current code and the previous one (patched in)."""
    from napari_attnseg.inference import sliding_window, views
    from napari_attnseg.inference.predictor import PredictConfig, predict

    current = (views.averaged, sliding_window.TORCH_ARGMAX_VOXELS)
    previous = (_previous_averaged, PREVIOUS_ARGMAX_VOXELS)
    times: dict[str, list[float]] = {"previous": [], "current": []}
    same = True
    predict(model, volumes[0], PredictConfig())  # warm-up
    for _ in range(rounds):
        for vol in volumes:
            out = {}
            for name, (avg, threshold) in (("previous", previous), ("current", current)):
                views.averaged, sliding_window.TORCH_ARGMAX_VOXELS = avg, threshold
                t = time.perf_counter()
                out[name] = predict(model, vol, PredictConfig()).labels
                times[name].append(time.perf_counter() - t)
            same &= bool((out["previous"] == out["current"]).all())
    views.averaged, sliding_window.TORCH_ARGMAX_VOXELS = current
    prev, cur = (statistics.median(times[k]) for k in ("previous", "current"))
    print(f"end to end ({len(volumes)} volumes x {rounds} rounds, alternating): previous {prev:.3f} s, "
          f"current {cur:.3f} s per volume, ratio {cur / prev:.2f}, labels identical: {same}")


if __name__ == "__main__":
    raise SystemExit(main())
