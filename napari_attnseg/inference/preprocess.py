"""Intensity presets, reorientation to canonical and resampling, each with its inverse.

Intensity presets (``normalize_intensity``), in float32:

* **CT**: clip to the HU window ``clip`` (default [-1000, 1000]); then z-score with ``mean`` /
  ``std`` when the model gives them, else map the window linearly to [-1, 1].
* **MR**: clip to the 0.5 and 99.5 percentiles, then z-score with the clipped image's mean and
  standard deviation.
* **US**: map the 1st..99th percentile range linearly to [0, 1] (clipped).

A model's ``spec.normalization`` dict may override any of: ``preset`` ("CT"/"MR"/"US"),
``clip`` ([lo, hi] absolute), ``percentiles`` ([lo, hi]), ``mean`` and ``std`` (or ``shift`` and
``scale``, as :meth:`IntensityParams.as_dict` writes them). Store dataset-level values only
(a CT window, CT mean/std); MR and US statistics are meant to be computed per image. Percentiles and
statistics are computed on the whole volume (a regular subsample of at most ~2 M voxels, so a
current-slice preview uses exactly the statistics of the whole-volume run).

Geometry: :func:`to_canonical` transposes/flips an (approximately) axis-aligned 3D array so its
direction becomes the identity, :func:`from_canonical` undoes it (on channels-first arrays too);
:func:`resample` uses ``scipy.ndimage.zoom`` (order 1) to an exact output shape.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._options import MAX_CONTEXT_SLICES, choose

logger = logging.getLogger(__name__)

PRESETS = ("CT", "MR", "US")
DEFAULT_CT_CLIP = (-1000.0, 1000.0)
_MAX_SAMPLES = 1 << 21


@dataclass(frozen=True)
class IntensityParams:
    """Resolved normalization: ``(clip(x, lo, hi) - shift) / scale``."""

    preset: str
    lo: float
    hi: float
    shift: float
    scale: float

    def apply(self, data: np.ndarray) -> np.ndarray:
        out = np.asarray(data, dtype=np.float32).copy()
        np.clip(out, self.lo, self.hi, out=out)
        out -= np.float32(self.shift)
        out /= np.float32(self.scale)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "clip": [self.lo, self.hi], "shift": self.shift,
                "scale": self.scale}


def resolve_preset(override: str | None = None, normalization: Mapping[str, Any] | None = None,
                   model_modality: str = "", volume_modality: str = "") -> str:
    """The preset used: the user's override, else the model's normalization/modality, else the
    scan's modality, else MR (percentile clip + z-score, the most generic)."""
    for cand in (override, (normalization or {}).get("preset"), model_modality, volume_modality):
        if cand:
            return choose(str(cand), PRESETS, "intensity preset")
    return "MR"


