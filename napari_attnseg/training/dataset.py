"""Training data: (image, corrected labels, reviewed mask) pairs, the reviewed-slice split,
the preparation that matches inference, batch sampling, and readers for dataset folders.

* :class:`TrainingPair` holds one scan, its labels on the same grid and what the user reviewed:
  a voxel mask, per-slice flags along axis 0, or ``None`` (everything reviewed). Only reviewed
  voxels train; the rest is ignored by the loss.
* :func:`split_reviewed_slices` holds out reviewed slices for validation.
* :func:`prepare_pairs` normalizes intensities exactly as inference does
  (``inference.preprocess``) and, for 3D models, reorients to canonical and resamples to the
  model's spacing; for 2D models it keeps the reviewed slices along axis 0.
* :class:`BatchSampler` draws seeded random crops (with augmentation) of ``patch_size``;
  inputs smaller than a patch are padded and the padding is ignored by the loss.
* Readers: :func:`read_decathlon` (Medical Segmentation Decathlon / nnU-Net v1 and v2 layouts),
  :func:`read_pair_list` (a text/CSV file of ``image,label`` lines), :func:`read_hc18`.

Input arrays are never modified: everything here works on copies.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ReadError
from .partial_labels import encode_partial
from ..volume import Volume

logger = logging.getLogger(__name__)

__all__ = [
    "BatchSampler", "DatasetInfo", "PreparedItem", "TrainingPair", "data_hash", "prepare_pairs",
    "read_dataset", "read_decathlon", "read_hc18", "read_pair_list", "reviewed_mask",
    "reviewed_slices", "split_by_group", "split_reviewed_slices",
]


# --------------------------------------------------------------------------- pairs
@dataclass(frozen=True)
class TrainingPair:
    """One training example: ``image`` and integer ``labels`` on the same grid, and ``reviewed``:
    a bool voxel mask shaped like ``labels``, per-slice flags of shape ``(z,)`` (3D), or ``None``
    (all reviewed). ``group`` names the subject (splits never separate a group). ``known``:
    the classes this case annotated (None: all); voxels labelled 0 may then be any unknown class
    (see ``training/partial_labels.py``)."""

    image: Volume
    labels: Volume
    reviewed: np.ndarray | None = None
    group: str = ""
    known: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.image, Volume) or not isinstance(self.labels, Volume):
            raise ValueError("TrainingPair needs napari_attnseg.volume.Volume objects for image and labels")
        if self.image.shape != self.labels.shape:
            raise ValueError(
                f"image {self.image.source or ''} has shape {self.image.shape} but its labels "
                f"{self.labels.source or ''} have shape {self.labels.shape}; they must share a grid"
            )
        if not np.issubdtype(self.labels.data.dtype, np.integer) and self.labels.data.dtype != bool:
            data = self.labels.data
            if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
                raise ValueError(f"labels {self.labels.source or ''} must be integers, got {data.dtype} values")
        if self.reviewed is not None:
            rev = np.asarray(self.reviewed)
            ok = rev.shape == self.labels.shape or (self.labels.ndim == 3 and rev.shape == (self.labels.shape[0],))
            if not ok:
                raise ValueError(
                    f"reviewed mask has shape {rev.shape}; expected {self.labels.shape} (voxels) or "
                    f"({self.labels.shape[0]},) (one flag per slice along axis 0)"
                )


def reviewed_mask(pair: TrainingPair) -> np.ndarray:
    """The reviewed voxels of ``pair`` as a new bool array shaped like its labels."""
    shape = pair.labels.shape
    if pair.reviewed is None:
        return np.ones(shape, bool)
    rev = np.asarray(pair.reviewed).astype(bool)
    if rev.shape == shape:
        return rev.copy()
    return np.broadcast_to(rev.reshape((-1,) + (1,) * (len(shape) - 1)), shape).copy()


def reviewed_slices(pair: TrainingPair) -> list[int]:
    """Indices (axis 0) of slices with any reviewed voxel; ``[0]`` or ``[]`` for a 2D pair."""
    mask = reviewed_mask(pair)
    if mask.ndim == 2:
        return [0] if mask.any() else []
    return [int(i) for i in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))]


def _restrict(pair: TrainingPair, slices: Sequence[int]) -> TrainingPair:
    mask = reviewed_mask(pair)
    if mask.ndim == 2:
        keep = mask if len(slices) else np.zeros_like(mask)
    else:
        keep = np.zeros_like(mask)
        idx = list(slices)
        keep[idx] = mask[idx]
    return TrainingPair(pair.image, pair.labels, keep, pair.group, pair.known)


def split_reviewed_slices(pairs: Sequence[TrainingPair], val_fraction: float = 0.2, min_val: int = 1,
                          seed: int = 0) -> tuple[list[TrainingPair], list[TrainingPair]]:
    """Split the reviewed slices of ``pairs`` into training and validation pairs.

    A 3D volume contributes its reviewed slices along axis 0; a 2D image is one slice. At least
    ``min_val`` slices (and ``val_fraction`` of them, rounded) are held out, and at least one
    trains; otherwise ``ValueError`` ("need at least N reviewed slices, have M"). The returned
    pairs share the (read-only) images and labels; their ``reviewed`` masks select the slices.
    """
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    min_val = int(min_val)
    if min_val < 0:
        raise ValueError(f"min_val must be >= 0, got {min_val}")
    units = [(i, s) for i, p in enumerate(pairs) for s in reviewed_slices(p)]
    need = min_val + 1
    if len(units) < need:
        raise ValueError(
            f"need at least {need} reviewed slices ({min_val} for validation, 1 for training), "
            f"have {len(units)}; mark more slices as reviewed"
        )
    n_val = max(min_val, int(round(val_fraction * len(units))))
    n_val = min(n_val, len(units) - 1)
    order = np.random.default_rng(seed).permutation(len(units))
    val_units = {units[k] for k in order[:n_val]}
    train, val = [], []
    for i, p in enumerate(pairs):
        sl = reviewed_slices(p)
        t = [s for s in sl if (i, s) not in val_units]
        v = [s for s in sl if (i, s) in val_units]
        if t:
            train.append(_restrict(p, t))
        if v:
            val.append(_restrict(p, v))
    return train, val


def split_by_group(pairs: Sequence[TrainingPair], val_fraction: float = 0.2, seed: int = 0,
                   min_val: int = 1) -> tuple[list[TrainingPair], list[TrainingPair]]:
    """Split whole pairs, keeping every ``group`` (subject) on one side (for full training)."""
    groups = sorted({p.group or f"#{i}" for i, p in enumerate(pairs)})
    if len(groups) < min_val + 1:
        raise ValueError(f"need at least {min_val + 1} cases/subjects to hold out a validation set, have {len(groups)}")
    n_val = min(len(groups) - 1, max(min_val, int(round(val_fraction * len(groups)))))
    order = np.random.default_rng(seed).permutation(len(groups))
    val_groups = {groups[k] for k in order[:n_val]}
    train = [p for i, p in enumerate(pairs) if (p.group or f"#{i}") not in val_groups]
    val = [p for i, p in enumerate(pairs) if (p.group or f"#{i}") in val_groups]
    return train, val


def data_hash(pair: TrainingPair) -> str:
    """sha256 over the image, the labels and the reviewed mask (shapes and dtypes included)."""
    h = hashlib.sha256()
    for arr in (pair.image.data, pair.labels.data, reviewed_mask(pair)):
        a = np.ascontiguousarray(arr)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- preparation
@dataclass
class PreparedItem:
    """One training unit on the model's grid: a 2D slice or a 3D volume (float32 image,
    int64 labels, bool mask of trainable voxels), never aliasing the user's arrays. A 2.5D
    model's image has a leading channel axis (2k + 1, H, W): the slice and its neighbours."""

    image: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    source: str = ""
    fg_coords: np.ndarray | None = field(default=None, repr=False)


