"""Sliding-window inference with Gaussian blending, as a cancellable progress generator.

The image (channels first, float32) is padded so every window fits, cut into overlapping
windows, run through ``predict_fn`` in batches, and the soft-maxed outputs are blended with
Gaussian importance weights (sigma = patch / 8, as in nnU-Net) that are clamped away from zero so
every voxel has a positive weight. The blended map is cropped back to the input shape.

A patch size with one dimension fewer than the image runs a 2D model slice by slice along axis 0
(the acquisition axis): windows are (1, py, px) and the batch given to ``predict_fn`` is
(B, C, py, px), so consecutive slices share batches.

Each batch yields a :class:`~napari_attnseg._progress.Progress`; closing the generator stops it
at the next batch boundary. Torch grad / inference-mode state is entered and left inside each
batch (never held across a ``yield``), so a consumer thread never inherits it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .._progress import Job, Progress

PredictFn = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- geometry
def compute_steps(size: int, patch: int, overlap: float) -> list[int]:
    """Window start positions along one axis (nnU-Net's rule: evenly spread, first at 0 and
    last at ``size - patch``, step at most ``patch * (1 - overlap)``)."""
    if patch >= size:
        return [0]
    target = max(1.0, patch * (1.0 - overlap))
    n = int(math.ceil((size - patch) / target)) + 1
    step = (size - patch) / (n - 1)
    return [int(round(step * i)) for i in range(n)]


def effective_patch(spatial: Sequence[int], patch_size: Sequence[int],
                    divisor: int | Sequence[int] = 1) -> tuple[int, ...]:
    """The window actually used: the model's patch, shrunk on axes where the image is smaller
    (to the image size rounded up to a multiple of ``divisor``), so small images cost less."""
    divs = _per_axis(divisor, len(patch_size))
    out = []
    for s, p, d in zip(spatial, patch_size, divs):
        if p == 1:
            out.append(1)
            continue
        fit = int(math.ceil(s / d) * d)
        out.append(int(min(p, fit)))
    return tuple(out)


def _per_axis(value: int | Sequence[int], n: int) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)):
        return (int(value),) * n
    vals = tuple(int(v) for v in value)
    if len(vals) != n:
        raise ValueError(f"expected {n} values, got {vals}")
    return vals


def _full_patch(spatial_ndim: int, patch_size: Sequence[int]) -> tuple[tuple[int, ...], bool]:
    """(patch over all spatial axes, slicewise flag)."""
    patch = tuple(int(p) for p in patch_size)
    if len(patch) == spatial_ndim:
        return patch, False
    if len(patch) == spatial_ndim - 1:
        return (1,) + patch, True
    raise ValueError(
        f"patch size {patch} does not fit an image with {spatial_ndim} spatial dimensions"
    )


def window_grid(spatial: Sequence[int], patch_size: Sequence[int], overlap: float = 0.5,
                divisor: int | Sequence[int] = 1) -> tuple[tuple[int, ...], tuple[int, ...], list[tuple[int, ...]]]:
    """(effective full patch, padded shape, window start corners) for an image of shape
    ``spatial``. ``patch_size`` may have one dimension fewer (2D model, slice by slice)."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    full, slicewise = _full_patch(len(spatial), patch_size)
    if any(p < 1 for p in full):
        raise ValueError(f"patch size must be positive, got {tuple(patch_size)}")
    divs = (1,) + _per_axis(divisor, len(full) - 1) if slicewise else _per_axis(divisor, len(full))
    patch = effective_patch(spatial, full, divs)
    padded = tuple(max(s, p) for s, p in zip(spatial, patch))
    steps = [compute_steps(s, p, overlap) for s, p in zip(padded, patch)]
    corners = list(itertools.product(*steps))
    return patch, padded, corners


def count_windows(spatial: Sequence[int], patch_size: Sequence[int], overlap: float = 0.5,
                  divisor: int | Sequence[int] = 1) -> int:
    """Number of forward passes (without test-time augmentation) for an image of this shape."""
    return len(window_grid(spatial, patch_size, overlap, divisor)[2])


def gaussian_importance(patch: Sequence[int], sigma_scale: float = 1.0 / 8) -> np.ndarray:
    """Separable Gaussian centred on the patch, max 1, sigma = ``sigma_scale * patch`` per axis,
    clamped from below to its smallest nonzero value (never zero). Axes of size 1 are flat."""
    w = np.ones((), dtype=np.float64)
    for p in patch:
        if p == 1:
            g = np.ones(1)
        else:
            sigma = p * sigma_scale
            x = np.arange(p, dtype=np.float64) - (p - 1) / 2.0
            g = np.exp(-0.5 * (x / sigma) ** 2)
        w = np.multiply.outer(w, g)
    w = (w / w.max()).astype(np.float32)
    nonzero = w[w > 0]
    w = np.maximum(w, nonzero.min() if nonzero.size else np.float32(1.0))
    return w


def mirror_axes_sets(n_spatial: int) -> list[tuple[int, ...]]:
    """All flip combinations of the spatial axes (identity first): 4 in 2D, 8 in 3D."""
    axes = list(range(n_spatial))
    out: list[tuple[int, ...]] = []
    for k in range(n_spatial + 1):
        out.extend(itertools.combinations(axes, k))
    return out


#: from this many voxels per class the argmax runs as class-by-class torch passes (2 threads,
#: this repository's machine: 2.2-3.6x numpy's from a 540 x 800 image to 8 x 128^3; a tiny
#: array stays with numpy)
TORCH_ARGMAX_VOXELS = 1 << 16


