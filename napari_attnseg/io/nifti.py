"""NIfTI-1/2 reading with nibabel: (i, j, k) arrays become (z, y, x) volumes, the file's affine
kept in the header so that writing back reproduces it exactly."""

from __future__ import annotations

import logging
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ReadError
from ..volume import (DIRECTION_NOMINAL, SPACING_NOMINAL, Volume, geometry_from_affine, volume_from_affine,
                      zyx_affine_from_nifti)
from ._common import as_label_array, replace_nonfinite, squeeze_trailing
from .validate import (check_axes, check_memory, check_spacing, is_gzip, label_hint,
                       looks_like_labels, read_gzip_head, read_gzip_range,
                       require_regular_file, verify_gzip)

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: raw header fields that define the qform; copied back verbatim by the writer
QFORM_FIELDS = ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z")
#: NIfTI datatype codes: complex voxels are refused, colour ones converted to grey
COMPLEX_CODES = {32: "complex64", 1792: "complex128", 2048: "complex256"}
COLOUR_CODES = {128: "RGB24", 2304: "RGBA32"}
#: intent codes saying "label map" (NIFTI_INTENT_LABEL, NIFTI_INTENT_NEURONAME)
LABEL_INTENTS = (1002, 1003)


def is_nifti(path: str | Path) -> bool:
    """True when the name ends in .nii or .nii.gz (no file access; never raises)."""
    name = str(path).lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _raw_header(head: bytes, path: Path):
    """The header exactly as stored (nibabel's checks would replace a zero pixdim by 1)."""
    import nibabel as nib

    if len(head) < 348:
        raise ReadError(path, f"is too short for a NIfTI header ({len(head)} bytes)")
    size = int.from_bytes(head[:4], "little")
    if size not in (348, 540):
        size = int.from_bytes(head[:4], "big")
    if size == 348 and head[344:348] in (b"n+1\0", b"ni1\0"):
        klass, n = nib.Nifti1Header, 348
    elif size == 540 and len(head) >= 540 and head[4:8] in (b"n+2\0", b"ni2\0"):
        klass, n = nib.Nifti2Header, 540
    else:
        raise ReadError(path, "not a NIfTI file (no NIfTI-1/2 header magic)")
    if head[4:8] == b"ni2\0" or head[344:348] == b"ni1\0":
        raise ReadError(path, "is a NIfTI header whose voxels live in a separate .img file; "
                              "only single-file NIfTI (.nii, .nii.gz) is read")
    try:
        return klass(binaryblock=head[:n], check=False)
    except Exception as exc:  # nibabel raises several types on garbage headers
        raise ReadError(path, f"has an unreadable NIfTI header ({exc})") from exc


def _check_geometry(hdr: Any, shape: tuple[int, ...], path: Path) -> None:
    """The transform nibabel will use (sform, else qform, else pixdim) must be usable."""
    spatial = shape[:3]
    used = [i for i, s in enumerate(spatial) if s > 1] or [0]
    if int(hdr["sform_code"]) > 0:
        srows = np.stack([np.asarray(hdr[k], dtype=float) for k in ("srow_x", "srow_y",
                                                                     "srow_z")])
        if not np.all(np.isfinite(srows)):
            raise ReadError(path, f"the sform has NaN or infinite entries: {srows.tolist()}")
        check_axes(srows[:, used], path, "sform")
        return
    pixdim = np.asarray(hdr["pixdim"], dtype=float)
    check_spacing(pixdim[1:4][used], path, "pixdim (voxel size)")
    if int(hdr["qform_code"]) > 0:
        q = np.array([float(hdr[k]) for k in QFORM_FIELDS])
        if not np.all(np.isfinite(q)):
            raise ReadError(path, f"the qform has NaN or infinite entries "
                                  f"({dict(zip(QFORM_FIELDS, q.tolist()))})")
        if float(np.sum(q[:3] ** 2)) > 1 + 1e-4:
            raise ReadError(path, "the qform quaternion (b, c, d) has a norm above 1; the "
                                  "orientation is undefined")


