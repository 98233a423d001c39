"""Segment a :class:`~napari_attnseg.volume.Volume` with a loaded model: the one code path used by
the Segment widget, ``attnseg predict`` and scripts.

Pipeline: check the input against the model (dimensions, channels) -> pick the device ->
intensity preset -> (3D models) reorient to canonical and resample to the model's spacing;
(2D models) put the axes in world order, so slices run along the axis closest to S (axial
slices whatever the storage order: a PSR scan is not segmented in sagittal slices) with the
in-plane axes as the viewer shows them -> plan memory -> Gaussian-blended sliding window (2D
models slice by slice) -> undo resampling/reorientation -> float32 probabilities (C, *spatial)
on the ORIGINAL grid and uint8/uint16 labels, with provenance.

A CUDA out-of-memory error restarts the window loop with blending in host memory and half the
batch, down to one window per batch, before giving up with a message.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import __version__
from .._options import choose
from .._progress import Job, Progress, drain
from ..errors import ModelError
from ..orientation import axis_permutation
from ..volume import SPACING_NOMINAL, Volume
from .backend import DEFAULT_BACKEND, check_backend, network_for
from .device import (DEVICES, PRECISIONS, autocast_context, device_summary, resolve_precision,
                     select_device)
from .memory import MemoryPlan, plan_memory
from .preprocess import (
    PRESETS,
    IntensityParams,
    Reorientation,
    canonical_reorientation,
    from_canonical,
    intensity_params,
    needs_resampling,
    resample,
    resampled_shape,
    resolve_preset,
    reoriented_spacing,
    stack_context,
    to_canonical,
)
from .preprocess import inplane_shape, model_inplane_factors, resize_inplane, slice_reorientation
from .sliding_window import count_windows, labels_from_probabilities, sliding_window_job

logger = logging.getLogger(__name__)

#: CPU default batch: windows per forward pass up to this many voxels (see PredictConfig)
CPU_BATCH_PIXELS = 128 * 128 * 4
DEFAULT_PATCH_2D = (256, 256)
DEFAULT_PATCH_3D = (96, 96, 96)


@dataclass(frozen=True)
class PredictConfig:
    """User-facing inference options (frozen: snapshot them on the GUI thread)."""

    overlap: float = 0.5
    #: windows per forward pass; None = 4 on GPUs, and on the CPU as many windows as make
    #: CPU_BATCH_PIXELS (1 for slices of 256x256 and more, 4 for 128x128: batching small
    #: windows was 0.74x the time of one at a time, bigger ones gained nothing;
    #: benchmarks/bench_cpu_batch.py).
    batch_size: int | None = None
    #: mirror test-time augmentation; None: what the model declares (``ModelSpec.tta``)
    tta: bool | None = None
    device: str = "auto"
    precision: str = "auto"  #: "auto": bf16 on a CPU with native bf16, else fp32 (device.py)
    modality: str | None = None  #: intensity preset override: "CT", "MR", "US" (None: auto)
    #: "slice": 2D models see each whole slice in one window (fully convolutional; fewer, larger
    #: windows: ~3x faster on CPU); "patch": windows of the model's training patch size;
    #: "auto": "slice" for 2D models when a slice has at most MAX_SLICE_WINDOW pixels.
    window: str = "auto"
    #: "torch", "onnxruntime" or "auto" (ONNX Runtime on the CPU in fp32 when installed):
    #: :mod:`.backend`; the provenance's "backend" says which one ran.
    backend: str = DEFAULT_BACKEND

    def __post_init__(self) -> None:
        object.__setattr__(self, "window", choose(self.window, WINDOWS, "window"))
        object.__setattr__(self, "backend", check_backend(self.backend))
        if self.tta is not None and not isinstance(self.tta, bool):
            raise ValueError(f"tta must be True, False or None (the model's default), got {self.tta!r}")
        if not 0.0 <= float(self.overlap) < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        object.__setattr__(self, "overlap", float(self.overlap))
        if self.batch_size is not None:
            if isinstance(self.batch_size, bool) or int(self.batch_size) != self.batch_size \
                    or self.batch_size < 1:
                raise ValueError(f"batch_size must be a positive integer, got {self.batch_size}")
            object.__setattr__(self, "batch_size", int(self.batch_size))
        dev = str(self.device)
        base, sep, idx = dev.partition(":")
        object.__setattr__(self, "device", choose(base, DEVICES, "device") + sep + idx)
        object.__setattr__(self, "precision", choose(self.precision, PRECISIONS, "precision"))
        if self.modality in ("", "auto"):
            object.__setattr__(self, "modality", None)
        elif self.modality is not None:
            object.__setattr__(self, "modality", choose(self.modality, PRESETS, "modality preset"))

    def batch_for(self, device: torch.device, window: tuple[int, ...] | None = None) -> int:
        """The batch size used on ``device`` for windows of shape ``window`` (``batch_size``,
        or the device's default)."""
        if self.batch_size is not None:
            return self.batch_size
        if device.type != "cpu":
            return 4
        pixels = math.prod(window) if window else CPU_BATCH_PIXELS
        return max(1, min(4, CPU_BATCH_PIXELS // max(1, pixels)))


@dataclass(frozen=True)
class Prediction:
    """Result of a run, on the input's original grid."""

    probabilities: np.ndarray  #: float32 (C, *spatial), sums to 1 over C
    labels: np.ndarray  #: (*spatial) uint8 (uint16 beyond 256 classes)
    device: str
    n_windows: int
    seconds: float
    provenance: dict[str, Any] = field(default_factory=dict)

    def foreground_probability(self) -> np.ndarray:
        """1 - P(background): one map for any number of classes (the class 1 map for 2 classes)."""
        return (1.0 - self.probabilities[0]).astype(np.float32)


# --------------------------------------------------------------------------- model facts
def _net_config(model: Any) -> Any:
    return getattr(model.network, "config", None)


def model_dims(model: Any) -> int:
    cfg = _net_config(model)
    if cfg is not None:
        return int(cfg.spatial_dims)
    patch = getattr(model.spec, "patch_size", None)
    return len(patch) if patch else 2


def model_in_channels(model: Any) -> int:
    cfg = _net_config(model)
    return int(cfg.in_channels) if cfg is not None else 1


def model_context(model: Any) -> int:
    """Neighbouring slices a side a 2.5D model also sees (``spec.context_slices``; 0: none)."""
    return int(getattr(getattr(model, "spec", None), "context_slices", 0) or 0)


def model_classes(model: Any) -> int:
    cfg = _net_config(model)
    if cfg is not None:
        return int(cfg.out_channels)
    return max(2, len(getattr(model.spec, "label_names", ()) or ()))


def model_divisor(model: Any) -> int:
    return int(getattr(model.network, "divisor", 1) or 1)


WINDOWS = ("auto", "slice", "patch")
#: Largest slice (pixels) that "auto" runs as one window (memory of one 2D forward stays small).
MAX_SLICE_WINDOW = 1024 * 1024


def window_patch(model: Any, grid_shape: tuple[int, ...], config: PredictConfig) -> tuple[int, ...]:
    """The window a run uses: the model's patch, or for 2D models in "slice"/"auto" mode the
    whole in-plane grid rounded up to the network's divisor."""
    patch = model_patch(model)
    if model_dims(model) != 2 or config.window == "patch":
        return patch
    plane = tuple(int(s) for s in grid_shape[-2:])
    if config.window == "auto" and plane[0] * plane[1] > MAX_SLICE_WINDOW:
        return patch
    div = model_divisor(model)
    return tuple(-(-s // div) * div for s in plane)


def model_patch(model: Any) -> tuple[int, ...]:
    patch = getattr(model.spec, "patch_size", None)
    dims = model_dims(model)
    if patch:
        patch = tuple(int(p) for p in patch)
        if len(patch) != dims:
            raise ModelError(
                f"model '{model_label(model)}': patch size {patch} does not match its "
                f"{dims}D network; fix patch_size in {getattr(model, 'folder', '')}/config.json"
            )
        return patch
    return DEFAULT_PATCH_2D if dims == 2 else DEFAULT_PATCH_3D


def model_label(model: Any) -> str:
    spec = model.spec
    name = getattr(spec, "name", "") or "model"
    version = getattr(spec, "version", None)
    return f"{name}@{version}" if version is not None else str(name)


# --------------------------------------------------------------------------- input checks
def as_volume(model: Any, image: Volume | np.ndarray) -> Volume:
    """Check ``image`` against ``model`` and return it as a Volume; :class:`ModelError` with a
    fix-it message when it cannot be segmented by this model."""
    dims = model_dims(model)
    cin = model_in_channels(model)
    label = model_label(model)
    shape = tuple(np.shape(image.data if isinstance(image, Volume) else image))
    if cin != 2 * model_context(model) + 1:  # a 2.5D model's extra channels are neighbours
        raise ModelError(
            f"model '{label}' expects {cin} input channels (e.g. several MR contrasts stacked) "
            f"but the image {shape} has 1 channel; this version segments single-channel images: "
            "pick a model trained with in_channels=1"
        )
    ndim = len(shape)
    if ndim not in (2, 3):
        what = "(y, x) images, or (z, y, x) volumes slice by slice" if dims == 2 else \
            "(z, y, x) volumes"
        raise ModelError(
            f"model '{label}' is a {dims}D model that segments {what}, but the image has {ndim} "
            f"dimensions {shape}; select one channel or time point first (e.g. split the "
            "layer's channel axis with napari's 'Split Stack')"
        )
    if dims == 3 and ndim == 2:
        raise ModelError(
            f"model '{label}' is a 3D model but the image is a 2D slice {shape}; open the whole "
            "volume or pick a 2D model"
        )
    if isinstance(image, Volume):
        return image
    return Volume(data=np.asarray(image), spacing=(1.0,) * ndim, header={SPACING_NOMINAL: True})


# --------------------------------------------------------------------------- preparation
@dataclass(frozen=True)
class _Prepared:
    image: np.ndarray  # (1, *model-grid spatial) float32
    reo: Reorientation | None
    canonical_shape: tuple[int, ...]
    resampled: bool
    intensity: IntensityParams
    slicewise: bool = False  # a 2D model (renormalize after an in-plane zoom)


def slice_order(volume: Volume) -> tuple[int, ...]:
    """The axis order 2D models see ``volume`` in: world order (array axis ``perm[0]`` is the
    one closest to world S, so a 3D volume is cut in axial slices), as the viewer shows it."""
    return axis_permutation(volume.direction)


def slice_axis(volume: Volume) -> int:
    """The array axis along which 2D models (and :func:`predict_slice`) take slices."""
    return slice_order(volume)[0] if volume.ndim == 3 else 0


def _in_slice_order(volume: Volume) -> tuple[Volume, tuple[int, ...]]:
    """``volume`` transposed to :func:`slice_order` (a view; the same volume when in order)."""
    perm = slice_order(volume)
    if perm == tuple(range(volume.ndim)):
        return volume, perm
    d = np.asarray(volume.direction)
    return Volume(data=np.transpose(volume.data, perm),
                  spacing=tuple(volume.spacing[p] for p in perm), origin=volume.origin,
                  direction=d[:, list(perm)], modality=volume.modality,
                  source=volume.source, header=volume.header), perm


def _preset_and_norm(model: Any, volume: Volume, config: PredictConfig) -> tuple[str, dict]:
    spec = model.spec
    norm = dict(getattr(spec, "normalization", None) or {})
    model_modality = getattr(spec, "modality", "") or ""
    preset = resolve_preset(config.modality, norm, model_modality, volume.modality)
    if config.modality and config.modality != resolve_preset(None, norm, model_modality,
                                                             volume.modality):
        norm = {}  # the user overrode the model's preset: its clip/statistics no longer apply
    return preset, norm


def intensity_for(model: Any, volume: Volume, config: PredictConfig) -> IntensityParams:
    """The intensity normalization a run would use (cache it for repeated slice previews)."""
    preset, norm = _preset_and_norm(model, volume, config)
    return intensity_params(volume.data, preset, norm)


def input_warnings(model: Any, volume: Volume | np.ndarray,
                   config: PredictConfig | None = None) -> list[str]:
    """What about this input would give wrong labels without an error, in words (empty when
    nothing): today, a model that windows Hounsfield units given an image that is not in HU
    (:func:`~napari_attnseg.io.modality.ct_intensity_problem`). ``attnseg predict`` logs these,
    the Segment widget's info line shows them, and a prediction's provenance keeps them."""
    from ..io.modality import ct_intensity_problem

    config = config or PredictConfig()
    volume = as_volume(model, volume)
    out = []
    preset, norm = _preset_and_norm(model, volume, config)
    if preset == "CT" and not norm.get("percentiles"):
        problem = ct_intensity_problem(volume.data)
        if problem:
            out.append(f"not in Hounsfield units: {problem}")
    return out


def _prepare(model: Any, volume: Volume, intensity: IntensityParams) -> _Prepared:
    data = intensity.apply(volume.data)
    np.nan_to_num(data, copy=False, nan=(intensity.lo - intensity.shift) / intensity.scale)
    if model_dims(model) == 2:
        reo2 = slice_reorientation(model.spec, volume)  # axial, and as the model was trained
        if not reo2.is_identity:
            data = np.ascontiguousarray(to_canonical(data, reo2))
        zoomed = inplane_shape(data.shape, inplane_factors(model, volume))
        resized = zoomed != data.shape  # the model works at another in-plane resolution
        net_in = resize_inplane(data, zoomed) if resized else data
        # (C, *grid): the slice alone (C = 1), or with its neighbours as channels (2.5D)
        net_in = stack_context(net_in, model_context(model))
        return _Prepared(net_in, reo2, data.shape, resized, intensity, slicewise=True)
    reo = canonical_reorientation(volume.direction)
    spacing = reoriented_spacing(volume.spacing, reo)
    if not reo.is_identity:
        data = np.ascontiguousarray(to_canonical(data, reo))
    canonical_shape = data.shape
    target = getattr(model.spec, "target_spacing", None)
    resampled = False
    if target is not None and needs_resampling(spacing, target):
        data = resample(data, resampled_shape(data.shape, spacing, target), order=1)
        resampled = True
    return _Prepared(data[None], reo, canonical_shape, resampled, intensity)


def inplane_factors(model: Any, volume: Volume) -> tuple[float, float]:
    """How much a 2D model resizes ``volume``'s slices (rows, columns): its ``inplane_zoom``,
    times, where it declares ``inplane_spacing`` and the volume's pixel size is known (not
    :func:`~napari_attnseg.volume.spacing_is_nominal`), the factor that brings a pixel size
    outside that range to its nearest end (:func:`~.preprocess.inplane_factors`; training and
    fine-tuning resize their slices by the same factors)."""
    return model_inplane_factors(model.spec, volume, slice_reorientation(model.spec, volume).perm)


def rescale_note(model: Any, volume: Volume) -> str:
    """"" unless the model's declared pixel sizes make it resize this volume's slices; then
    what happens, in words (the CLI logs it, the Segment info line shows it)."""
    rng = getattr(model.spec, "inplane_spacing", None)
    if model_dims(model) != 2 or rng is None:
        return ""
    zoom = float(getattr(model.spec, "inplane_zoom", 1.0) or 1.0)
    fy, fx = inplane_factors(model, volume)
    if (fy, fx) == (zoom, zoom):
        return ""
    order = slice_reorientation(model.spec, volume).perm
    pixel = " x ".join(f"{float(volume.spacing[a]):.3g}" for a in order[-2:])
    trained = " x ".join(f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}" for lo, hi in zip(rng[0::2], rng[1::2]))
    return (f"{pixel} mm pixels, outside the {trained} mm the model was trained on: "
            f"slices resized x{fy / zoom:.3g} x {fx / zoom:.3g} for the network, labels on the scan's grid")


def resize_probabilities_inplane(probs: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(C, [Z,] h, w) -> (C, [Z,] H, W): bilinear per slice, corners aligned (the same as
    ``resample(order=1)``'s ``grid_mode=False`` zoom, to float rounding, at a fraction of its
    time: torch's kernel, no pass along Z), renormalized to sum 1 over the classes."""
    arr = np.ascontiguousarray(probs, dtype=np.float32)
    size = tuple(int(s) for s in shape[-2:])
    # every (class, slice) plane is one channel: no transposes, the result already (C, [Z,] H, W)
    t = torch.from_numpy(arr).reshape(1, -1, *arr.shape[-2:])
    out = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=True)
    out = out.reshape(arr.shape[:-2] + size)
    out /= out.sum(0, keepdim=True).clamp_min(1e-12)  # (bilinear keeps the sum; rounding)
    return out.numpy()


def _restore(probs: np.ndarray, prep: _Prepared) -> np.ndarray:
    if prep.resampled:
        if prep.slicewise:  # 2D model with an in-plane zoom (renormalized)
            probs = resize_probabilities_inplane(probs, prep.canonical_shape)
        else:
            probs = resample(probs, prep.canonical_shape, order=1, channels_first=True)
    if prep.reo is not None and not prep.reo.is_identity:
        probs = from_canonical(probs, prep.reo, channels_first=True)
    return np.ascontiguousarray(probs, dtype=np.float32)


def model_grid_shape(model: Any, volume: Volume) -> tuple[int, ...]:
    """Spatial shape the network will see (after reorientation and resampling)."""
    if model_dims(model) == 2:
        return inplane_shape(tuple(volume.shape[p] for p in slice_reorientation(model.spec, volume).perm),
                             inplane_factors(model, volume))
    reo = canonical_reorientation(volume.direction)
    shape = tuple(volume.shape[p] for p in reo.perm)
    spacing = reoriented_spacing(volume.spacing, reo)
    target = getattr(model.spec, "target_spacing", None)
    if target is not None and needs_resampling(spacing, target):
        shape = resampled_shape(shape, spacing, target)
    return shape


def tta_note(model: Any, config: PredictConfig) -> str:
    """"" unless the caller asked for mirror TTA and the model cannot take it; then why, in
    words (``attnseg predict`` logs it, the Segment info line shows it)."""
    if config.tta and not getattr(getattr(model, "spec", None), "mirrors", True):
        return ("mirror TTA is off: this model was trained without mirrored images (its labels "
                "name sides, or its training did not flip), so a flipped image is one it never saw")
    return ""


def effective_tta(model: Any, config: PredictConfig) -> bool:
    """Whether a run mirrors: the caller's ``config.tta``, else what the model declares."""
    spec = getattr(model, "spec", None)
    if not getattr(spec, "mirrors", True):
        return False  # trained without mirrored images: flipped ones are images it never saw
    if config.tta is not None:
        return bool(config.tta)
    return bool(getattr(spec, "tta", False))


def plan_prediction(model: Any, volume: Volume | np.ndarray, config: PredictConfig | None = None,
                    one_patch_seconds: float | None = None,
                    device: torch.device | None = None) -> MemoryPlan:
    """Windows, memory and time for a run, without running it (the widget shows this first)."""
    config = config or PredictConfig()
    volume = as_volume(model, volume)
    device = device or select_device(config.device)
    free = None
    if device.type == "cuda":
        free = int(torch.cuda.mem_get_info(device)[0])
    grid = model_grid_shape(model, volume)
    window = window_patch(model, grid, config)
    return plan_memory(
        grid, window, config.overlap,
        model_classes(model), config.batch_for(device, window), one_patch_seconds,
        in_channels=model_in_channels(model), divisor=model_divisor(model),
        tta=effective_tta(model, config), device_type=device.type, device_free_bytes=free,
    )


def _provenance(model: Any, config: PredictConfig, volume: Volume, intensity: IntensityParams,
                device: torch.device, n_windows: int, seconds: float,
                extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    spec = model.spec
    prov = {
        "kind": "attnseg prediction",
        "model_id": getattr(model, "model_id", model_label(model)),
        "model_name": getattr(spec, "name", ""),
        "model_version": getattr(spec, "version", None),
        "weights_sha256": getattr(model, "weights_sha256", ""),
        "model_folder": str(getattr(model, "folder", "")),
        "label_names": {str(k): v for k, v in (getattr(spec, "label_names", None) or {}).items()},
        "config": dataclasses.asdict(config),
        "intensity": intensity.as_dict(),
        "device": str(device),
        "n_windows": int(n_windows),
        "seconds": round(float(seconds), 4),
        "source": volume.source,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "attnseg_version": __version__,
    }
    if extra:
        prov.update(extra)
    return prov


# --------------------------------------------------------------------------- running
def _network_on(model: Any, device: torch.device, config: PredictConfig) -> tuple[Any, str]:
    """(network on ``device``, backend name) for ``config.backend``."""
    net, backend = network_for(model, device, config)
    if backend != "torch":
        return net, backend
    first = next(net.parameters(), None)
    if first is not None and first.device != device:
        net.to(device)
    net.eval()
    return net, backend


def _windows_with_oom_retry(net: torch.nn.Module, prep: _Prepared, model: Any,
                            config: PredictConfig, device: torch.device,
                            plan: MemoryPlan) -> Job[np.ndarray]:
    precision = config.precision  # resolved by predict_job ("auto" -> fp32 / bf16)

    def predict_fn(x: torch.Tensor) -> torch.Tensor:
        with autocast_context(device, precision):
            out = net(x)
        if isinstance(out, (list, tuple)):  # deep-supervision heads: keep the full resolution
            out = out[0]
        return out

    window = window_patch(model, prep.image.shape[1:], config)
    batch = config.batch_for(device, window)
    acc_device = torch.device("cpu") if plan.accumulate_on_cpu else device
    acc_dtype = torch.float16 if plan.fp16_accumulator else torch.float32
    while True:
        try:
            return (yield from sliding_window_job(
                predict_fn, prep.image, window, overlap=config.overlap,
                batch_size=batch, gaussian=True, num_classes=model_classes(model),
                accumulate_device=acc_device, accumulator_dtype=acc_dtype, device=device,
                divisor=model_divisor(model), tta=effective_tta(model, config),
            ))
        except torch.cuda.OutOfMemoryError as exc:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if batch == 1 and acc_device.type == "cpu":
                raise ModelError(
                    f"the GPU ran out of memory even with one window per batch and blending in "
                    f"host memory ({exc}); choose device 'cpu' or a model with a smaller patch"
                ) from exc
            batch = max(1, batch // 2)
            acc_device = torch.device("cpu")
            logger.warning("CUDA out of memory: retrying with batch %d, blending on the CPU", batch)
            yield Progress(0, 0, "retrying", f"GPU out of memory: retrying with batch {batch} "
                           "and blending in host memory")


def predict_job(model: Any, volume: Volume | np.ndarray, config: PredictConfig | None = None,
                *, intensity: IntensityParams | None = None,
                check_input: bool = True, views: bool = True) -> Job[Prediction]:
    """Segment ``volume``; yields progress per batch; returns a :class:`Prediction`.
    ``check_input=False`` skips :func:`input_warnings` and the resize note (a part of a volume
    already checked whole: the slice preview's slab, the uncertainty's mirrored copies).
    ``views=False``: the model alone, without its further views (:mod:`.views`; the preview)."""
    config = config or PredictConfig()
    volume = as_volume(model, volume)
    device = select_device(config.device)
    t0 = time.perf_counter()
    yield Progress(0, 0, "preparing", f"preparing on {device_summary(device)}")
    intensity = intensity or intensity_for(model, volume, config)
    warnings = input_warnings(model, volume, config) if check_input else []
    for message in warnings:
        logger.warning("%s: %s", volume.source or "the image", message)
    note = tta_note(model, config) if check_input else ""
    if note:
        logger.warning("%s: %s", volume.source or "the image", note)
    rescale = rescale_note(model, volume) if check_input else ""
    if rescale:
        logger.info("%s: %s", volume.source or "the image", rescale)
    prep = _prepare(model, volume, intensity)
    net, backend = _network_on(model, device, config)
    plan = plan_prediction(model, volume, config, device=device)
    if plan.decision == "refuse":
        raise ModelError(plan.message)
    precision = "fp32" if backend == "onnxruntime" else resolve_precision(config.precision, device)
    probs = yield from _windows_with_oom_retry(
        net, prep, model, dataclasses.replace(config, precision=precision), device, plan)
    probs = _restore(probs, prep)
    n_views = len(getattr(model, "views", ()) or ()) if views and volume.ndim == 3 else 0
    if n_views:
        from .views import averaged

        probs = yield from averaged(model, volume, probs, config, predict_job)
    labels = labels_from_probabilities(probs)
    steps = tuple(getattr(getattr(model, "spec", None), "postprocess", ()) or ())
    if steps:
        yield Progress(0, 0, "post-processing", f"post-processing: {', '.join(steps)}")
        labels = postprocessed(labels, steps, model_classes(model),
                               slice_axis(volume) if labels.ndim == 3 else 0)
    seconds = time.perf_counter() - t0
    extra = {"memory_plan": plan.decision, "backend": backend,
             "precision": precision, "tta": effective_tta(model, config),
             **({"postprocess": list(steps)} if steps else {}),
             **({"views": [v.model_id for v, _, _ in model.views]} if n_views else {}),
             **({"input_warnings": warnings} if warnings else {}),
             **({"inplane_factors": list(inplane_factors(model, volume))} if rescale else {})}
    prov = _provenance(model, config, volume, intensity, device, plan.n_windows, seconds, extra)
    return Prediction(probs, labels, device_summary(device), plan.n_windows, seconds, prov)


def postprocessed(labels: np.ndarray, steps: tuple[str, ...], n_classes: int, axis: int = 0) -> np.ndarray:
    """``labels`` with the model's post-processing ``steps`` applied to each foreground class,
    per 2D slice along ``axis`` (the axis a 2D model slices; ignored for a 2D label map)."""
    from .postprocess import apply_postprocess

    moved = np.moveaxis(labels, axis, 0) if labels.ndim == 3 else labels
    for c in range(1, n_classes):
        moved = apply_postprocess(moved, steps, label=c)
    out = np.moveaxis(moved, 0, axis) if labels.ndim == 3 else moved
    return np.ascontiguousarray(out, dtype=labels.dtype)


def predict(model: Any, volume: Volume | np.ndarray, config: PredictConfig | None = None) -> Prediction:
    """Blocking :func:`predict_job`."""
    return drain(predict_job(model, volume, config))


def slice_volume(volume: Volume, index: int) -> Volume:
    """The 2D slice ``index`` along axis 0 as a Volume (geometry of its in-plane axes)."""
    if volume.ndim != 3:
        return volume
    if not 0 <= index < volume.shape[0]:
        raise ValueError(f"slice index {index} is outside 0..{volume.shape[0] - 1}")
    d = np.asarray(volume.direction)
    origin = np.asarray(volume.origin) + d[:, 0] * volume.spacing[0] * index
    # keep the in-plane axes' world components along world axes 1, 2 (an oblique scan's
    # normalized: their signs tell a model which way the patient lies)
    inplane = d[1:, 1:]
    if not np.allclose(d[0, 1:], 0):
        inplane = inplane / np.maximum(np.linalg.norm(inplane, axis=0), 1e-12)
    return Volume(data=volume.data[index], spacing=volume.spacing[1:], origin=origin[1:],
                  direction=inplane,
                  modality=volume.modality, source=volume.source, header=volume.header)


def predict_slice(model: Any, volume: Volume | np.ndarray, index: int,
                  config: PredictConfig | None = None, *,
                  intensity: IntensityParams | None = None) -> Prediction:
    """Current-slice preview: the prediction for slice ``index`` along :func:`slice_axis`
    (axis 0 of a layer, whose axes are in world order; the axial axis of a stored volume), with
    the intensity normalization of the whole volume (so it matches the whole-volume run).

    2D models run on that one slice; 3D models on a slab around it (the middle slice kept).
    Returns probabilities (C, a, b) and labels (a, b): the slice as
    ``np.take(whole_volume_result, index, axis=slice_axis(volume))`` (the other two axes in
    array order).
    """
    config = config or PredictConfig()
    volume = as_volume(model, volume)
    t0 = time.perf_counter()
    intensity = intensity or intensity_for(model, volume, config)
    if volume.ndim == 2:
        result = drain(predict_job(model, volume, config, intensity=intensity))
        return result
    stored_shape = volume.shape
    volume, perm = _in_slice_order(volume)
    if not 0 <= index < volume.shape[0]:
        raise ValueError(f"slice index {index} is outside 0..{volume.shape[0] - 1} (axis "
                         f"{perm[0]} of {stored_shape}, the axial one)")
    if model_dims(model) == 2 and not model_context(model):
        sub = slice_volume(volume, index)
        keep = None
    else:  # a slab around the slice: a 3D model's patch, a 2.5D model's neighbours
        half = model_context(model) if model_dims(model) == 2 else int(math.ceil(max(model_patch(model)) / 2))
        z0, z1 = max(0, index - half), min(volume.shape[0], index + half + 1)
        d = np.asarray(volume.direction)
        origin = np.asarray(volume.origin) + d[:, 0] * volume.spacing[0] * z0
        sub = Volume(data=volume.data[z0:z1], spacing=volume.spacing, origin=origin,
                     direction=d, modality=volume.modality, source=volume.source,
                     header=volume.header)
        keep = index - z0
    # a model's further views (a coronal network) need the whole volume: the preview is the model's
    res = drain(predict_job(model, sub, config, intensity=intensity, check_input=False, views=False))
    probs, labels = res.probabilities, res.labels
    if keep is not None:
        probs, labels = probs[:, keep], labels[keep]
    if perm[1] > perm[2]:  # in-plane axes back in array order
        probs, labels = probs.transpose(0, 2, 1), labels.T
    seconds = time.perf_counter() - t0
    prov = dict(res.provenance, slice_index=int(index), seconds=round(seconds, 4))
    return Prediction(np.ascontiguousarray(probs), np.ascontiguousarray(labels), res.device,
                      res.n_windows, seconds, prov)


def count_model_windows(model: Any, volume: Volume, config: PredictConfig) -> int:
    """Number of forward passes a whole-volume run needs (without TTA)."""
    grid = model_grid_shape(model, volume)
    return count_windows(grid, window_patch(model, grid, config), config.overlap,
                         model_divisor(model))


@dataclass(frozen=True)
class WarmUp:
    """What :func:`warm_up` leaves for the interactive path."""

    intensity: IntensityParams  #: the run's intensity normalization (``predict_slice(intensity=)``)
    preview_seconds: float  #: how long the (warm) preview took: a good guess for the next one


def warm_up(model: Any, volume: Volume | np.ndarray, config: PredictConfig | None = None, *,
            index: int | None = None) -> WarmUp:
    """Prepare ``model`` for fast interactive previews of ``volume``.

    The first forward pass at a new input shape costs about twice a steady one on the CPU
    (oneDNN builds its kernels per shape; batch-norm folding and channels-last weights are
    cached on first use). This runs the preview path on slice ``index`` (default: the middle
    one) with the volume's real shape, twice (the second run is timed), and discards the
    results, so the user's first preview runs at the steady-state speed. Meant for a background
    thread when a model and an image are chosen; it costs two previews.
    """
    config = config or PredictConfig()
    volume = as_volume(model, volume)
    intensity = intensity_for(model, volume, config)
    if volume.ndim == 2:
        index = 0
    else:
        n = volume.shape[slice_axis(volume)]
        index = n // 2 if index is None else int(np.clip(index, 0, n - 1))
    predict_slice(model, volume, index, config, intensity=intensity)
    t0 = time.perf_counter()
    predict_slice(model, volume, index, config, intensity=intensity)
    return WarmUp(intensity, time.perf_counter() - t0)
