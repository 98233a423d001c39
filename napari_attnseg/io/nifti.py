"""NIfTI-1/2 reading with nibabel: (i, j, k) arrays become (z, y, x) volumes, the file's affine
kept in the header so that writing back reproduces it exactly."""

from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ReadError
from ..volume import Volume, geometry_from_affine, volume_from_affine, zyx_affine_from_nifti
from ._common import (as_label_array, check_file, looks_like_labels, replace_nonfinite,
                      squeeze_trailing)

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: raw header fields that define the qform; copied back verbatim by the writer
QFORM_FIELDS = ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z")


def is_nifti(path: str | Path) -> bool:
    """True when the name ends in .nii or .nii.gz (no file access; never raises)."""
    name = str(path).lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _load(path: Path):
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    try:
        return nib.load(str(path), mmap=False)
    except (ImageFileError, HeaderDataError, EOFError, OSError, ValueError, zlib.error) as exc:
        raise ReadError(path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc


def _qform_params(header: Any) -> dict[str, Any]:
    params = {k: float(header[k]) for k in QFORM_FIELDS}
    params["pixdim"] = [float(v) for v in header["pixdim"]]
    return params


def _affine_2d(nib_affine: np.ndarray, path: Path) -> tuple[np.ndarray, list[str]]:
    """(y, x) -> (A, R) affine of a single-slice file: the in-plane part of the 4x4 affine when
    the slice lies in the axial plane, else spacing only (the writer restores the 4x4)."""
    cols = nib_affine[:3, :2]
    full = np.linalg.norm(cols, axis=0)
    inplane = np.linalg.norm(cols[:2], axis=0)
    aff = np.eye(3)
    if np.all(full > 0) and np.allclose(inplane, full, rtol=1e-6):
        aff[:2, :2] = cols[:2]
        aff[:2, 2] = nib_affine[:2, 3]
        return zyx_affine_from_nifti(aff), []
    spacing = np.where(full > 0, full, 1.0)
    aff[:2, :2] = np.diag(spacing)
    msg = (f"{path.name} is a single slice that does not lie in the axial plane; the 2D volume "
           "keeps its pixel size only (saving as NIfTI restores the file's full affine)")
    return zyx_affine_from_nifti(aff), [msg]


def read_nifti(path: str | Path, *, split_4d: int | None = None) -> Volume:
    """Read a 2D, 3D or (with ``split_4d``) 4D NIfTI file as a (z, y, x) / (y, x) Volume.

    * the array is transposed ((i, j, k) -> (k, j, i)); the affine converted exactly, oblique kept;
    * scl_slope / scl_inter applied (integer dtype kept when there is no scaling);
    * NaN / Inf voxels replaced by the smallest finite value, with a warning naming the count;
    * integer-valued volumes with few values come back with ``is_labels=True``.
    """
    path = Path(path)
    check_file(path)
    if path.is_dir():
        raise ReadError(path, "is a folder, not a NIfTI file")
    img = _load(path)
    hdr = img.header
    full_shape = tuple(int(s) for s in img.shape)
    shape = squeeze_trailing(full_shape, 2)
    warnings: list[str] = []
    if len(shape) < 2:
        raise ReadError(path, f"has shape {full_shape}; a 2D or 3D image is needed")
    if len(shape) > 4:
        raise ReadError(path, f"is {len(shape)}D with shape {full_shape}; only 2D, 3D and 4D "
                              "(with split_4d=index) NIfTI files can be read")
    try:
        if len(shape) == 4:
            n_vol = shape[3]
            if split_4d is None:
                raise ReadError(path, f"is 4D with {n_vol} volumes (shape {full_shape}); pick "
                                      f"one with split_4d=i, i in 0..{n_vol - 1}")
            if not 0 <= int(split_4d) < n_vol:
                raise ReadError(path, f"split_4d={split_4d} is out of range: the file has "
                                      f"{n_vol} volumes (0..{n_vol - 1})")
            index = (slice(None),) * 3 + (int(split_4d),) + (0,) * (len(full_shape) - 4)
            arr = np.asarray(img.dataobj[index])
            spatial_file_shape = full_shape[:3]
        else:
            if split_4d is not None:
                raise ReadError(path, f"split_4d={split_4d} was given but the file is "
                                      f"{len(shape)}D (shape {full_shape}), not 4D")
            arr = np.asarray(img.dataobj)
            spatial_file_shape = full_shape[:3] if len(full_shape) >= 3 else full_shape
    except (EOFError, OSError, ValueError, zlib.error) as exc:
        raise ReadError(path, f"voxel data could not be read; the file looks truncated or "
                              f"corrupt ({type(exc).__name__}: {exc})") from exc
    vol_shape = squeeze_trailing(arr.shape, 2)
    arr = arr.reshape(vol_shape)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    data = np.ascontiguousarray(arr.T)
    data, w = replace_nonfinite(data, path)
    warnings += w

    nib_affine = np.array(img.affine, dtype=float)
    if data.ndim == 3:
        zyx = zyx_affine_from_nifti(nib_affine)
    else:
        zyx, w = _affine_2d(nib_affine, path)
        warnings += w
    try:
        geometry_from_affine(zyx)
    except ValueError as exc:
        raise ReadError(path, f"has an invalid affine ({exc}):\n{nib_affine}") from exc

    is_labels = looks_like_labels(data)
    if is_labels and not np.issubdtype(data.dtype, np.integer):
        data = as_label_array(data)
    import nibabel as nib

    slope, inter = hdr.get_slope_inter() if hasattr(hdr, "get_slope_inter") else (None, None)
    header: dict[str, Any] = {
        "format": "nifti",
        "nifti_affine": nib_affine,
        "nifti_shape": tuple(spatial_file_shape),
        "qform_code": int(hdr["qform_code"]),
        "sform_code": int(hdr["sform_code"]),
        "nifti_qform_params": _qform_params(hdr),
        "nifti_dtype": str(img.get_data_dtype()),
        "scl": (None if slope is None else float(slope), None if inter is None else float(inter)),
        "orientation": "".join(nib.aff2axcodes(nib_affine)) if len(nib_affine) == 4 else "",
        "descrip": bytes(np.asarray(hdr["descrip"]).item()).split(b"\0")[0].decode(
            "latin-1", "replace"),
    }
    if split_4d is not None:
        header["split_4d"] = int(split_4d)
        header["n_volumes"] = int(shape[3])
    return volume_from_affine(data, zyx, is_labels=is_labels, source=str(path),
                              header=header, warnings=tuple(warnings))
