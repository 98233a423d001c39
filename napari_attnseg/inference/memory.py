"""Plan a sliding-window run before starting it: windows, peak memory, time, and a decision.

The estimate counts the arrays the run holds at once (padded input, the class accumulator, the
weight map, the cropped float32 probabilities and the labels) plus a working set per window for
the network's activations. Decisions, in order of preference:

* ``"ok"``: everything fits (under ``headroom`` of the free memory) as planned;
* ``"stitch_on_cpu"``: the device is a GPU whose free memory cannot hold the accumulator, so
  the blending happens in host memory (only the batches live on the GPU);
* ``"fp16_accumulator"``: host memory is short, a float16 accumulator halves the largest array;
* ``"refuse"``: it cannot fit; the message says how much is needed and what to do.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from .sliding_window import window_grid

logger = logging.getLogger(__name__)

DECISIONS = ("ok", "stitch_on_cpu", "fp16_accumulator", "refuse")

#: float32 activations kept per patch voxel by a (16..256)-channel U-Net at inference (rough).
ACTIVATION_FLOATS_PER_VOXEL = 96


def available_memory_bytes() -> int:
    """Free host memory (psutil when installed, else the OS page counters)."""
    try:
        import psutil
    except ImportError:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return int(psutil.virtual_memory().available)


def _fmt(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


@dataclass(frozen=True)
class MemoryPlan:
    """What a run will cost and how it will be done."""

    n_windows: int
    n_forward: int
    peak_bytes: int
    available_bytes: int
    seconds: float | None
    decision: str
    message: str
    accumulate_on_cpu: bool
    fp16_accumulator: bool
    patch: tuple[int, ...]

    def summary(self) -> str:
        t = "" if self.seconds is None else f", about {self.seconds:.1f} s"
        return f"{self.n_windows} windows, peak about {_fmt(self.peak_bytes)}{t}"


def plan_memory(
    shape: Sequence[int],
    patch_size: Sequence[int],
    overlap: float,
    num_classes: int,
    batch_size: int,
    one_patch_seconds: float | None = None,
    *,
    in_channels: int = 1,
    divisor: int | Sequence[int] = 1,
    tta: bool = False,
    device_type: str = "cpu",
    available_bytes: int | None = None,
    device_free_bytes: int | None = None,
    headroom: float = 0.7,
) -> MemoryPlan:
    """Estimate a run over an image of spatial ``shape``; see the module docstring."""
    shape = tuple(int(s) for s in shape)
    patch, padded, corners = window_grid(shape, patch_size, overlap, divisor)
    n_windows = len(corners)
    n_spatial_model = len(patch_size)
    n_flips = 2 ** n_spatial_model if tta else 1
    n_forward = n_windows * n_flips

    n_pad = 1
    for s in padded:
        n_pad *= s
    n_out = 1
    for s in shape:
        n_out *= s
    n_patch = 1
    for p in patch:
        n_patch *= p
    f32 = 4
    input_b = in_channels * n_pad * f32
    acc32 = num_classes * n_pad * f32
    weight_b = n_pad * f32
    output_b = num_classes * n_out * f32 + n_out  # probabilities + uint8 labels
    work_b = batch_size * n_patch * f32 * (ACTIVATION_FLOATS_PER_VOXEL + 2 * num_classes)
    host_peak = input_b + acc32 + weight_b + output_b + work_b
    avail = available_memory_bytes() if available_bytes is None else int(available_bytes)
    budget = headroom * avail

    seconds = None if one_patch_seconds is None else float(one_patch_seconds) * n_forward * 1.05
    on_cpu, fp16 = True, False
    decision = "ok"
    gpu = device_type not in ("cpu",)
    if gpu and device_free_bytes is not None:
        on_gpu = acc32 + weight_b + work_b
        if on_gpu <= headroom * device_free_bytes:
            on_cpu = False
        else:
            decision = "stitch_on_cpu"
    elif gpu:
        on_cpu = False
    peak = host_peak
    if peak > budget:
        acc16 = acc32 // 2
        peak16 = host_peak - acc32 + acc16
        if peak16 <= budget:
            decision, fp16, peak = "fp16_accumulator", True, peak16
        else:
            decision, peak = "refuse", peak16
    if decision == "ok":
        message = f"{n_windows} windows; about {_fmt(peak)} of {_fmt(avail)} free memory"
    elif decision == "stitch_on_cpu":
        message = (f"{n_windows} windows; blending in host memory because the GPU has "
                   f"{_fmt(device_free_bytes or 0)} free")
    elif decision == "fp16_accumulator":
        message = (f"{n_windows} windows; blending in float16 to fit {_fmt(peak)} into "
                   f"{_fmt(avail)} free memory")
    else:
        message = (
            f"This run needs about {_fmt(peak)} of memory but only {_fmt(avail)} is free "
            f"(image {shape}, {num_classes} classes, {n_windows} windows of {patch}). "
            "Crop the image to the region of interest, close other programs, or use a "
            "smaller batch size."
        )
    logger.debug("memory plan: %s", message)
    return MemoryPlan(
        n_windows=n_windows, n_forward=n_forward, peak_bytes=int(peak), available_bytes=avail,
        seconds=seconds, decision=decision, message=message, accumulate_on_cpu=on_cpu,
        fp16_accumulator=fp16, patch=tuple(patch),
    )
