"""The volume model: an array in (z, y, x) order with the geometry that places it in the world.

Conventions (used everywhere in the package)
--------------------------------------------
* ``data`` is indexed ``(z, y, x)`` for 3D and ``(y, x)`` for 2D. For a NIfTI file this is the
  nibabel array transposed (``k, j, i``); for DICOM it is (slice, row, column).
* The *world* frame is patient RAS+ in millimetres, with its axes listed in **reversed** order
  (S, A, R) so that world axis ``n`` pairs with array axis ``n``. A canonical RAS volume therefore
  has an identity ``direction`` and shows unrotated in napari, with ``scale = spacing``.
* ``affine`` is the ``(ndim+1) x (ndim+1)`` matrix mapping an array index (z, y, x, 1) to the
  world point (S, A, R, 1): ``affine[:ndim, :ndim] = direction @ diag(spacing)``,
  ``affine[:ndim, ndim] = origin``. This is exactly napari's data-to-world transform.
* :func:`nifti_affine_from_zyx` / :func:`zyx_affine_from_nifti` convert to and from the usual
  nibabel affine (index i, j, k -> x, y, z RAS) by reversing axes, which is exact in floating point.

The volume is a frozen dataclass; derive new volumes with :meth:`Volume.with_data`, which copies
the geometry (the one way derived results inherit their source's placement).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

#: Modality presets known to the package (used by preprocessing and CRF defaults).
MODALITIES = ("CT", "MR", "US", "")
#: ``header[SPACING_NOMINAL]`` is True when the file gave no voxel size and 1 mm was assumed
#: (NIfTI without qform/sform and a pixdim of 1, NRRD without spacings, a PNG without a pixel
#: size, a bare array or layer): such a spacing is not a measurement, so no model resizes by it.
SPACING_NOMINAL = "spacing_nominal"


def spacing_is_nominal(volume: Any) -> bool:
    """True when ``volume``'s voxel size was assumed, not read (see :data:`SPACING_NOMINAL`)."""
    return bool(dict(getattr(volume, "header", None) or {}).get(SPACING_NOMINAL, False))


#: ``header[DIRECTION_NOMINAL]`` is True when the file gave no orientation and one was assumed
#: (NIfTI without qform/sform, even with a real pixdim: OpenKBP; NRRD without space directions;
#: a MetaImage without TransformMatrix; a layer from another reader): which way the patient lies
#: in the array is then unknown, so no model reorients by it.
DIRECTION_NOMINAL = "direction_nominal"


def direction_is_nominal(volume: Any) -> bool:
    """True when ``volume``'s direction was assumed, not read (:data:`DIRECTION_NOMINAL`, or a
    nominal spacing: no geometry at all)."""
    header = dict(getattr(volume, "header", None) or {})
    return bool(header.get(DIRECTION_NOMINAL, False) or header.get(SPACING_NOMINAL, False))


def _as_tuple(values: Sequence[float], ndim: int, what: str) -> tuple[float, ...]:
    out = tuple(float(v) for v in np.asarray(values, dtype=float).ravel())
    if len(out) != ndim:
        raise ValueError(f"{what} has {len(out)} values but the array has {ndim} dimensions")
    return out


