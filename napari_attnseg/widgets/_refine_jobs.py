"""The Refine widget's form, snapshot and jobs (no Qt): :class:`RefineParams` (the form: one
source of its defaults, limits and validation), :class:`RefineRequest` (what a run reads on the
GUI thread), the probability helpers and the slice preview job."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

import numpy as np

from .._napari.layers import META_KEY
from .._progress import Job

logger = logging.getLogger(__name__)

#: The form fields that are CRF parameters (the rest: how the input and the run are set up).
CRF_FIELDS = ("sxy_gaussian_mm", "gaussian_weight", "sxy_bilateral_mm", "srgb_bilateral",
              "bilateral_weight", "iterations", "mode", "workers")


@dataclass(frozen=True)
class RefineParams:
    """The form: the dense-CRF parameters (see :class:`~napari_attnseg.crf.CRFParams`), the
    confidence given to a labels input and the boundary band (0 = off: the whole volume). The
    modality presets (``crf.default_params``) fill the CRF fields when the image changes."""

    confidence: Annotated[float, {"min": 0.51, "max": 0.99, "step": 0.01}] = field(
        default=0.8, metadata={"label": "Confidence (labels input)",
                               "tooltip": "probability given to the label of each voxel when "
                                          "a Labels layer is refined"})
    sxy_gaussian_mm: Annotated[float, {"min": 0.1, "max": 100.0, "step": 0.1}] = field(
        default=1.0, metadata={"label": "Smoothness bandwidth (mm)"})
    gaussian_weight: Annotated[float, {"min": 0.0, "max": 100.0, "step": 0.5}] = field(
        default=2.0, metadata={"label": "Smoothness weight"})
    sxy_bilateral_mm: Annotated[float, {"min": 0.1, "max": 500.0, "step": 0.5}] = field(
        default=5.0, metadata={"label": "Appearance bandwidth (mm)"})
    srgb_bilateral: Annotated[float, {"min": 0.5, "max": 255.0, "step": 0.5}] = field(
        default=20.0, metadata={"label": "Intensity bandwidth (0..255)",
                                "tooltip": "in units of the image mapped to 0..255 (its 1st..99th "
                                           "percentile)"})
    bilateral_weight: Annotated[float, {"min": 0.0, "max": 100.0, "step": 0.5}] = field(
        default=3.0, metadata={"label": "Appearance weight"})
    iterations: Annotated[int, {"min": 1, "max": 50}] = field(
        default=5, metadata={"label": "Iterations"})
    mode: Literal["auto", "2d", "3d"] = field(
        default="auto", metadata={"label": "Mode", "tooltip": "2d: every slice on its own; "
                                  "3d: one CRF over the volume; auto: 3D unless slices are thick "
                                  "or it does not fit in memory"})
    band_mm: Annotated[float, {"min": 0.0, "max": 200.0, "step": 0.5}] = field(
        default=0.0, metadata={"label": "Boundary band (mm, 0 = off)",
                               "tooltip": "only voxels this close to the label boundary may "
                                          "change; 0: the whole volume"})
    workers: Annotated[int, {"min": 1, "max": 64}] = field(
        default=2, metadata={"label": "Workers", "tooltip": "processes refining 2D slices"})

    def as_core(self) -> Any:
        """The :class:`~napari_attnseg.crf.CRFParams` (ValueError when a value is invalid)."""
        from ..crf import CRFParams

        return CRFParams(**{k: getattr(self, k) for k in CRF_FIELDS},
                         band_mm=self.band_mm if self.band_mm > 0 else None)

    def with_core(self, p: Any) -> RefineParams:
        """These settings with the CRF parameters of ``p`` (a CRFParams; workers kept)."""
        return replace(self, **{k: getattr(p, k) for k in CRF_FIELDS if k != "workers"},
                       band_mm=float(p.band_mm or 0.0))

    def problems(self) -> list[str]:
        """Why these values cannot run (empty when they can)."""
        try:
            self.as_core()
        except ValueError as exc:
            return [str(exc)]
        return []

    @classmethod
    def for_modality(cls, modality: str = "") -> RefineParams:
        """The defaults with the modality's CRF preset (the unknown-modality preset for an
        unknown name)."""
        from ..crf import default_params

        try:
            preset = default_params(modality or "")
        except ValueError:
            preset = default_params("")
        return cls().with_core(preset)


def request_problems(source: Any, image: Any, ground_truth: Any = None,
                     need_truth: bool = False) -> list[str]:
    """Why a run cannot start with these layers (pure: reads names, types and shapes)."""
    out = []
    if source is None:
        out.append("Choose a probability (or labels) layer to refine")
    if image is None:
        out.append("Choose the image layer the segmentation was made from")
    if source is not None and image is not None and type(source).__name__ == "Labels" and \
            tuple(np.shape(source.data)) != tuple(np.shape(image.data)):
        out.append(f"Labels '{source.name}' has shape {tuple(np.shape(source.data))} but image "
                   f"'{image.name}' has {tuple(np.shape(image.data))}")
    if need_truth and ground_truth is None:
        out.append("Choose a ground-truth Labels layer for auto-tune")
    return out


@dataclass(frozen=True)
class RefineRequest:
    """Inputs read on the GUI thread: probabilities ((C, *spatial) or foreground), image, spacing,
    the CRF parameters, the image and source layers (objects: renames do not matter)."""

    probabilities: np.ndarray
    image: np.ndarray
    spacing: tuple[float, ...]
    params: Any  # CRFParams
    image_layer: Any
    source_layer: Any
    slice_index: int | None = None  # preview: the z index refined in 2D
    ground_truth: np.ndarray | None = None

    @property
    def image_name(self) -> str:
        return self.image_layer.name

    @property
    def source_name(self) -> str:
        return self.source_layer.name


def labels_to_probabilities(labels: np.ndarray, confidence: float) -> np.ndarray:
    """One-hot probabilities from labels: ``confidence`` on the label, the rest spread evenly."""
    lab = np.asarray(labels).astype(np.int64)
    if lab.min(initial=0) < 0:
        raise ValueError("labels must be >= 0 to build probabilities")
    c = max(int(lab.max(initial=0)) + 1, 2)
    other = (1.0 - confidence) / (c - 1)
    probs = np.full((c,) + lab.shape, other, np.float32)
    np.put_along_axis(probs, lab[None], np.float32(confidence), axis=0)
    return probs


def class_probabilities(layer: Any, spatial_shape: tuple[int, ...]) -> np.ndarray | None:
    """The full (C, *spatial) class probabilities the Segment widget keeps in
    ``layer.metadata["attnseg"]["class_probabilities"]`` for a multi-class model (the layer
    itself shows only the foreground), or ``None`` when absent or not on ``spatial_shape``."""
    meta = (getattr(layer, "metadata", None) or {}).get(META_KEY)
    arr = meta.get("class_probabilities") if isinstance(meta, dict) else None
    if arr is None:
        return None
    arr = np.asarray(arr)
    if arr.ndim != len(spatial_shape) + 1 or tuple(arr.shape[1:]) != tuple(spatial_shape) \
            or tuple(np.shape(layer.data)) != tuple(spatial_shape):
        logger.info("ignoring class probabilities of shape %s on '%s' (image %s)", arr.shape,
                    getattr(layer, "name", "?"), spatial_shape)
        return None
    return arr


def drop_broken_pool(exc: BaseException) -> None:
    """A CRF worker process died (e.g. killed for memory): the shared slice pool is unusable
    for good (``BrokenProcessPool``), so drop it and let the next run start a fresh one."""
    from concurrent.futures import BrokenExecutor

    if isinstance(exc, BrokenExecutor):
        from ..crf import shutdown_pool

        shutdown_pool()


def preview_job(req: RefineRequest) -> Job[tuple[Any, int]]:
    """Refine one z slice in 2D (the whole image when it is 2D); the boundary band, when set,
    applies within the slice (so a small object previews faster)."""
    from ..crf import refine_job

    z = req.slice_index
    probs, img, sp = req.probabilities, req.image, req.spacing
    if img.ndim == 3 and z is not None:
        img, sp = img[z], sp[1:]
        probs = probs[z] if probs.ndim == 3 else probs[:, z]
    res = yield from refine_job(probs, img, sp, replace(req.params, mode="2d"))
    return res, z


def refine_volume_job(req: RefineRequest) -> Job[Any]:
    from ..crf import refine_job

    return (yield from refine_job(req.probabilities, req.image, req.spacing, req.params))


def autotune_job(req: RefineRequest) -> Job[Any]:
    from ..crf import autotune_job as core

    return (yield from core(req.probabilities, req.image, req.spacing, req.ground_truth,
                            base=req.params))


__all__ = [
    "CRF_FIELDS", "RefineParams", "RefineRequest", "autotune_job", "class_probabilities",
    "drop_broken_pool", "labels_to_probabilities", "preview_job", "refine_volume_job",
    "request_problems"]