def inspect_nifti(path: str | Path, *, verify_data: bool = True) -> dict[str, Any]:
    """Check a NIfTI file before nibabel allocates anything: a regular file, a real header,
    plausible geometry, a size that fits in memory and in the file and, for .nii.gz, the whole
    gzip stream with its CRC (``verify_data``). Returns a few header facts."""
    path = require_regular_file(Path(path))
    gz = is_gzip(path)
    if gz:
        head = read_gzip_head(path, 540)
    else:
        with open(path, "rb") as fh:
            head = fh.read(540)
    hdr = _raw_header(head, path)
    dim = [int(d) for d in hdr["dim"]]
    if not 1 <= dim[0] <= 7:
        raise ReadError(path, f"header dim[0] = {dim[0]} is not a number of dimensions (1..7)")
    shape = tuple(dim[1:dim[0] + 1])
    code = int(hdr["datatype"])
    if code in COMPLEX_CODES:
        raise ReadError(path, f"holds complex-valued voxels ({COMPLEX_CODES[code]}); only "
                              "real-valued scans can be read (save the magnitude or the real "
                              "part)")
    try:
        itemsize = hdr.get_data_dtype().itemsize
    except Exception as exc:  # nibabel: unknown datatype code
        raise ReadError(path, f"has an unknown NIfTI datatype code {code}") from exc
    full = check_memory(path, shape, itemsize)
    _check_geometry(hdr, squeeze_trailing(shape, 2), path)
    offset = int(float(hdr["vox_offset"]))
    need = offset + full * itemsize
    if gz:
        if verify_data:  # read_nifti verifies in the pass that reads the voxels instead
            verify_gzip(path, need_bytes=need)
    else:
        size = path.stat().st_size
        if size < need:
            raise ReadError(path, f"is truncated: the header declares {full * itemsize:,} bytes "
                                  f"of voxels from byte {offset}, the file has {size:,} bytes")
    return {"shape": shape, "datatype": code, "intent_code": int(hdr["intent_code"]),
            "gzip": gz, "offset": offset}


def _voxels(img: Any, path: Path, facts: dict[str, Any], volume: int | None = None
            ) -> np.ndarray:
    """The (scaled) voxels of the file, or of one volume of a 4D file. A .nii.gz is read in one
    decompression pass that also checks its CRC (:func:`.validate.read_gzip_range`); the
    scaling is nibabel's (``ArrayProxy``, slope/inter in their own dtype)."""
    if not facts["gzip"]:
        if volume is None:
            return np.asarray(img.dataobj)
        index = (slice(None),) * 3 + (volume,) + (0,) * (len(img.shape) - 4)
        return np.asarray(img.dataobj[index])
    from nibabel.volumeutils import apply_read_scaling

    dtype = img.header.get_data_dtype()
    shape = tuple(int(s) for s in img.shape)
    vshape = shape if volume is None else shape[:3]
    nbytes = math.prod(vshape) * dtype.itemsize
    start = facts["offset"] + (0 if volume is None else volume * nbytes)
    raw = np.ndarray(vshape, dtype=dtype, buffer=read_gzip_range(path, start, nbytes),
                     order="F")
    proxy = img.dataobj
    slope, inter = np.asanyarray(proxy.slope), np.asanyarray(proxy.inter)
    if np.can_cast(inter, slope.dtype):
        inter = inter.astype(slope.dtype)
    return apply_read_scaling(raw, slope, inter)


def _load(path: Path):
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    try:
        return nib.load(str(path), mmap=False)
    except (ImageFileError, HeaderDataError, EOFError, OSError, ValueError, zlib.error,
            np.linalg.LinAlgError) as exc:
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


def _colour_to_grey(arr: np.ndarray, path: Path) -> tuple[np.ndarray, list[str]]:
    """RGB24 / RGBA32 voxels -> grey (luminance; identical channels kept as they are)."""
    r, g, b = (np.asarray(arr[c]) for c in ("R", "G", "B"))
    if np.array_equal(r, g) and np.array_equal(r, b):
        return r, [f"{path.name} is an RGB NIfTI with equal channels; read as grey"]
    grey = 0.299 * r.astype(np.float32) + 0.587 * g + 0.114 * b.astype(np.float32)
    return grey.astype(np.float32), [f"{path.name} is an RGB NIfTI; converted to grey "
                                     "(luminance 0.299 R + 0.587 G + 0.114 B)"]