@dataclass(frozen=True, eq=False)
class Volume:
    """A scan or a mask with its geometry.

    Parameters
    ----------
    data : ndarray, shape (z, y, x) or (y, x)
        Voxel values (any dtype; labels are integer).
    spacing : tuple of float
        Voxel size in mm along each array axis (same order as ``data.shape``).
    origin : tuple of float, optional
        World position (mm, reversed RAS order) of the centre of voxel 0. Default zeros.
    direction : ndarray (ndim, ndim), optional
        Unit column vectors: world direction of each array axis. Default identity.
    modality : str
        "CT", "MR", "US" or "" (unknown).
    is_labels : bool
        True for integer label volumes (opened as napari Labels layers).
    source : str or None
        The file or folder this volume came from.
    header : mapping
        What a writer needs to write back exactly (e.g. ``nifti_affine``, ``qform_code``,
        ``sform_code``, DICOM tags). Readers fill it; writers must not require it.
    warnings : tuple of str
        Problems found while reading (uneven spacing, NaN voxels replaced, ...).
    metadata : mapping
        Provenance added by later steps (model id, parameters); saved in writers' sidecars.
    """

    data: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...] | None = None
    direction: np.ndarray | None = None
    modality: str = ""
    is_labels: bool = False
    source: str | None = None
    header: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        data = np.asarray(self.data)
        if data.ndim not in (2, 3):
            raise ValueError(
                f"A Volume is 2D (y, x) or 3D (z, y, x); got an array of shape {data.shape}"
            )
        ndim = data.ndim
        object.__setattr__(self, "data", data)
        spacing = _as_tuple(self.spacing, ndim, "spacing")
        if not all(np.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"spacing must be positive and finite, got {spacing}")
        object.__setattr__(self, "spacing", spacing)
        origin = (0.0,) * ndim if self.origin is None else _as_tuple(self.origin, ndim, "origin")
        object.__setattr__(self, "origin", origin)
        if self.direction is None:
            direction = np.eye(ndim)
        else:
            direction = np.array(self.direction, dtype=float)
            if direction.shape != (ndim, ndim):
                raise ValueError(f"direction must be {ndim}x{ndim}, got {direction.shape}")
        direction.setflags(write=False)
        object.__setattr__(self, "direction", direction)
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        object.__setattr__(self, "warnings", tuple(self.warnings))

    # ------------------------------------------------------------------ geometry
    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def affine(self) -> np.ndarray:
        """(ndim+1)² index (z, y, x) -> world (S, A, R) matrix in mm (napari's data-to-world)."""
        n = self.ndim
        a = np.eye(n + 1)
        a[:n, :n] = self.direction @ np.diag(self.spacing)
        a[:n, n] = self.origin
        return a

    @property
    def is_axis_aligned(self) -> bool:
        """True when every array axis runs along one world axis (a signed permutation)."""
        d = np.abs(self.direction)
        return bool(np.all((np.isclose(d, 0, atol=1e-6)) | (np.isclose(d, 1, atol=1e-6))))

    @property
    def is_identity_direction(self) -> bool:
        return bool(np.allclose(self.direction, np.eye(self.ndim), atol=1e-9))

    @property
    def anisotropy(self) -> float:
        """Largest over smallest voxel size (1.0 = isotropic)."""
        return max(self.spacing) / min(self.spacing)

    def orientation_code(self) -> str:
        """Three-letter orientation of the array axes in (x, y, z) = (i, j, k) order, e.g. 'RAS'
        or 'LPS', as nibabel's ``aff2axcodes`` reports it for the equivalent NIfTI file."""
        if self.ndim != 3:
            return ""
        nib_aff = nifti_affine_from_zyx(self.affine)
        pos, neg = "RAS", "LPI"
        codes = []
        for col in nib_aff[:3, :3].T:  # columns for i, j, k
            axis = int(np.argmax(np.abs(col)))
            codes.append(pos[axis] if col[axis] > 0 else neg[axis])
        return "".join(codes)

    def geometry_summary(self) -> dict[str, Any]:
        """Plain-dict summary for widgets, sidecars and logs."""
        return {
            "shape": list(self.shape),
            "spacing_mm": [round(s, 6) for s in self.spacing],
            "origin_mm": [round(o, 6) for o in self.origin],
            "orientation": self.orientation_code(),
            "axis_aligned": self.is_axis_aligned,
            "anisotropy": round(self.anisotropy, 3),
            "modality": self.modality,
            "warnings": list(self.warnings),
        }

    def same_grid(self, other: Volume, atol: float = 1e-4) -> bool:
        """True when ``other`` has the same shape and affine (so voxels correspond)."""
        return self.shape == other.shape and bool(np.allclose(self.affine, other.affine, atol=atol))

    # ------------------------------------------------------------------ deriving
    def with_data(self, data: np.ndarray, *, is_labels: bool | None = None,
                  metadata: Mapping[str, Any] | None = None) -> Volume:
        """A new volume on the same grid (same spatial shape) carrying this one's geometry."""
        data = np.asarray(data)
        if data.shape != self.data.shape:
            raise ValueError(
                f"derived data has shape {data.shape}, the source volume {self.data.shape}"
            )
        meta = dict(self.metadata)
        if metadata:
            meta.update(metadata)
        return replace(
            self,
            data=data,
            is_labels=self.is_labels if is_labels is None else is_labels,
            metadata=meta,
        )


def geometry_from_affine(affine: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], np.ndarray]:
    """Split an index->world affine into (spacing, origin, direction)."""
    affine = np.asarray(affine, dtype=float)
    n = affine.shape[0] - 1
    lin = affine[:n, :n]
    spacing = np.linalg.norm(lin, axis=0)
    if np.any(spacing == 0):
        raise ValueError("affine has a zero-length axis")
    direction = lin / spacing
    return tuple(spacing.tolist()), tuple(affine[:n, n].tolist()), direction


def volume_from_affine(data: np.ndarray, affine: np.ndarray, **kwargs: Any) -> Volume:
    """Build a :class:`Volume` from data (z, y, x) and its index->world (S, A, R) affine."""
    spacing, origin, direction = geometry_from_affine(affine)
    return Volume(data=data, spacing=spacing, origin=origin, direction=direction, **kwargs)


def _reverse(n: int) -> np.ndarray:
    p = np.zeros((n + 1, n + 1))
    p[:n, :n] = np.eye(n)[::-1]
    p[n, n] = 1.0
    return p


def nifti_affine_from_zyx(affine_zyx: np.ndarray) -> np.ndarray:
    """Convert a (z, y, x)-index -> (S, A, R) affine into nibabel's (i, j, k) -> (R, A, S) affine
    for the transposed array. Exact (a permutation of entries)."""
    affine_zyx = np.asarray(affine_zyx, dtype=float)
    n = affine_zyx.shape[0] - 1
    p = _reverse(n)
    return p @ affine_zyx @ p


def zyx_affine_from_nifti(affine_nifti: np.ndarray) -> np.ndarray:
    """Inverse of :func:`nifti_affine_from_zyx` (the same permutation)."""
    return nifti_affine_from_zyx(affine_nifti)
