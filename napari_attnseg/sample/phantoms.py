"""Synthetic but realistic-looking phantoms with ground truth (numpy + scipy only).

Every function is deterministic for a given ``seed`` and returns ``(image, labels)`` as two
:class:`~napari_attnseg.volume.Volume` objects on the same grid:

* :func:`ct_phantom` - an abdomen-like CT in Hounsfield units (int16): air, a body ellipse with a
  fat rim, muscle, a spine, a liver-like organ (label 1) holding a hypodense lesion (label 2) and
  distractor organs of similar density, Gaussian noise and a slight blur.
* :func:`mr_phantom` - a T1-like brain (float32, arbitrary units): scalp, CSF, cortex (grey
  matter), white matter, ventricles (label 1) and a hypointense white-matter lesion (label 2),
  a smooth multiplicative bias field and Rician noise.
* :func:`us_cine` - a 2D+t ultrasound cine (uint8, axes t, y, x): correlated Rayleigh speckle,
  depth attenuation, a bright reflector casting an acoustic shadow, and a pulsating, moving
  fetal-head-like ellipse (bright rim, dark interior; label 1) inside a sector-shaped field of view.

:func:`phantom_dataset` draws varied cases (shapes, positions, contrasts, noise) for training and
benchmarks. The targets are learnable from shape and context but not by a global threshold: the
labelled tissue overlaps in intensity with unlabelled tissue (CT distractor organs, MR sulcal CSF,
US rim echoes vs the reflector) and the MR bias field shifts intensities across the volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .._options import choose
from ..volume import Volume

KINDS = ("ct", "mr", "us")


# ---------------------------------------------------------------------------- helpers
def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(0 if seed is None else seed)


def _check_shape(shape: Sequence[int], ndim: int, minimum: int, what: str) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != ndim or any(s < minimum for s in shape):
        raise ValueError(f"{what}: shape must be {ndim} sizes of at least {minimum}, got {shape}")
    return shape


def _check_spacing(spacing: Sequence[float], ndim: int, what: str) -> tuple[float, ...]:
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != ndim or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"{what}: spacing must be {ndim} positive numbers, got {spacing}")
    return spacing


def _grid(shape: tuple[int, ...], spacing: tuple[float, ...]) -> list[np.ndarray]:
    """Open (broadcastable) coordinate grids in mm, centred on the array centre."""
    axes = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing)]
    return list(np.meshgrid(*axes, indexing="ij", sparse=True))


def _upsample_matrix(n: int, c: int) -> np.ndarray:
    """(n, c) cubic-spline interpolation weights taking c coarse samples to n fine ones."""
    eye = np.eye(c)
    cols = [ndi.zoom(eye[k], n / c, order=3, mode="reflect", grid_mode=True) for k in range(c)]
    m = np.stack(cols, axis=1)
    if m.shape[0] != n:  # rounding in zoom: pad/crop with the edge rows
        m = np.concatenate([m, np.repeat(m[-1:], max(0, n - m.shape[0]), axis=0)])[:n]
    return m


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], coarse: int = 5) -> np.ndarray:
    """A smooth random field scaled to max |value| = 1: separable cubic upsampling of a coarse
    Gaussian grid (a tensor product, much faster than ``ndi.zoom`` on the full grid)."""
    small = rng.standard_normal([min(coarse, n) for n in shape])
    field = small
    for axis, n in enumerate(shape):
        m = _upsample_matrix(n, small.shape[axis])
        field = np.moveaxis(np.tensordot(m, np.moveaxis(field, axis, 0), axes=1), 0, axis)
    field = field.astype(np.float32)
    return field / (np.abs(field).max() + 1e-9)


def _centred_origin(shape: tuple[int, ...], spacing: tuple[float, ...]) -> tuple[float, ...]:
    """World position of voxel 0 that puts the array centre at the world origin."""
    return tuple(-(n - 1) / 2.0 * s for n, s in zip(shape, spacing))


def _ellipsoid(coords: Sequence[np.ndarray], centre: Sequence[float], radii: Sequence[float],
               rotation: float = 0.0) -> np.ndarray:
    """Normalised radius r (r < 1 inside) of an ellipsoid; ``rotation`` (radians) turns the last
    two axes (the y-x plane)."""
    d = [c - m for c, m in zip(coords, centre)]
    if rotation:
        cy, cx = d[-2], d[-1]
        c, s = np.cos(rotation), np.sin(rotation)
        d[-2], d[-1] = c * cy - s * cx, s * cy + c * cx
    r2 = sum((di / ri) ** 2 for di, ri in zip(d, radii))
    return np.sqrt(r2)


# ---------------------------------------------------------------------------- CT
def _ct_case(rng: np.random.Generator, shape: tuple[int, ...], spacing: tuple[float, ...],
             vary: float) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """HU image (float) and labels for one CT case; ``vary`` scales random deviations (0..1)."""
    def u(lo: float, hi: float) -> float:  # a parameter drawn around the centre of [lo, hi]
        mid, half = (lo + hi) / 2.0, (hi - lo) / 2.0
        return float(mid + vary * half * rng.uniform(-1, 1))

    z, y, x = _grid(shape, spacing)
    ext_y = shape[1] * spacing[1] / 2.0
    ext_x = shape[2] * spacing[2] / 2.0
    ext_z = max(shape[0] * spacing[0] / 2.0, 1e-6)
    zf = z / ext_z  # -1..1 along z
    # body ellipse, slightly tapering along z
    body_ry = u(0.62, 0.78) * ext_y * (1 - 0.06 * zf ** 2)
    body_rx = u(0.80, 0.92) * ext_x * (1 - 0.04 * zf ** 2)
    wobble = 1 + 0.03 * _smooth_field(rng, (1,) + shape[1:], coarse=6)
    r_body = _ellipsoid((y, x), (0.0, 0.0), (body_ry, body_rx)) * wobble
    body = r_body < 1.0
    fat_mm = u(6.0, 12.0)
    inner = _ellipsoid((y, x), (0.0, 0.0), (body_ry - fat_mm, body_rx - fat_mm)) * wobble < 1.0

    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[np.broadcast_to(body, shape)] = u(-110, -80)  # subcutaneous fat
    muscle = u(40, 55)
    hu[np.broadcast_to(inner, shape)] = muscle
    # visceral fat patches inside the abdomen
    fat_field = _smooth_field(rng, shape, coarse=7)
    visceral = inner & (fat_field > u(0.35, 0.55))
    hu[visceral] = u(-100, -70)

    # spine: vertebral body posterior (low y = posterior with an identity direction)
    sp_y = -body_ry + fat_mm + u(14, 20)
    sp_x, vr = u(-3, 3), u(9, 12)
    vert = _ellipsoid((y, x), (sp_y, sp_x), (vr, vr * 1.1)) < 1.0
    cortex = _ellipsoid((y, x), (sp_y, sp_x), (vr + 2.0, vr * 1.1 + 2.0)) < 1.0
    hu[np.broadcast_to(cortex, shape)] = u(600, 900)
    hu[np.broadcast_to(vert, shape)] = u(180, 260)  # cancellous bone inside cortical rim

    # liver-like organ (label 1) on the patient's right: +x is +R with an identity direction
    cz, cy, cx = u(-0.1, 0.1) * ext_z, u(-0.05, 0.2) * body_ry, u(0.25, 0.45) * body_rx
    organ_r = (u(0.35, 0.5) * ext_z + 0.3 * ext_z, u(0.35, 0.5) * body_ry, u(0.3, 0.42) * body_rx)
    shape_noise = 1 + 0.18 * _smooth_field(rng, shape, coarse=5)
    r_organ = _ellipsoid((z, y, x), (cz, cy, cx), organ_r, rotation=u(-0.4, 0.4)) * shape_noise
    organ = (r_organ < 1.0) & np.broadcast_to(inner, shape)
    organ_hu = u(55, 72)
    hu[organ] = organ_hu
    # distractor organs of similar density (spleen-, kidney-like), unlabelled
    for _ in range(2 + int(rng.integers(0, 2))):
        dc = (u(-0.3, 0.3) * ext_z, u(-0.4, 0.1) * body_ry, u(-0.7, -0.2) * body_rx)
        dr = (u(0.3, 0.6) * ext_z, u(0.15, 0.3) * body_ry, u(0.1, 0.2) * body_rx)
        other = (_ellipsoid((z, y, x), dc, dr, rotation=u(-0.8, 0.8)) * shape_noise < 1.0)
        other &= np.broadcast_to(inner, shape) & ~organ
        hu[other] = organ_hu + u(-12, 8)

    # lesion (label 2) inside the organ: hypodense, irregular
    lesion = np.zeros(shape, dtype=bool)
    idx = np.argwhere(r_organ < 0.6)
    idx = idx[organ[tuple(idx.T)]] if idx.size else idx
    if len(idx):
        centre_idx = idx[rng.integers(len(idx))]
        lc = [(c - (n - 1) / 2.0) * s for c, n, s in zip(centre_idx, shape, spacing)]
        rad = u(6, 14)
        lr = (max(rad, 1.2 * spacing[0]), rad * u(0.8, 1.2), rad * u(0.8, 1.2))
        lesion = (_ellipsoid((z, y, x), lc, lr) * (1 + 0.8 * (shape_noise - 1)) < 1.0) & organ
        hu[lesion] = organ_hu - u(20, 32)

    # slight blur (partial volume), then noise
    hu = ndi.gaussian_filter(hu, sigma=[0.5 * min(spacing) / s for s in spacing])
    hu = hu + rng.normal(0.0, u(10, 15), size=shape).astype(np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[organ] = 1
    labels[lesion] = 2
    return hu, labels, {"organ_hu": organ_hu, "muscle_hu": muscle}


def ct_phantom(seed: int = 0, shape: Sequence[int] = (48, 128, 128),
               spacing: Sequence[float] = (2.5, 0.8, 0.8), *, vary: float = 0.3
               ) -> tuple[Volume, Volume]:
    """An abdomen-like CT volume in HU (int16) and its labels (uint8: 0 background, 1 organ,
    2 lesion). ``vary`` (0..1) scales how far the random anatomy departs from the typical case."""
    shape = _check_shape(shape, 3, 8, "ct_phantom")
    spacing = _check_spacing(spacing, 3, "ct_phantom")
    rng = _rng(seed)
    hu, labels, info = _ct_case(rng, shape, spacing, float(vary))
    hu = np.clip(np.round(hu), -1024, 3071).astype(np.int16)
    meta = {"phantom": "ct", "seed": seed if not isinstance(seed, np.random.Generator) else None,
            "units": "HU", "label_names": {1: "organ", 2: "lesion"}}
    image = Volume(hu, spacing, origin=_centred_origin(shape, spacing), modality="CT",
                   metadata=meta)
    return image, image.with_data(labels, is_labels=True)


# ---------------------------------------------------------------------------- MR
def _mr_case(rng: np.random.Generator, shape: tuple[int, ...], spacing: tuple[float, ...],
             vary: float) -> tuple[np.ndarray, np.ndarray]:
    def u(lo: float, hi: float) -> float:
        mid, half = (lo + hi) / 2.0, (hi - lo) / 2.0
        return float(mid + vary * half * rng.uniform(-1, 1))

    z, y, x = _grid(shape, spacing)
    ext = [n * s / 2.0 for n, s in zip(shape, spacing)]
    fold = _smooth_field(rng, shape, coarse=9)  # gyral folding of the cortex
    bump = _smooth_field(rng, shape, coarse=4)
    centre = (u(-0.05, 0.05) * ext[0], u(-0.06, 0.06) * ext[1], u(-0.05, 0.05) * ext[2])
    radii = (u(0.8, 0.95) * ext[0], u(0.72, 0.84) * ext[1], u(0.6, 0.72) * ext[2])
    r = _ellipsoid((z, y, x), centre, radii) * (1 + 0.04 * bump)
    head = r < 1.0
    skull_in = r < 0.93
    brain = r < 0.88
    wm = (r + 0.09 * fold) < 0.72  # folded grey/white boundary
    csf_outer = brain & ((r + 0.08 * np.abs(fold)) > 0.84)  # sulcal / subarachnoid CSF
    # ventricles (label 1): two lateral ellipsoids near the centre, a smooth deformation
    vent = np.zeros(shape, dtype=bool)
    vz = centre[0] + u(-0.1, 0.1) * ext[0]
    vr = (u(0.25, 0.4) * ext[0], u(0.2, 0.3) * radii[1], u(0.07, 0.11) * radii[2])
    for side in (-1, 1):
        vc = (vz, centre[1] + u(-0.05, 0.1) * radii[1], centre[2] + side * u(0.1, 0.16) * radii[2])
        vent |= _ellipsoid((z, y, x), vc, vr, rotation=side * u(0.15, 0.35)) * (1 + 0.1 * bump) < 1
    vent &= brain
    # lesion (label 2): hypointense blob in white matter away from the ventricles
    lesion = np.zeros(shape, dtype=bool)
    cand = np.argwhere(wm & ~ndi.binary_dilation(vent, iterations=3))
    if len(cand):
        c = cand[rng.integers(len(cand))]
        lc = [(ci - (n - 1) / 2.0) * s for ci, n, s in zip(c, shape, spacing)]
        rad = u(4, 9)
        lesion = (_ellipsoid((z, y, x), lc, (max(rad, spacing[0]), rad, rad)) *
                  (1 + 0.2 * fold) < 1.0) & wm & ~vent

    wm_i, gm_i, csf_i = u(780, 840), u(560, 640), u(180, 260)
    img = np.zeros(shape, dtype=np.float32)
    img[head] = u(850, 1000)                 # scalp fat (bright on T1)
    img[head & skull_in] = u(60, 120)        # skull (dark)
    img[brain] = gm_i
    img[wm] = wm_i
    img[csf_outer] = csf_i
    img[vent] = csf_i + u(-20, 20)
    img[lesion] = u(380, 470)
    img = ndi.gaussian_filter(img, sigma=[0.6 * min(spacing) / s for s in spacing])
    # smooth multiplicative bias field (+-15..30 %)
    zz, yy, xx = (c / e for c, e in zip((z, y, x), ext))
    coef = rng.normal(0, 1, size=6)
    poly = coef[0] * zz + coef[1] * yy + coef[2] * xx + coef[3] * yy * xx + coef[4] * zz * yy \
        + coef[5] * xx ** 2
    poly = poly / (np.abs(poly).max() + 1e-9)
    bias = np.exp(u(0.15, 0.3) * poly).astype(np.float32)
    img = img * bias
    # Rician noise: magnitude of a complex signal with Gaussian noise in both channels
    sigma = u(20, 40)
    re = img + rng.normal(0, sigma, size=shape).astype(np.float32)
    im = rng.normal(0, sigma, size=shape).astype(np.float32)
    img = np.sqrt(re * re + im * im).astype(np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[vent] = 1
    labels[lesion] = 2
    return img, labels


def mr_phantom(seed: int = 0, shape: Sequence[int] = (40, 128, 128),
               spacing: Sequence[float] = (3.0, 1.0, 1.0), *, vary: float = 0.3
               ) -> tuple[Volume, Volume]:
    """A T1-like brain MR volume (float32, arbitrary units ~0-1200) with a bias field and Rician
    noise, and labels (uint8: 1 ventricles, 2 white-matter lesion)."""
    shape = _check_shape(shape, 3, 8, "mr_phantom")
    spacing = _check_spacing(spacing, 3, "mr_phantom")
    img, labels = _mr_case(_rng(seed), shape, spacing, float(vary))
    meta = {"phantom": "mr", "seed": seed if not isinstance(seed, np.random.Generator) else None,
            "units": "a.u. (T1-like)", "label_names": {1: "ventricles", 2: "lesion"}}
    image = Volume(img, spacing, origin=_centred_origin(shape, spacing), modality="MR",
                   metadata=meta)
    return image, image.with_data(labels, is_labels=True)


# ---------------------------------------------------------------------------- US
def _us_case(rng: np.random.Generator, n_frames: int, shape: tuple[int, int],
             spacing: tuple[float, float], vary: float) -> tuple[np.ndarray, np.ndarray]:
    def u(lo: float, hi: float) -> float:
        mid, half = (lo + hi) / 2.0, (hi - lo) / 2.0
        return float(mid + vary * half * rng.uniform(-1, 1))

    ny, nx = shape
    depth = np.arange(ny, dtype=np.float32)[:, None] * spacing[0]  # mm below the probe
    lat = ((np.arange(nx, dtype=np.float32) - (nx - 1) / 2.0) * spacing[1])[None, :]
    h, w = ny * spacing[0], nx * spacing[1]
    # sector (fan) field of view from an apex above the image
    apex = -0.25 * h
    angle = np.arctan2(lat, depth - apex)
    half_angle = u(0.55, 0.7)
    fov = (np.abs(angle) < half_angle) & (depth > 0.02 * h)
    # static background: soft tissue with smooth echogenicity, a bright reflector and its shadow
    tissue = 0.45 + 0.12 * _smooth_field(rng, shape, coarse=6)
    ref_y, ref_x = u(0.15, 0.25) * h, u(-0.3, 0.3) * w
    ref_half, ref_thick = u(0.08, 0.14) * w, u(0.8, 1.5)
    reflector = (np.abs(depth - ref_y) < ref_thick) & (np.abs(lat - ref_x) < ref_half)
    shadow = (depth > ref_y + ref_thick) & (np.abs(lat - ref_x) < ref_half * 0.9)
    shadow_soft = ndi.gaussian_filter(shadow.astype(np.float32), 2.0)
    atten = np.exp(-u(0.015, 0.03) * depth) * (1 + 0.004 * depth * u(0.5, 1.0))  # TGC partly
    c0 = np.array([u(0.55, 0.65) * h, u(-0.1, 0.1) * w])
    axes0 = np.array([u(0.22, 0.28) * h, u(0.28, 0.36) * w])
    rot0 = u(-0.4, 0.4)
    rim_mm = u(1.2, 2.0)
    period = u(6, 10)
    drift = rng.normal(0, 1, size=2) * np.array([0.02 * h, 0.03 * w]) * vary / max(n_frames, 1)
    images = np.zeros((n_frames,) + shape, dtype=np.float32)
    labels = np.zeros((n_frames,) + shape, dtype=np.uint8)
    # speckle PSF: longer laterally than axially
    psf = (0.6, 1.6)
    for t in range(n_frames):
        phase = 2 * np.pi * t / period
        scale = 1 + u(0.04, 0.07) * np.sin(phase)
        centre = c0 + drift * t + np.array([0.8, 0.5]) * np.sin(phase / 2)
        r = _ellipsoid((depth, lat), centre, axes0 * scale, rotation=rot0 + 0.02 * np.sin(phase))
        r_rim = rim_mm / float(np.mean(axes0 * scale))
        inside = r < 1.0
        rim = np.abs(r - 1.0) < r_rim
        echo = tissue.copy()
        echo[inside] = 0.18 + 0.05 * tissue[inside]       # hypoechoic brain
        # midline echo (falx): a thin line along the ellipse's long axis
        ang = rot0 + 0.02 * np.sin(phase)
        dist = np.abs(np.cos(ang) * (lat - centre[1]) - np.sin(ang) * (depth - centre[0]))
        echo[inside & (r < 0.8) & (dist < 0.5)] = 0.6
        echo[rim] = 1.4                                     # bright skull
        echo[reflector] = 1.8
        echo = echo * (1 - 0.85 * shadow_soft) * atten
        # correlated complex Gaussian -> Rayleigh speckle (multiplicative)
        cg = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
        cg = ndi.gaussian_filter(cg.real, psf) + 1j * ndi.gaussian_filter(cg.imag, psf)
        speckle = np.abs(cg)
        speckle /= speckle.mean() + 1e-9
        env = echo * speckle
        env = np.log1p(4.0 * env) / np.log1p(4.0 * 3.0)   # log compression
        env[~fov] = 0.0
        images[t] = env
        lab = inside | rim
        lab &= fov
        labels[t] = lab
    img = np.clip(images * 255.0, 0, 255).round().astype(np.uint8)
    return img, labels


def us_cine(seed: int = 0, n_frames: int = 16, shape: Sequence[int] = (160, 160),
            spacing: Sequence[float] = (0.3, 0.3), *, vary: float = 0.3
            ) -> tuple[Volume, Volume]:
    """A B-mode ultrasound cine (uint8, axes (t, y, x)) of a pulsating, drifting fetal-head-like
    ellipse and its per-frame labels (uint8, 1 = head). The first axis is time: its "spacing" is
    1 (one frame) and ``metadata['axes'] == ('t', 'y', 'x')``."""
    shape2 = _check_shape(shape, 2, 16, "us_cine")
    spacing2 = _check_spacing(spacing, 2, "us_cine")
    n_frames = int(n_frames)
    if n_frames < 1:
        raise ValueError(f"us_cine: n_frames must be at least 1, got {n_frames}")
    img, labels = _us_case(_rng(seed), n_frames, shape2, spacing2, float(vary))
    meta = {"phantom": "us", "seed": seed if not isinstance(seed, np.random.Generator) else None,
            "axes": ("t", "y", "x"), "time_axis": 0,
            "time_spacing_note": "axis 0 is time (frames); its spacing 1.0 is not a length",
            "label_names": {1: "head"}}
    # time starts at 0, depth (y) at the probe face, x centred on the probe
    origin = (0.0, 0.0, -(shape2[1] - 1) / 2.0 * spacing2[1])
    image = Volume(img, (1.0,) + spacing2, origin=origin, modality="US", metadata=meta)
    return image, image.with_data(labels, is_labels=True)


# ---------------------------------------------------------------------------- datasets
def phantom_dataset(kind: str, n_cases: int, seed: int = 0, *,
                    shape: Sequence[int] | None = None, spacing: Sequence[float] | None = None,
                    vary: float = 1.0) -> list[tuple[Volume, Volume]]:
    """``n_cases`` varied (image, labels) pairs of one kind ("ct", "mr" or "us").

    Each case has its own random anatomy, position, contrast and noise (``vary`` = 1 uses the
    full parameter ranges). ``shape``/``spacing`` override the defaults of the phantom function
    (for "us", ``shape`` is (t, y, x) and ``spacing`` (y, x)). Deterministic for a given seed.
    """
    kind = choose(kind, KINDS, "phantom kind")
    n_cases = int(n_cases)
    if n_cases < 0:
        raise ValueError(f"n_cases must be >= 0, got {n_cases}")
    children = np.random.SeedSequence(int(seed)).spawn(n_cases)
    out = []
    for child in children:
        rng = np.random.default_rng(child)
        kw: dict[str, Any] = {"vary": vary}
        if kind == "us":
            if shape is not None:
                kw["n_frames"], kw["shape"] = int(shape[0]), tuple(shape[1:])
            if spacing is not None:
                kw["spacing"] = spacing
            out.append(us_cine(rng, **kw))
        else:
            if shape is not None:
                kw["shape"] = shape
            if spacing is not None:
                kw["spacing"] = spacing
            out.append((ct_phantom if kind == "ct" else mr_phantom)(rng, **kw))
    return out
