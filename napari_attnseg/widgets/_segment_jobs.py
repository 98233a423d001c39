"""The Segment widget's jobs: the segmentation / preview generator run by the JobRunner, the
background warm-up (at most one at a time, the latest request queued), and the helper that
runs short background work on the compute thread from a napari worker."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._compute import compute_thread
from ._segment_results import foreground_probability, result_style

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentRequest:
    """Everything a run needs, read on the GUI thread."""

    image_name: str
    volume: Any  # Volume
    model_folder: Path
    config: Any  # SegmentOptions
    slice_index: int | None = None


def alive(widget: Any) -> bool:
    """False once Qt has deleted the widget (a worker may report after the viewer closed)."""
    try:
        widget.objectName()
    except RuntimeError:
        return False
    return True


def background(job: Callable[[], Any], on_done: Callable[[Any], None]) -> Any:
    """A napari worker (not started) running ``job()`` on the compute thread, queued behind real
    work rather than beside it; ``on_done(result)`` runs on the GUI thread. A failure is
    logged and returned as ``None``: the worker always finishes."""
    from napari.qt.threading import create_worker

    def run() -> Any:
        try:
            return job()
        except BaseException as exc:  # returned, never raised: the worker always finishes
            logger.debug("background job failed: %r", exc)
            return None

    worker = create_worker(lambda: compute_thread().submit_background(run).result(),
                           _start_thread=False, _ignore_errors=True)
    worker.returned.connect(on_done)
    return worker


def segment_job(models: Any, req: Any, base: Any, merged: dict,
                intensity_for: Callable[[Any, Any, Any], Any]) -> Callable[[], Any]:
    """The job factory of a run: load the model (cached), check the input, then the whole
    volume (``req.slice_index`` None) or one slice merged into ``base`` (the current result).
    What the GUI needs besides the prediction goes into ``merged``."""

    def factory():
        from .._progress import Progress
        from ..inference import predictor

        model = models.load(req.model_folder)
        predictor.as_volume(model, req.volume)
        cfg = req.config.predict_config()
        index = req.slice_index
        if index is None:
            pred = yield from predictor.predict_job(model, req.volume, cfg)
            # the layer's foreground probability, computed here rather than on the GUI thread
            merged["foreground"] = foreground_probability(pred.probabilities)
            merged["style"] = result_style(pred.provenance)
            return pred
        t0 = time.perf_counter()
        yield Progress(0, 1, "preview", f"slice {index}")
        pred = predictor.predict_slice(model, req.volume, index, cfg,
                                       intensity=intensity_for(model, req, cfg))
        if base is not None:  # the full-size copies, off the GUI thread
            merged["arrays"] = base.merge(pred, index)
        merged["style"] = result_style(pred.provenance)
        merged["seconds"] = time.perf_counter() - t0
        return pred

    return factory


class WarmUp:
    """One background warm-up at a time; a request made meanwhile waits for it (only the
    latest). ``key`` is what the model was last warmed up for."""

    def __init__(self) -> None:
        self.worker: Any = None
        self.key: tuple | None = None
        self.pending: tuple | None = None  #: (key, job, done) asked for meanwhile
        self.idle: threading.Event | None = None  #: set when the running warm-up ends

    def request(self, key: tuple, job: Callable[[], Any], done: Callable[[Any], None]) -> None:
        if key == self.key or (self.pending and key == self.pending[0]):
            return
        if self.worker is not None:
            self.pending = (key, job, done)
            return
        self.key = key
        idle = threading.Event()
        self.idle = idle

        def run() -> Any:
            try:
                return job()
            finally:
                idle.set()

        def finished() -> None:
            self.worker = None
            pending, self.pending = self.pending, None
            if pending is not None and pending[0] != self.key:
                self.request(*pending)

        worker = background(run, lambda warm: warm is not None and done(warm))
        worker.finished.connect(finished)
        self.worker = worker
        worker.start()

    def wait(self, timeout: float = 5.0) -> None:
        """Let a running warm-up (well under a second) finish."""
        if self.worker is not None and self.idle is not None:
            self.idle.wait(timeout=timeout)


def request_warm_up(warm: WarmUp, intensity: Any, models: Any, image_name: str, volume: Any,
                    index: int, folder: Path, options: Any,
                    on_preview_seconds: Callable[[float], None]) -> None:
    """Warm the model up for this image in the background (one discarded preview at the
    image's slice shape, and the intensity statistics, kept in ``intensity``); at most one
    warm-up runs, the latest request waits for it (:class:`WarmUp`)."""
    key = intensity.key(image_name, volume, folder, options) + (
        options.device, options.precision, options.window, options.tta)

    def job() -> Any:
        from ..inference import predictor
        from ._results import warm_layer_machinery

        warmed = predictor.warm_up(models.load(folder), volume, options.predict_config(),
                                   index=index)
        warm_layer_machinery()  # napari's first-layer imports, off the GUI thread too
        return warmed

    def done(warmed: Any) -> None:
        intensity.put(key[:4], warmed.intensity)
        on_preview_seconds(warmed.preview_seconds)

    warm.request(key, job, done)


class IntensityCache:
    """The intensity statistics of the last (image, model, preset): computed once by the
    warm-up or the first preview, reused by the next previews."""

    def __init__(self) -> None:
        self._entry: dict[tuple, Any] = {}

    def __len__(self) -> int:
        return len(self._entry)

    @staticmethod
    def key(image_name: str, volume: Any, folder: Any, options: Any) -> tuple:
        return (image_name, id(volume.data), str(folder), options.modality)

    def put(self, key: tuple, value: Any) -> None:
        self._entry = {key: value}

    def get(self, model: Any, req: Any, cfg: Any) -> Any:
        """The statistics for ``req`` (computed here, in the job, when not cached)."""
        from ..inference import predictor

        key = self.key(req.image_name, req.volume, req.model_folder, req.config)
        if key not in self._entry:
            self.put(key, predictor.intensity_for(model, req.volume, cfg))
        return self._entry[key]


_prepared: list = []


def _warm_units() -> None:
    """Build pint's unit registry, which napari creates lazily inside the first layer's
    constructor on the GUI thread (~1 s of pure Python the first time, then cached)."""
    try:
        from napari.utils._units import get_unit_registry

        get_unit_registry().Unit("mm")
    except Exception as exc:  # an optional speed-up (a private napari helper)
        logger.debug("pint's registry not warmed: %s", exc)


def prepare_in_background() -> None:
    """Once per process, as soon as the widget exists: import torch and the inference code, and
    napari's first-layer modules (:func:`~._results.warm_layer_machinery`), on the compute
    thread, queued behind real work. Nothing waits for it; it only moves these one-time costs
    (torch: seconds on a small machine) away from the moment the first scan is opened, when
    the info line and the warm-up would otherwise pay them while napari draws the new layer."""
    if _prepared:
        return
    from ._results import warm_layer_machinery

    def job() -> None:
        warm_layer_machinery()
        _warm_units()
        try:
            from ..inference import predictor  # noqa: F401 (torch)
            from ..model import checkpoint  # noqa: F401
        except ImportError as exc:  # reported properly when a model is used
            logger.debug("inference code not importable yet: %s", exc)

    _prepared.append(compute_thread().submit_background(job))