def labels_from_probabilities(probs: np.ndarray) -> np.ndarray:
    """Argmax over axis 0 in the smallest unsigned type (uint8 up to 256 classes, else uint16);
    ties go to the lower class, as ``np.argmax``. A float32 volume is reduced in one
    multithreaded torch pass per class (the same labels; a 512 x 512 CT: 1-4 s with numpy's
    argmax over the class axis, about 0.15x that; a 128^3 CT of 8 classes 57 -> 26 ms)."""
    arr = np.asarray(probs)
    if arr.shape[0] > 256:
        return np.argmax(arr, axis=0).astype(np.uint16, copy=False)
    if arr.dtype != np.float32 or arr[0].size < TORCH_ARGMAX_VOXELS:
        return np.argmax(arr, axis=0).astype(np.uint8, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(arr))
    best, labels = t[0].clone(), torch.zeros(t.shape[1:], dtype=torch.uint8)
    for c in range(1, t.shape[0]):
        labels.masked_fill_(t[c] > best, c)
        torch.maximum(best, t[c], out=best)
    return labels.numpy()


# --------------------------------------------------------------------------- the job
def sliding_window_job(
    predict_fn: PredictFn,
    image: np.ndarray,
    patch_size: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 4,
    gaussian: bool = True,
    num_classes: int | None = None,
    accumulate_device: str | torch.device = "cpu",
    accumulator_dtype: torch.dtype = torch.float32,
    *,
    device: str | torch.device = "cpu",
    divisor: int | Sequence[int] = 1,
    tta: bool = False,
    return_logits: bool = False,
    pad_value: float = 0.0,
) -> Job[np.ndarray]:
    """Blend ``predict_fn`` over windows of ``image`` (C, *spatial), returning float32
    probabilities (K, *spatial) (or blended logits with ``return_logits``).

    ``predict_fn`` maps a float32 tensor (B, C, *patch) on ``device`` to logits (B, K, *patch);
    for a slice-wise run (``patch_size`` one dimension shorter than the image) it receives
    (B, C, py, px). ``num_classes`` is read from the first output when not given.
    """
    image = np.asarray(image)
    if image.ndim < 3:
        raise ValueError(
            f"image must be channels-first (C, *spatial) with 2 or 3 spatial axes, got {image.shape}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    spatial = tuple(image.shape[1:])
    _, slicewise = _full_patch(len(spatial), patch_size)
    patch, padded, corners = window_grid(spatial, patch_size, overlap, divisor)
    device = torch.device(device)
    acc_device = torch.device(accumulate_device)

    # pad symmetrically (crop back at the end)
    pad_before = [(p - s) // 2 for s, p in zip(spatial, padded)]
    if padded != spatial:
        widths = [(0, 0)] + [(b, p - s - b) for s, p, b in zip(spatial, padded, pad_before)]
        image = np.pad(image, widths, mode="constant", constant_values=pad_value)
    img_t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))

    weight_np = gaussian_importance(patch) if gaussian else np.ones(patch, np.float32)
    if accumulator_dtype == torch.float16:
        # the smallest weights (~1e-7 at 2D corners, ~1e-11 in 3D) would underflow in float16:
        # floor them at 2**-10 and scale to [1, 1024] (the normalizing map uses the same weights)
        weight_np = np.maximum(weight_np, np.float32(2.0 ** -10)) * np.float32(1024.0)
    weight = torch.from_numpy(weight_np).to(acc_device)
    flips = mirror_axes_sets(len(patch) - (1 if slicewise else 0)) if tta else [()]
    nd_off = 2  # batch and channel axes before spatial ones

    acc: torch.Tensor | None = None
    norm = torch.zeros(padded, dtype=torch.float32, device=acc_device)
    n_batches = int(math.ceil(len(corners) / batch_size))
    stage = "segmenting"
    yield Progress(0, n_batches, stage, f"0/{len(corners)} windows")
    for b in range(n_batches):
        batch_corners = corners[b * batch_size:(b + 1) * batch_size]
        slices = [tuple(slice(c, c + p) for c, p in zip(corner, patch)) for corner in batch_corners]
        with torch.inference_mode():
            x = torch.stack([img_t[(slice(None),) + sl] for sl in slices])
            if slicewise:
                x = x[:, :, 0]
            x = x.to(device, non_blocking=True)
            out = None
            for axes in flips:
                dims = [a + nd_off for a in axes]
                xin = torch.flip(x, dims) if dims else x
                y = predict_fn(xin).float()
                if dims:
                    y = torch.flip(y, dims)
                if not return_logits:
                    y = torch.softmax(y, dim=1)
                out = y if out is None else out.add_(y)
            if len(flips) > 1:
                out.div_(len(flips))
            if slicewise:
                out = out.unsqueeze(2)
            out = out.to(acc_device)
            if acc is None:
                k = out.shape[1]
                if num_classes is not None and k != num_classes:
                    raise ValueError(
                        f"the model produced {k} output channels, {num_classes} were expected"
                    )
                acc = torch.zeros((k,) + padded, dtype=accumulator_dtype, device=acc_device)
            out.mul_(weight)
            for i, sl in enumerate(slices):
                acc[(slice(None),) + sl] += out[i].to(accumulator_dtype)
                norm[sl] += weight
        yield Progress(b + 1, n_batches, stage,
                       f"{min((b + 1) * batch_size, len(corners))}/{len(corners)} windows")

    crop = tuple(slice(bf, bf + s) for bf, s in zip(pad_before, spatial))
    with torch.inference_mode():
        result = acc[(slice(None),) + crop].float()
        result.div_(norm[crop])
        arr = result.cpu().numpy()
    return np.ascontiguousarray(arr, dtype=np.float32)
