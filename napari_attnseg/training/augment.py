"""Seeded data augmentation applied jointly to an image, its labels and its trainable-voxel mask.

Spatial (one resampling per sample, fused with the crop as nnU-Net does): small rotation in the
(y, x) plane, isotropic scaling and elastic deformation via ``scipy.ndimage.map_coordinates``
(image linear, labels and mask nearest); voxels sampled from outside the source get mask 0, so
padding and out-of-view regions never train. Then random flips on every axis and 90° rotations
in the (y, x) plane when the patch is square there. Intensity (image only): scale, shift,
gamma, Gaussian noise.

Every random draw comes from the ``np.random.Generator`` passed in (no global state).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["AugmentParams", "augment_intensity", "random_crop"]


@dataclass(frozen=True)
class AugmentParams:
    """Probabilities and ranges (nnU-Net-like defaults, milder for quick fine-tunes)."""

    p_rotate: float = 0.2
    max_angle_deg: float = 15.0
    p_scale: float = 0.2
    scale_range: tuple[float, float] = (0.85, 1.25)
    p_elastic: float = 0.2
    elastic_magnitude: float = 0.04  # coarse-grid displacement std, fraction of the patch size
    p_flip: float = 0.5
    p_rot90: float = 0.5
    p_int_scale: float = 0.15
    int_scale_range: tuple[float, float] = (0.75, 1.25)
    p_int_shift: float = 0.15
    int_shift_std: float = 0.1
    p_gamma: float = 0.15
    gamma_range: tuple[float, float] = (0.7, 1.5)
    p_noise: float = 0.15
    noise_max_std: float = 0.1


DEFAULT = AugmentParams()


def _starts(shape: Sequence[int], patch: Sequence[int], rng: np.random.Generator,
            centre: Sequence[int] | None) -> list[int]:
    starts = []
    for i, (s, p) in enumerate(zip(shape, patch)):
        lo, hi = min(0, s - p), max(0, s - p)
        if centre is not None:
            st = int(np.clip(int(centre[i]) - p // 2, lo, hi))
        else:
            st = int(rng.integers(lo, hi + 1))
        starts.append(st)
    return starts


def _plain_crop(arr: np.ndarray, starts: Sequence[int], patch: Sequence[int], fill) -> np.ndarray:
    """Crop the last ``len(patch)`` axes (leading axes, e.g. channels, kept whole)."""
    lead = arr.ndim - len(patch)
    out = np.full(arr.shape[:lead] + tuple(patch), fill, dtype=arr.dtype)
    src, dst = [slice(None)] * lead, [slice(None)] * lead
    for st, p, s in zip(starts, patch, arr.shape[lead:]):
        a, b = max(st, 0), min(st + p, s)
        src.append(slice(a, b))
        dst.append(slice(a - st, b - st))
    out[tuple(dst)] = arr[tuple(src)]
    return out


def _elastic_field(patch: Sequence[int], rng: np.random.Generator, magnitude: float) -> list[np.ndarray]:
    from scipy import ndimage

    coarse = tuple(max(2, int(np.ceil(p / 32)) + 1) for p in patch)
    fields = []
    for p in patch:
        c = rng.normal(0.0, magnitude * p, size=coarse)
        zoom = [q / k for q, k in zip(patch, coarse)]
        fields.append(ndimage.zoom(c, zoom, order=3, mode="nearest", grid_mode=True)[tuple(slice(0, q) for q in patch)])
    return fields


def augment_intensity(image: np.ndarray, rng: np.random.Generator, params: AugmentParams = DEFAULT) -> np.ndarray:
    """Scale, shift, gamma and noise on a float32 image (returns a new array)."""
    img = np.array(image, dtype=np.float32, copy=True)
    if rng.random() < params.p_int_scale:
        img *= np.float32(rng.uniform(*params.int_scale_range))
    if rng.random() < params.p_int_shift:
        img += np.float32(rng.normal(0.0, params.int_shift_std) * (img.std() + 1e-6))
    if rng.random() < params.p_gamma:
        lo, hi = float(img.min()), float(img.max())
        if hi > lo:
            g = rng.uniform(*params.gamma_range)
            img = (((img - lo) / (hi - lo)) ** g * (hi - lo) + lo).astype(np.float32)
    if rng.random() < params.p_noise:
        std = rng.uniform(0.0, params.noise_max_std) * (img.std() + 1e-6)
        img += rng.normal(0.0, std, size=img.shape).astype(np.float32)
    return img


def random_crop(image: np.ndarray, labels: np.ndarray, mask: np.ndarray, patch: Sequence[int],
                rng: np.random.Generator, centre: Sequence[int] | None = None, augment: bool = True,
                params: AugmentParams = DEFAULT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ``patch``-sized sample (image float32, labels int64, mask bool) — new arrays.

    The crop starts at random (or around ``centre``); inputs smaller than the patch are padded
    (image 0, mask False). With ``augment``, the spatial and intensity augmentations run too.
    An ``image`` with one axis more than ``labels`` (channels first, e.g. a 2.5D stack) gets
    the same spatial transform on every channel.
    """
    patch = tuple(int(p) for p in patch)
    nd = labels.ndim
    lead = image.ndim - nd  # 1: a channel axis
    if lead not in (0, 1) or image.shape[lead:] != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} do not match")
    starts = _starts(labels.shape, patch, rng, centre)
    do_rot, do_scale, do_elastic = (bool(augment and rng.random() < p)
                                    for p in (params.p_rotate, params.p_scale, params.p_elastic))
    spatial = do_rot or do_scale or do_elastic
    if not spatial:
        img = _plain_crop(image.astype(np.float32, copy=False), starts, patch, 0.0)
        lab = _plain_crop(labels, starts, patch, 0)
        msk = _plain_crop(mask, starts, patch, False)
    else:
        from scipy import ndimage

        centre_f = np.array([st + (p - 1) / 2.0 for st, p in zip(starts, patch)])
        grid = np.meshgrid(*[np.arange(p, dtype=np.float64) - (p - 1) / 2.0 for p in patch], indexing="ij")
        coords = np.stack(grid)  # (nd, *patch), offsets from the centre
        a = np.eye(nd)
        if do_rot:
            t = np.deg2rad(rng.uniform(-params.max_angle_deg, params.max_angle_deg))
            c, s = np.cos(t), np.sin(t)
            a[-2:, -2:] = [[c, -s], [s, c]]
        if do_scale:
            a = a / rng.uniform(*params.scale_range)  # zoom in (>1) samples a smaller region
        coords = np.tensordot(a, coords, axes=1)
        if do_elastic:
            for i, f in enumerate(_elastic_field(patch, rng, params.elastic_magnitude)):
                coords[i] += f
        coords += centre_f.reshape((nd,) + (1,) * nd)
        src = image.astype(np.float32, copy=False)
        if lead:
            img = np.stack([ndimage.map_coordinates(ch, coords, order=1, mode="nearest") for ch in src])
        else:
            img = ndimage.map_coordinates(src, coords, order=1, mode="nearest")
        # labels and mask in one nearest-neighbour pass: code = 2 * label + mask (0 outside)
        code = labels.astype(np.int64) * 2 + mask
        code = ndimage.map_coordinates(code, coords, order=0, mode="constant", cval=0)
        lab, msk = code >> 1, (code & 1) > 0
        inside = np.all([(coords[i] > -0.5) & (coords[i] < labels.shape[i] - 0.5) for i in range(nd)], axis=0)
        msk &= inside
    if augment:
        for ax in range(nd):
            if rng.random() < params.p_flip:
                img = np.flip(img, ax + lead)
                lab, msk = (np.flip(x, ax) for x in (lab, msk))
        if patch[-1] == patch[-2] and rng.random() < params.p_rot90:
            k = int(rng.integers(1, 4))
            img = np.rot90(img, k, axes=(img.ndim - 2, img.ndim - 1))
            lab, msk = (np.rot90(x, k, axes=(nd - 2, nd - 1)) for x in (lab, msk))
        img = augment_intensity(img, rng, params)
    return (np.ascontiguousarray(img, dtype=np.float32), np.ascontiguousarray(lab, dtype=np.int64),
            np.ascontiguousarray(msk, dtype=bool))