def _sample(data: np.ndarray) -> np.ndarray:
    flat = np.asarray(data).reshape(-1)
    step = max(1, flat.size // _MAX_SAMPLES)
    s = flat[::step].astype(np.float32, copy=False)
    return s[np.isfinite(s)]


def intensity_params(data: np.ndarray, preset: str,
                     normalization: Mapping[str, Any] | None = None) -> IntensityParams:
    """Compute the normalization of ``data`` for ``preset`` (see the module docstring)."""
    preset = choose(preset, PRESETS, "intensity preset")
    norm = dict(normalization or {})
    sample = None

    def pct(lo: float, hi: float) -> tuple[float, float]:
        nonlocal sample
        if sample is None:
            sample = _sample(data)
        if sample.size == 0:
            return 0.0, 1.0
        a, b = np.percentile(sample, [lo, hi])
        return float(a), float(b)

    if "clip" in norm and norm["clip"] is not None:
        lo, hi = (float(v) for v in norm["clip"])
    elif "percentiles" in norm and norm["percentiles"] is not None:
        lo, hi = pct(*(float(v) for v in norm["percentiles"]))
    elif preset == "CT":
        lo, hi = DEFAULT_CT_CLIP
    elif preset == "MR":
        lo, hi = pct(0.5, 99.5)
    else:
        lo, hi = pct(1.0, 99.0)
    if not hi > lo:
        hi = lo + 1.0
    if norm.get("mean") is not None and norm.get("std") is not None:
        shift, scale = float(norm["mean"]), float(norm["std"])
    elif norm.get("shift") is not None and norm.get("scale") is not None:  # IntensityParams.as_dict
        shift, scale = float(norm["shift"]), float(norm["scale"])
    elif preset == "CT":
        shift, scale = (lo + hi) / 2.0, (hi - lo) / 2.0
    elif preset == "MR":
        if sample is None:
            sample = _sample(data)
        clipped = np.clip(sample, lo, hi) if sample.size else np.zeros(1, np.float32)
        shift, scale = float(clipped.mean()), float(clipped.std())
    else:
        shift, scale = lo, hi - lo
    if not np.isfinite(scale) or scale <= 1e-8:
        scale = 1.0
    return IntensityParams(preset, lo, hi, shift, scale)


def normalize_intensity(data: np.ndarray, preset: str,
                        normalization: Mapping[str, Any] | None = None) -> np.ndarray:
    """float32 normalized copy of ``data`` (NaNs become the low clip value)."""
    params = intensity_params(data, preset, normalization)
    out = params.apply(data)
    np.nan_to_num(out, copy=False, nan=(params.lo - params.shift) / params.scale)
    return out


# --------------------------------------------------------------------------- in-plane scale
def inplane_factors(zoom: float, spacing_range: Sequence[float] | None,
                    pixel: Sequence[float] | None) -> tuple[float, float]:
    """Resize factors (rows, columns) of a 2D model's slices: ``zoom`` (its ``inplane_zoom``)
    times ``pixel / clip(pixel, lo, hi)`` per axis when the model declares the pixel sizes it was
    trained on (``spacing_range = (lo, hi)`` mm) and ``pixel`` (mm) is known. Inside the range
    the factor is 1 (the model has seen such pixels); a 0.7 mm slice for a 1.25-1.9 mm model is
    shrunk by 0.56, a 4.9 mm one grown to 1.9."""
    zoom = float(zoom or 1.0)
    if spacing_range is None or pixel is None:
        return zoom, zoom
    r = [float(v) for v in spacing_range]
    ranges = [r[0:2], r[2:4]] if len(r) == 4 else [r, r]  # (lo, hi, lo, hi): rows, columns apart
    out = []
    for s, (lo, hi) in zip(pixel, ranges):
        s = float(s)
        out.append(zoom * (s / min(max(s, lo), hi)) if s > 0 and np.isfinite(s) else zoom)
    return out[0], out[1]


def model_inplane_factors(spec: Any, volume: Any, order: Sequence[int]) -> tuple[float, float]:
    """:func:`inplane_factors` of a 2D model ``spec`` for ``volume`` cut with its axes in
    ``order`` (the last two are the slice's rows and columns); a nominal spacing is not used."""
    from ..volume import spacing_is_nominal

    pixel = None if spacing_is_nominal(volume) else tuple(float(volume.spacing[a]) for a in order[-2:])
    return inplane_factors(getattr(spec, "inplane_zoom", 1.0), getattr(spec, "inplane_spacing", None), pixel)


def inplane_shape(shape: Sequence[int], factors: Sequence[float]) -> tuple[int, ...]:
    """``shape`` with its last two axes resized by ``factors``."""
    shape = tuple(int(s) for s in shape)
    if tuple(float(f) for f in factors) == (1.0, 1.0):
        return shape
    return shape[:-2] + tuple(max(1, int(round(s * f))) for s, f in zip(shape[-2:], factors))


def resize_inplane(data: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resize the last two axes of an image (linear, anti-aliased when shrinking)."""
    from skimage.transform import resize

    shape = tuple(int(s) for s in shape)
    out = resize(np.asarray(data, dtype=np.float32), shape, order=1,
                 anti_aliasing=shape[-1] < data.shape[-1], preserve_range=True)
    return np.ascontiguousarray(out, dtype=np.float32)


def resize_labels_inplane(labels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resize the last two axes of a label map or mask (nearest neighbour: no new values)."""
    from skimage.transform import resize

    arr = np.asarray(labels)
    out = resize(arr, tuple(int(s) for s in shape), order=0, anti_aliasing=False,
                 preserve_range=True, mode="edge")
    return np.ascontiguousarray(out.astype(arr.dtype, copy=False))


# --------------------------------------------------------------------------- orientation
@dataclass(frozen=True)
class Reorientation:
    """Array axis ``perm[i]`` becomes canonical axis ``i``, then canonical axes in ``flip`` are
    reversed. Identity when ``perm`` is (0, 1, 2) and ``flip`` empty."""

    perm: tuple[int, ...]
    flip: tuple[int, ...]

    @property
    def is_identity(self) -> bool:
        return self.perm == tuple(range(len(self.perm))) and not self.flip


def canonical_reorientation(direction: np.ndarray) -> Reorientation:
    """The axis permutation and flips that bring ``direction`` closest to the identity (exact
    for axis-aligned volumes; oblique ones get the nearest axis). A direction whose columns
    do not pick distinct world axes gives the identity (no reorientation)."""
    d = np.asarray(direction, dtype=float)
    n = d.shape[0]
    world_of = [int(np.argmax(np.abs(d[:, j]))) for j in range(n)]
    if sorted(world_of) != list(range(n)):
        logger.warning("direction %s is too oblique to reorient; using it as is", d.tolist())
        return Reorientation(tuple(range(n)), ())
    perm = tuple(world_of.index(i) for i in range(n))
    flip = tuple(i for i in range(n) if d[i, perm[i]] < 0)
    return Reorientation(perm, flip)


def slice_reorientation(spec: Any, volume: Any) -> Reorientation:
    """How a 2D model's slices are cut from ``volume`` (its array, or a 2D slice of one): the
    axes in world order (:func:`~napari_attnseg.orientation.axis_permutation`: axial slices
    whatever the storage order) or, where the model declares the ``orientation`` it was trained
    in and the volume's orientation is known (not
    :func:`~napari_attnseg.volume.direction_is_nominal`), transposed and reversed to run as its
    training arrays did. A scan stored with its rows toward posterior (DICOM) or its columns
    toward the right is then seen as the training scans were, not as a mirror image (which
    swapped the left and right kidneys) or a rotated one. Training, fine-tuning and inference
    all cut with it."""
    from ..orientation import axis_permutation, reorientation_to
    from ..volume import direction_is_nominal

    direction = np.asarray(volume.direction, dtype=float)
    code = getattr(spec, "orientation", None)
    if not code or direction_is_nominal(volume):
        return Reorientation(axis_permutation(direction), ())
    return Reorientation(*reorientation_to(direction, code))


def to_canonical(data: np.ndarray, reo: Reorientation, channels_first: bool = False) -> np.ndarray:
    off = 1 if channels_first else 0
    axes = tuple(range(off)) + tuple(p + off for p in reo.perm)
    out = np.transpose(data, axes)
    if reo.flip:
        out = np.flip(out, tuple(f + off for f in reo.flip))
    return out


def from_canonical(data: np.ndarray, reo: Reorientation, channels_first: bool = False) -> np.ndarray:
    off = 1 if channels_first else 0
    out = data
    if reo.flip:
        out = np.flip(out, tuple(f + off for f in reo.flip))
    inv = np.argsort(reo.perm)
    axes = tuple(range(off)) + tuple(int(i) + off for i in inv)
    return np.transpose(out, axes)


def reoriented_spacing(spacing: Sequence[float], reo: Reorientation) -> tuple[float, ...]:
    return tuple(float(spacing[p]) for p in reo.perm)


# --------------------------------------------------------------------------- resampling
def resampled_shape(shape: Sequence[int], spacing: Sequence[float],
                    target_spacing: Sequence[float]) -> tuple[int, ...]:
    return tuple(max(1, int(round(s * sp / t))) for s, sp, t in zip(shape, spacing, target_spacing))


def needs_resampling(spacing: Sequence[float], target_spacing: Sequence[float] | None,
                     rtol: float = 1e-3) -> bool:
    if target_spacing is None:
        return False
    if len(target_spacing) != len(spacing):
        raise ValueError(
            f"target spacing {tuple(target_spacing)} has {len(target_spacing)} values, "
            f"the image {len(spacing)} axes"
        )
    return not np.allclose(spacing, target_spacing, rtol=rtol, atol=0)


def resample(data: np.ndarray, out_shape: Sequence[int], order: int = 1,
             channels_first: bool = False) -> np.ndarray:
    """Linear (order 1) zoom of ``data`` to exactly ``out_shape`` (spatial part)."""
    from scipy import ndimage

    arr = np.asarray(data, dtype=np.float32)
    spatial = arr.shape[1:] if channels_first else arr.shape
    out_shape = tuple(int(s) for s in out_shape)
    if tuple(spatial) == out_shape:
        return arr
    zoom = [o / s for o, s in zip(out_shape, spatial)]
    if channels_first:
        return np.stack([
            ndimage.zoom(c, zoom, order=order, mode="nearest", grid_mode=False) for c in arr
        ])
    return ndimage.zoom(arr, zoom, order=order, mode="nearest", grid_mode=False)


def stack_context(data: np.ndarray, k: int) -> np.ndarray:
    """2.5D input: ``data`` (Z, H, W) -> (2k + 1, Z, H, W) float32, channel ``c`` of slice ``z``
    holding slice ``z + c - k`` (clamped to the volume: the end slices repeat). A single 2D
    image (H, W) -> (2k + 1, H, W), every channel the image. ``k = 0`` adds the channel axis.

    Training (``prepare_pairs``), whole-volume inference, the current-slice preview and the
    scribble fine-tune all build their input here, so they see the same neighbours."""
    data = np.asarray(data, dtype=np.float32)
    k = int(k)
    if not 0 <= k <= MAX_CONTEXT_SLICES:
        raise ValueError(f"context_slices must be in 0..{MAX_CONTEXT_SLICES}, got {k}")
    if data.ndim == 2:
        return np.repeat(data[None], 2 * k + 1, axis=0)  # a writable copy (a broadcast view is read-only)
    if data.ndim != 3:
        raise ValueError(f"2.5D input needs (z, y, x) slices or one (y, x) image, got shape {data.shape}")
    if k == 0:
        return data[None]
    z = np.arange(data.shape[0])
    index = np.clip(z[None, :] + np.arange(-k, k + 1)[:, None], 0, data.shape[0] - 1)
    return np.ascontiguousarray(data[index])