def _normalize(volume: Volume, spec: Any) -> np.ndarray:
    from ..inference.preprocess import intensity_params, resolve_preset

    norm = dict(getattr(spec, "normalization", None) or {})
    preset = resolve_preset(None, norm, getattr(spec, "modality", "") or "", volume.modality)
    data = np.asarray(volume.data)
    if not np.issubdtype(data.dtype, np.number) and data.dtype != bool:
        raise ValueError(f"image {volume.source or ''} has non-numeric dtype {data.dtype}")
    params = intensity_params(data, preset, norm)
    out = params.apply(data)
    np.nan_to_num(out, copy=False, nan=(params.lo - params.shift) / params.scale,
                  posinf=(params.hi - params.shift) / params.scale,
                  neginf=(params.lo - params.shift) / params.scale)
    return out


def _at_model_scale(spec: Any, volume: Any, order: Sequence[int], image: np.ndarray,
                    labels: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slices resized in-plane as inference resizes them for this model (its ``inplane_zoom``
    and declared pixel-size range, :func:`~napari_attnseg.inference.preprocess.inplane_factors`):
    a fine-tune on a 0.7 mm scan trains at the scale the model predicts at. Labels and mask by
    nearest neighbour."""
    from ..inference import preprocess as pp

    shape = pp.inplane_shape(image.shape, pp.model_inplane_factors(spec, volume, order))
    if shape == image.shape:
        return image, labels, mask
    return (pp.resize_inplane(image, shape), pp.resize_labels_inplane(labels, shape),
            pp.resize_labels_inplane(mask, shape))


def training_orientation(pairs: Sequence[TrainingPair]) -> str | None:
    """The orientation a new 2D model declares (``ModelSpec.orientation``): the most common one
    (:func:`~napari_attnseg.orientation.orientation_code`) of the training volumes whose orientation
    is known; the others are reoriented to it when their slices are cut. ``None`` when none is
    (2D images, bare arrays, NIfTI files without qform/sform, NRRD without space directions)."""
    from collections import Counter

    from ..orientation import orientation_code
    from ..volume import direction_is_nominal

    codes = Counter(orientation_code(p.image.direction) for p in pairs
                    if p.image.ndim == 3 and not direction_is_nominal(p.image))
    return codes.most_common(1)[0][0] if codes else None


def prepare_pairs(pairs: Sequence[TrainingPair], spec: Any, n_classes: int) -> list[PreparedItem]:
    """Bring ``pairs`` to what the network sees (same code path as inference).

    2D models: one item per slice with reviewed voxels, cut as inference cuts them (along the
    array axis closest to world S, the in-plane axes in world order too). 3D models: one item per
    volume, reoriented to canonical and resampled to ``spec.target_spacing`` (labels and mask by
    nearest neighbour). Labels outside ``0 .. n_classes - 1`` in reviewed voxels raise
    ``ValueError`` naming the file.
    """
    from ..inference import preprocess as pp

    dims = spec.arch.spatial_dims
    items: list[PreparedItem] = []
    for pair in pairs:
        mask = reviewed_mask(pair)
        if not mask.any():
            continue
        labels = np.asarray(pair.labels.data)
        bad = labels[mask]
        if bad.size and (bad.min() < 0 or bad.max() >= n_classes):
            raise ValueError(
                f"labels {pair.labels.source or ''} contain values {sorted(set(np.unique(bad).tolist()) - set(range(n_classes)))[:5]} "
                f"outside the model's classes 0..{n_classes - 1}"
            )
        labels = encode_partial(np.where(mask, labels, 0).astype(np.int64), pair.known, n_classes)
        image = _normalize(pair.image, spec)
        name = pair.image.source or pair.group or ""
        if dims == 2:
            context = int(getattr(spec, "context_slices", 0) or 0)
            if image.ndim == 2:
                image, labels, mask = _at_model_scale(spec, pair.image, (0, 1), image, labels, mask)
                items.append(PreparedItem(pp.stack_context(image, context) if context else image,
                                          labels, mask, name))
                continue
            # the slices inference cuts (axial for a patient volume, whatever the storage
            # order: a PSR or LIP file is transposed to world order, as the predictor does;
            # reversed where it runs against the model's declared orientation)
            reo = pp.slice_reorientation(spec, pair.image)
            perm = reo.perm
            if not reo.is_identity:
                image, labels, mask = (pp.to_canonical(a, reo) for a in (image, labels, mask))
            cut = "axial " if perm != (0, 1, 2) else ""
            cut += "reversed " if reo.flip else ""
            image, labels, mask = _at_model_scale(spec, pair.image, perm, image, labels, mask)
            # 2.5D: each item's image is (2k + 1, H, W), the slice and its neighbours
            stack = pp.stack_context(image, context) if context else None
            for s in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)):
                img = stack[:, s] if stack is not None else image[s]
                items.append(PreparedItem(np.ascontiguousarray(img), np.ascontiguousarray(labels[s]),
                                          np.ascontiguousarray(mask[s]), f"{name}[{cut}{s}]"))
            continue
        if image.ndim != 3:
            raise ValueError(f"a 3D model needs 3D volumes; {name or 'an image'} has shape {image.shape}")
        reo = pp.canonical_reorientation(pair.image.direction)
        spacing = pp.reoriented_spacing(pair.image.spacing, reo)
        if not reo.is_identity:
            image, labels, mask = (np.ascontiguousarray(pp.to_canonical(a, reo)) for a in (image, labels, mask))
        target = getattr(spec, "target_spacing", None)
        if target is not None and pp.needs_resampling(spacing, target):
            from scipy import ndimage

            shape = pp.resampled_shape(image.shape, spacing, target)
            image = pp.resample(image, shape, order=1)
            zoom = [o / s for o, s in zip(shape, labels.shape)]
            labels = ndimage.zoom(labels, zoom, order=0, mode="nearest", grid_mode=False)
            mask = ndimage.zoom(mask.astype(np.uint8), zoom, order=0, mode="nearest", grid_mode=False) > 0
        items.append(PreparedItem(image, labels, mask, name))
    for it in items:
        fg = np.argwhere((it.labels > 0) & (it.labels < n_classes) & it.mask)
        it.fg_coords = fg if fg.size else None
    return items


# --------------------------------------------------------------------------- sampling
#: how the foreground-centred crops choose their voxel (BatchSampler, TrainConfig.fg_sampling)
FG_SAMPLING = ("voxel", "class")


class BatchSampler:
    """Seeded random crops of ``patch_size`` from prepared items, with optional augmentation.

    Every sample is built from its own seed drawn from the caller's ``np.random.Generator``, so
    a distributed run can build only its share of one global batch and still match a
    single-process run exactly. A third of the crops are centred on a random labelled voxel
    (foreground oversampling, as nnU-Net does).
    """

    def __init__(self, items: Sequence[PreparedItem], patch_size: Sequence[int], augment: bool = True,
                 fg_fraction: float = 1.0 / 3.0, mirror: bool = True, fg_sampling: str = "voxel"):
        if fg_sampling not in FG_SAMPLING:
            raise ValueError(f"fg_sampling must be one of {FG_SAMPLING}, got {fg_sampling!r}")
        if not items:
            raise ValueError("no training data: no reviewed voxels in the training pairs")
        self.items = list(items)
        self.patch = tuple(int(p) for p in patch_size)
        self.augment = bool(augment)
        self.fg_fraction = float(fg_fraction)
        from .augment import DEFAULT

        # mirror=False: no flips / 90-degree rotations (classes that name a side, e.g. the left
        # and right kidney, would otherwise be taught on mirrored anatomy)
        self.params = DEFAULT if mirror else dataclasses.replace(DEFAULT, p_flip=0.0, p_rot90=0.0)
        nd = self.items[0].labels.ndim  # images may have a channel axis more (2.5D)
        if len(self.patch) != nd:
            raise ValueError(f"patch_size {self.patch} has {len(self.patch)} axes but the training data is {nd}D")
        # weight items by their number of trainable voxels
        w = np.array([max(1, int(it.mask.sum())) for it in self.items], float)
        self.weights = w / w.sum()
        # "class": the foreground crops pick a class first, uniformly among those labelled, then
        # an item holding it (nnU-Net's class-balanced sampling): a class in few slices (a coronal
        # esophagus) is centred on as often as one in many
        self.class_items: dict[int, np.ndarray] = {}
        if fg_sampling == "class":
            held: dict[int, list[int]] = {}
            for i, it in enumerate(self.items):
                if it.fg_coords is not None:
                    for c in np.unique(it.labels[tuple(it.fg_coords.T)]).tolist():
                        held.setdefault(int(c), []).append(i)
            self.class_items = {c: np.array(v) for c, v in sorted(held.items())}

    def sample_seeds(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        """One 63-bit seed per sample of a global batch (advances ``rng`` identically everywhere)."""
        return rng.integers(0, 2**63 - 1, size=batch_size, dtype=np.int64)

    def build(self, seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Images (B, C, *patch) float32 (C = 1, or 2k + 1 for 2.5D items), labels (B, *patch)
        int64, mask (B, *patch) bool."""
        from .augment import random_crop

        out = [self._one(int(s), random_crop) for s in seeds]
        images = np.stack([o[0] for o in out])
        if images.ndim == len(self.patch) + 1:
            images = images[:, None]
        return images, np.stack([o[1] for o in out]), np.stack([o[2] for o in out])

    def _one(self, seed: int, random_crop) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        it = self.items[int(rng.choice(len(self.items), p=self.weights))]
        centre = None
        if self.class_items:
            if rng.random() < self.fg_fraction:
                classes = list(self.class_items)
                c = classes[int(rng.integers(len(classes)))]
                held = self.class_items[c]
                it = self.items[int(held[int(rng.integers(len(held)))])]
                coords = np.argwhere((it.labels == c) & it.mask)
                centre = coords[int(rng.integers(len(coords)))]
        elif it.fg_coords is not None and rng.random() < self.fg_fraction:
            centre = it.fg_coords[int(rng.integers(len(it.fg_coords)))]
        return random_crop(it.image, it.labels, it.mask, self.patch, rng, centre=centre, augment=self.augment,
                           params=self.params)


# --------------------------------------------------------------------------- readers
@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset folder says about itself (for the model spec and the model card)."""

    name: str
    label_names: dict[int, str]
    modality: str
    source: str
    licence: str = ""
    description: str = ""
    spatial_dims: int = 3


def _modality_from(text: str) -> str:
    t = str(text).upper()
    if "CT" in t:
        return "CT"
    if "MR" in t or t in ("T1", "T2", "FLAIR", "T1W", "T2W", "ADC"):
        return "MR"
    if "US" in t or "ULTRASOUND" in t:
        return "US"
    return ""


def _read_nifti(path: Path, labels: bool = False) -> Volume:
    from ..io import read_volume

    vol = read_volume(path)
    if labels:
        data = np.asarray(vol.data)
        if not np.issubdtype(data.dtype, np.integer):
            data = np.rint(data).astype(np.int64)
        vol = vol.with_data(data, is_labels=True)
    return vol


_FRAME_SUFFIX = re.compile(r"_(frame|phase|time|t)\d+$", re.IGNORECASE)


def subject_of(case: str) -> str:
    """The subject a case belongs to, for splitting by subject: ``patient001_frame12`` (ACDC's
    cardiac phases of one patient) -> ``patient001``; other names are their own subject."""
    return _FRAME_SUFFIX.sub("", case)


def sparse_labels(labels: Any, reviewed: Any, ignore: int | None, path: str | Path) -> tuple[Any, Any]:
    """For ``--ignore-label``: the labels Volume with 0 on unannotated voxels and the voxel mask
    of annotated ones (within the ``reviewed`` slices, when given); unchanged without it."""
    if ignore is None:
        return labels, reviewed
    data = np.asarray(labels.data)
    mask = data != ignore
    if reviewed is not None:
        flags = np.asarray(reviewed, bool)
        mask &= flags.reshape((-1,) + (1,) * (data.ndim - 1)) if flags.ndim == 1 else flags
    if not mask.any():
        raise ReadError(path, f"no annotated voxel: every voxel (of the reviewed slices) is the "
                              f"ignore value {ignore}")
    out = np.where(mask, data, 0).astype(np.int64 if data.max(initial=0) > 255 else np.uint8)
    return labels.with_data(out, is_labels=True), mask


def read_decathlon(folder: str | Path, labels_dir: str = "labelsTr",
                   ignore_label: int | None = None) -> tuple[list[TrainingPair], DatasetInfo]:
    """Read a Medical Segmentation Decathlon / nnU-Net folder: ``dataset.json`` (``labels``,
    ``modality`` (MSD, nnU-Net v1) or ``channel_names`` (v2)), ``imagesTr/`` and ``labelsTr/``.
    Images are ``case.nii.gz`` (MSD) or ``case_0000.nii.gz`` (nnU-Net); labels ``case.nii.gz``.

    Sparse labels (scribbles): ``labels_dir`` names another folder of label files (ACDC's
    ``scribblesTr``) and ``ignore_label`` the value of unannotated voxels; each pair's
    ``reviewed`` mask is then the annotated voxels, and the ignore value becomes 0 there."""
    folder = Path(folder)
    meta_path = folder / "dataset.json"
    if not meta_path.is_file():
        raise ReadError(folder, "not a Decathlon/nnU-Net dataset folder (dataset.json is missing)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReadError(meta_path, f"cannot be read as JSON: {exc}") from exc
    raw_labels = meta.get("labels")
    if not isinstance(raw_labels, dict) or not raw_labels:
        raise ReadError(meta_path, "has no 'labels' mapping")
    label_names: dict[int, str] = {}
    for k, v in raw_labels.items():
        if str(k).lstrip("-").isdigit():  # MSD / v1: {"0": "background"}
            label_names[int(k)] = str(v)
        elif isinstance(v, int):  # v2: {"background": 0}
            label_names[int(v)] = str(k)
        else:
            raise ReadError(meta_path, f"cannot understand the label entry {k!r}: {v!r}")
    if set(label_names) != set(range(len(label_names))):
        raise ReadError(meta_path, f"labels must be numbered 0..N-1, got {sorted(label_names)}")
    chans = meta.get("channel_names") or meta.get("modality") or {}
    if isinstance(chans, dict) and len(chans) > 1:
        raise ReadError(meta_path, f"has {len(chans)} input channels {list(chans.values())}; only single-channel data is supported")
    modality = _modality_from(next(iter(chans.values()), "")) if isinstance(chans, dict) and chans else ""
    ext = str(meta.get("file_ending", ".nii.gz"))
    img_dir, lab_dir = folder / "imagesTr", folder / labels_dir
    if not lab_dir.is_dir() or not img_dir.is_dir():
        raise ReadError(folder, f"needs imagesTr/ and {labels_dir}/ folders")
    subjects, known = {}, {}  # optional per-entry "subject" / "contoured" in dataset.json's "training"
    for entry in meta.get("training", []) if isinstance(meta.get("training"), list) else []:
        if not isinstance(entry, dict) or not entry.get("label"):
            continue
        key = Path(str(entry["label"])).name[: -len(ext)]
        if entry.get("subject"):
            subjects[key] = str(entry["subject"])
        if isinstance(entry.get("contoured"), list):
            bad = [c for c in entry["contoured"] if not (isinstance(c, int) and 0 < c < len(label_names))]
            if bad:
                raise ReadError(meta_path, f"case {key}: 'contoured' lists {bad}, not foreground labels "
                                           f"1..{len(label_names) - 1}")
            known[key] = tuple(sorted({0, *entry["contoured"]}))
    pairs = []
    for lab in sorted(p for p in lab_dir.iterdir() if p.name.endswith(ext) and not p.name.startswith(".")):
        case = lab.name[: -len(ext)]
        candidates = [img_dir / f"{case}_0000{ext}", img_dir / f"{case}{ext}"]
        img = next((c for c in candidates if c.is_file()), None)
        if img is None:
            raise ReadError(lab, f"has no image: looked for {candidates[0].name} and {candidates[1].name} in {img_dir}")
        image = _read_nifti(img)
        if not image.modality and modality:
            image = Volume(**{**image.__dict__, "modality": modality})
        labels = _read_nifti(lab, labels=True)
        if ignore_label is not None:
            from ..interactive.scribbles import stray_values, stray_values_message

            bad = stray_values(labels.data, len(label_names), ignore_label)
            if bad:
                raise ReadError(lab, "holds " + stray_values_message(bad, len(label_names), ignore_label))
        labels, reviewed = sparse_labels(labels, None, ignore_label, lab)
        pairs.append(TrainingPair(image, labels, reviewed, subjects.get(case) or subject_of(case), known.get(case)))
    if not pairs:
        raise ReadError(lab_dir, f"holds no label files ending in {ext}")
    info = DatasetInfo(
        name=str(meta.get("name", folder.name)), label_names=label_names, modality=modality,
        source=str(meta.get("reference", "") or folder), licence=str(meta.get("licence", meta.get("license", ""))),
        description=str(meta.get("description", "")), spatial_dims=pairs[0].image.ndim,
    )
    return pairs, info


def _read_png(path: Path, spacing: float = 1.0) -> np.ndarray:
    from skimage import io as skio

    try:
        data = skio.imread(str(path))
    except (OSError, ValueError) as exc:
        raise ReadError(path, f"cannot be read as an image: {exc}") from exc
    if data.ndim == 3:  # RGB(A) -> grey
        data = data[..., :3].mean(axis=-1)
    return np.asarray(data)


def _read_any(path: Path, labels: bool) -> Volume:
    name = path.name.lower()
    if name.endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")):
        data = _read_png(path)
        if labels:
            data = data.astype(np.int64)
        return Volume(data, (1.0, 1.0), is_labels=labels, source=str(path))
    return _read_nifti(path, labels=labels)


def read_pair_list(path: str | Path) -> tuple[list[TrainingPair], DatasetInfo]:
    """Read a text/CSV file with one ``image,label`` pair per line (relative paths are relative
    to the file; lines starting with '#' and a header ``image,label`` are skipped)."""
    path = Path(path)
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError) as exc:
        raise ReadError(path, f"cannot be read: {exc}") from exc
    pairs = []
    for n, row in enumerate(rows, 1):
        row = [c.strip() for c in row if c.strip()]
        if not row or row[0].startswith("#") or (row[0].lower() == "image" and n == 1):
            continue
        if len(row) != 2:
            raise ReadError(path, f"line {n}: expected 'image,label', got {','.join(row)!r}")
        img, lab = ((path.parent / c) if not Path(c).is_absolute() else Path(c) for c in row)
        for p in (img, lab):
            if not p.exists():
                raise ReadError(path, f"line {n}: {p} does not exist")
        pairs.append(TrainingPair(_read_any(img, False), _read_any(lab, True), None, img.name))
    if not pairs:
        raise ReadError(path, "lists no image,label pairs")
    n_classes = int(max(int(np.max(p.labels.data)) for p in pairs)) + 1
    names = {0: "background", **{k: f"label_{k}" for k in range(1, max(2, n_classes))}}
    return pairs, DatasetInfo(path.stem, names, pairs[0].image.modality, str(path), spatial_dims=pairs[0].image.ndim)


HC18_SOURCE = ("HC18 grand challenge training set (van den Heuvel et al., PLoS ONE 13(8): e0200412, 2018), "
               "Zenodo, CC BY 4.0")


def read_hc18(folder: str | Path, limit: int | None = None) -> tuple[list[TrainingPair], DatasetInfo]:
    """Read the HC18 fetal-head ultrasound layout: ``images/NNN_HC.png``,
    ``masks/NNN_HC_mask.png`` and ``pixel_size_and_hc.csv`` (its header names the columns;
    pixel size in mm). Pairs are grouped by subject (the first three digits)."""
    folder = Path(folder)
    csv_path = folder / "pixel_size_and_hc.csv"
    if not csv_path.is_file():
        raise ReadError(folder, "not an HC18 folder (pixel_size_and_hc.csv is missing)")
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = {c.lower().strip(): c for c in (reader.fieldnames or [])}
        fcol = cols.get("filename")
        pcol = next((cols[c] for c in cols if c.startswith("pixel")), None)
        if fcol is None or pcol is None:
            raise ReadError(csv_path, f"expected 'filename' and 'pixel size' columns, got {reader.fieldnames}")
        rows = [(r[fcol], float(r[pcol])) for r in reader]
    pairs = []
    for fname, px in rows[: limit if limit else None]:
        img = folder / "images" / fname
        mask = folder / "masks" / (Path(fname).stem + "_mask.png")
        if not img.is_file() or not mask.is_file():
            raise ReadError(img, f"image or its mask {mask.name} is missing")
        data = _read_png(img)
        lab = (_read_png(mask) > 0).astype(np.uint8)
        image = Volume(data, (px, px), modality="US", source=str(img))
        labels = Volume(lab, (px, px), is_labels=True, source=str(mask))
        pairs.append(TrainingPair(image, labels, None, fname[:3]))
    info = DatasetInfo("hc18", {0: "background", 1: "fetal head"}, "US", HC18_SOURCE, "CC BY 4.0",
                       "2D B-mode ultrasound of the fetal head", 2)
    return pairs, info


def read_dataset(path: str | Path, limit: int | None = None, labels_dir: str = "labelsTr",
                 ignore_label: int | None = None) -> tuple[list[TrainingPair], DatasetInfo]:
    """Any supported layout: a Decathlon/nnU-Net folder, an HC18 folder, or a pair-list file.
    ``labels_dir`` / ``ignore_label``: sparse labels of a Decathlon folder (see :func:`read_decathlon`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset {path} does not exist")
    if (labels_dir != "labelsTr" or ignore_label is not None) and not (path / "dataset.json").is_file():
        raise ReadError(path, "sparse labels (--labels-dir / --ignore-label) need a Decathlon folder (dataset.json)")
    if path.is_file():
        pairs, info = read_pair_list(path)
    elif (path / "dataset.json").is_file():
        pairs, info = read_decathlon(path, labels_dir, ignore_label)
    elif (path / "pixel_size_and_hc.csv").is_file():
        return read_hc18(path, limit)
    else:
        raise ReadError(path, "unknown dataset layout: expected dataset.json (Decathlon/nnU-Net), "
                              "pixel_size_and_hc.csv (HC18) or a text file of image,label lines")
    return (pairs[:limit] if limit else pairs), info