def read_nifti(path: str | Path, *, split_4d: int | None = None) -> Volume:
    """Read a 2D, 3D or (with ``split_4d``) 4D NIfTI file as a (z, y, x) / (y, x) Volume.

    * the array is transposed ((i, j, k) -> (k, j, i)); the affine converted exactly, oblique kept;
    * scl_slope / scl_inter applied (integer dtype kept when there is no scaling);
    * NaN / Inf voxels replaced by the smallest finite value, with a warning naming the count;
    * integer-valued volumes with few values come back with ``is_labels=True``.
    """
    path = Path(path)
    facts = inspect_nifti(path, verify_data=False)  # the CRC: checked while reading below
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
                                      f"one with split_4d=i, i in 0..{n_vol - 1} "
                                      "(--split-4d i on the command line)")
            if not 0 <= int(split_4d) < n_vol:
                raise ReadError(path, f"split_4d={split_4d} is out of range: the file has "
                                      f"{n_vol} volumes (0..{n_vol - 1})")
            arr = _voxels(img, path, facts, int(split_4d))
            spatial_file_shape = full_shape[:3]
        else:
            if split_4d is not None:
                raise ReadError(path, f"split_4d={split_4d} was given but the file is "
                                      f"{len(shape)}D (shape {full_shape}), not 4D")
            arr = _voxels(img, path, facts)
            spatial_file_shape = full_shape[:3] if len(full_shape) >= 3 else full_shape
    except (EOFError, OSError, ValueError, zlib.error) as exc:
        raise ReadError(path, f"voxel data could not be read; the file looks truncated or "
                              f"corrupt ({type(exc).__name__}: {exc})") from exc
    vol_shape = squeeze_trailing(arr.shape, 2)
    arr = arr.reshape(vol_shape)
    if arr.dtype.names:
        arr, w = _colour_to_grey(arr, path)
        warnings += w
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

    hint = label_hint(path, True if facts["intent_code"] in LABEL_INTENTS else None)
    is_labels = looks_like_labels(data, hint)
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
        # no qform/sform and a pixdim of 1 (ACDC as published): the voxel size was never written
        SPACING_NOMINAL: (int(hdr["qform_code"]) == 0 and int(hdr["sform_code"]) == 0
                          and all(float(v) == 1.0 for v in np.asarray(hdr["pixdim"])[1:1 + min(3, len(spatial_file_shape))])),
        # no qform/sform at all (OpenKBP as published): nibabel's fallback affine is not the
        # patient's orientation
        DIRECTION_NOMINAL: int(hdr["qform_code"]) == 0 and int(hdr["sform_code"]) == 0,
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
    if header[SPACING_NOMINAL]:
        warnings.append(f"{path.name} gives no voxel size (no qform/sform, pixdim 1): 1 mm is "
                        "assumed, so distances and volumes in mm (HD95, ASSD, mm³) are in voxels")
    return volume_from_affine(data, zyx, is_labels=is_labels, source=str(path),
                              header=header, warnings=tuple(warnings))


def read_nifti_channels(path: str | Path) -> tuple[np.ndarray, Volume]:
    """A 4D NIfTI with the channel axis last (``i, j, k, C``, as probability maps are written)
    as a float32 ``(C, z, y, x)`` array and the Volume of its first channel (its geometry),
    through the same checks as :func:`read_nifti`."""
    path = Path(path)
    facts = inspect_nifti(path, verify_data=False)  # the CRC: checked while reading below
    img = _load(path)
    if len(img.shape) != 4:
        raise ReadError(path, f"has shape {tuple(img.shape)}; a 4D file (i, j, k, class) is "
                              "needed here")
    try:
        data = np.asarray(_voxels(img, path, facts), dtype=np.float32)
    except (EOFError, OSError, ValueError, zlib.error) as exc:
        raise ReadError(path, f"voxel data could not be read ({type(exc).__name__}: "
                              f"{exc})") from exc
    data = np.ascontiguousarray(np.transpose(data, (3, 2, 1, 0)))
    zyx = zyx_affine_from_nifti(np.array(img.affine, dtype=float))
    try:
        geometry = volume_from_affine(data[0], zyx, source=str(path), header={"format": "nifti"})
    except ValueError as exc:
        raise ReadError(path, f"has an invalid affine ({exc})") from exc
    from .validate import check_volume

    check_volume(geometry, path)
    return data, geometry
