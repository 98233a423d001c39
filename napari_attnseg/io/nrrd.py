"""NRRD reading with pynrrd (3D Slicer's format): space directions + space origin -> affine."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingDependencyError, ReadError
from ..volume import DIRECTION_NOMINAL, SPACING_NOMINAL, Volume, volume_from_affine, zyx_affine_from_nifti
from ._common import as_label_array, looks_like_labels, replace_nonfinite
from .validate import check_memory, label_hint, require_regular_file

log = logging.getLogger(__name__)

NRRD_SUFFIXES = (".nrrd", ".nhdr")

#: sign of each RAS axis for the anatomical space names NRRD allows
_SPACE_SIGNS = {
    "right-anterior-superior": (1, 1, 1), "ras": (1, 1, 1),
    "left-anterior-superior": (-1, 1, 1), "las": (-1, 1, 1),
    "left-posterior-superior": (-1, -1, 1), "lps": (-1, -1, 1),
    "scanner-xyz": (1, 1, 1), "3d-right-handed": (1, 1, 1),
}


def is_nrrd(path: str | Path) -> bool:
    """True when the name ends in .nrrd or .nhdr (no file access; never raises)."""
    return str(path).lower().endswith(NRRD_SUFFIXES)


def nrrd_affine(header: dict[str, Any], path: Path, spatial_axes: list[int]
                ) -> tuple[np.ndarray, list[str]]:
    """nibabel-style 4x4 affine (index i, j, k -> RAS mm) from an NRRD header."""
    warnings: list[str] = []
    n = len(spatial_axes)
    aff = np.eye(4)
    space = str(header.get("space", "")).strip().lower()
    if "space directions" in header:
        dirs = np.asarray(header["space directions"], dtype=float)[spatial_axes]
        dim = dirs.shape[1]
        if space not in _SPACE_SIGNS:
            if space:
                raise ReadError(path, f"NRRD space '{header['space']}' is not supported (expected "
                                      "left-posterior-superior, right-anterior-superior, ...)")
            warnings.append(f"{path.name} has space directions but no 'space' field; "
                            "RAS assumed")
        signs = np.array(_SPACE_SIGNS.get(space, (1, 1, 1)), dtype=float)[:dim]
        aff[:dim, :n] = (dirs * signs).T
        origin = np.asarray(header.get("space origin", np.zeros(dim)), dtype=float)
        if not np.all(np.isfinite(origin)):
            origin = np.zeros(dim)
        aff[:dim, 3] = origin * signs
    else:
        spacings = np.asarray(header.get("spacings", [np.nan] * n), dtype=float)
        if len(spacings) != len(header.get("sizes", spacings)):
            spacings = np.full(n, np.nan)
        else:
            spacings = spacings[spatial_axes]
        missing = ~np.isfinite(spacings) | (spacings <= 0)
        if np.any(missing):
            warnings.append(f"{path.name} has no voxel size; 1.0 mm assumed")
            spacings = np.where(missing, 1.0, spacings)
        warnings.append(f"{path.name} has no space directions; axis-aligned RAS assumed")
        aff[:n, :n] = np.diag(spacings)
    return aff, warnings


_ENCODINGS = ("raw", "gzip", "gz", "bzip2", "bz2", "ascii", "text", "txt")


def inspect_nrrd(path: str | Path) -> dict[str, Any]:
    """Check an NRRD header before pynrrd reads the data: a regular file, a supported type and
    encoding, a size that fits in memory, a detached data file that is a regular file (a FIFO
    would block forever) and, for raw data, one that holds exactly the declared bytes."""
    path = require_regular_file(Path(path))
    try:
        import nrrd
        from nrrd.reader import _TYPEMAP_NRRD2NUMPY
    except ImportError as exc:
        raise MissingDependencyError("pynrrd", purpose="reading NRRD files") from exc
    try:
        with open(path, "rb") as fh:
            header = nrrd.read_header(fh)
            data_start = fh.tell()
    except (nrrd.NRRDError, OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ReadError(path, f"not a readable NRRD header ({type(exc).__name__}: {exc})") from exc
    kind = str(header.get("type", ""))
    if kind not in _TYPEMAP_NRRD2NUMPY:
        raise ReadError(path, f"NRRD type '{kind}' is not supported (scalar types only: int8 .. "
                              "int64, float, double)")
    encoding = str(header.get("encoding", "")).lower()
    if encoding not in _ENCODINGS:
        raise ReadError(path, f"NRRD encoding '{header.get('encoding')}' is not supported "
                              "(raw, gzip, bzip2, ascii)")
    itemsize = np.dtype(_TYPEMAP_NRRD2NUMPY[kind]).itemsize
    sizes = tuple(int(s) for s in np.atleast_1d(header.get("sizes", ())))
    nvox = check_memory(path, sizes, itemsize)
    data_name = header.get("data file", header.get("datafile"))
    data_path = path
    if data_name is not None:
        name = str(data_name)
        if name.startswith("LIST") or "%" in name or len(name.split()) > 1:
            raise ReadError(path, f"detached NRRD data given as a list or pattern ({name!r}) is "
                                  "not supported; use a single data file")
        data_path = Path(name) if Path(name).is_absolute() else path.parent / name
        try:
            require_regular_file(data_path, "the NRRD data file")
        except ReadError as exc:
            raise ReadError(path, f"{exc.problem} ({data_path})") from exc
        data_start = 0
    skips = header.get("byte skip", header.get("byteskip", 0)) or header.get(
        "line skip", header.get("lineskip", 0))
    with open(data_path, "rb") as fh:
        fh.seek(data_start)
        magic = fh.read(2)
    avail = data_path.stat().st_size - data_start
    if encoding == "raw" and not skips:
        if magic == b"\x1f\x8b":
            raise ReadError(path, "the data is gzip-compressed but the header says 'encoding: "
                                  "raw'; fix the header ('encoding: gzip')")
        if avail != nvox * itemsize:
            raise ReadError(path, f"holds {avail:,} bytes of raw data; the header declares "
                                  f"{nvox * itemsize:,} ({sizes}, {kind}): truncated or corrupt")
    if encoding in ("gzip", "gz") and magic != b"\x1f\x8b" and not skips:
        raise ReadError(path, "the header says 'encoding: gzip' but the data is not gzip")
    return {"header": header, "data_file": str(data_path)}


def read_nrrd(path: str | Path, *, split_4d: int | None = None) -> Volume:
    """Read a 2D or 3D NRRD (a 4D one with a non-spatial axis with ``split_4d``)."""
    import zlib

    path = Path(path)
    inspect_nrrd(path)
    import nrrd

    try:
        data, header = nrrd.read(str(path))  # index order (x, y, z) like nibabel
    except zlib.error as exc:
        raise ReadError(path, f"compressed data is corrupt ({exc}): the file was damaged or "
                              "truncated (copy it again)") from exc
    except (nrrd.NRRDError, OSError, EOFError, ValueError, TypeError, KeyError) as exc:
        raise ReadError(path, f"not a readable NRRD file ({type(exc).__name__}: {exc})") from exc
    warnings: list[str] = []
    if "space directions" in header:
        dirs = header["space directions"]
        spatial = [i for i, row in enumerate(dirs)
                   if row is not None and np.all(np.isfinite(np.asarray(row, dtype=float)))]
    else:
        kinds = [str(k).lower() for k in header.get("kinds", ["domain"] * data.ndim)]
        spatial = [i for i, k in enumerate(kinds) if k in ("domain", "space")] or list(
            range(data.ndim))
    other = [i for i in range(data.ndim) if i not in spatial]
    extra = [i for i in other if data.shape[i] > 1]
    if len(extra) > 1 or len(spatial) not in (2, 3):
        raise ReadError(path, f"has shape {data.shape} with {len(spatial)} spatial axes; a 2D or "
                              "3D image (plus at most one list axis) is needed")
    if extra:
        ax = extra[0]
        n_vol = data.shape[ax]
        if split_4d is None:
            raise ReadError(path, f"has {n_vol} volumes along axis {ax} (shape {data.shape}); "
                                  f"pick one with split_4d=i, i in 0..{n_vol - 1} "
                                  "(--split-4d i on the command line)")
        if not 0 <= int(split_4d) < n_vol:
            raise ReadError(path, f"split_4d={split_4d} is out of range (0..{n_vol - 1})")
        data = np.take(data, int(split_4d), axis=ax)
        other = [i - (i > ax) for i in other if i != ax]
        spatial = [i - (i > ax) for i in spatial]
    elif split_4d is not None:
        raise ReadError(path, f"split_4d={split_4d} was given but the file has no 4th axis")
    if other:
        data = np.squeeze(data, axis=tuple(other))
    aff, w_affine = nrrd_affine(header, path, spatial)
    warnings += w_affine
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))
    data = np.ascontiguousarray(data.T)
    data, w = replace_nonfinite(data, path)
    warnings += w
    if data.ndim == 3:
        zyx = zyx_affine_from_nifti(aff)
    else:
        a2 = np.eye(3)
        a2[:2, :2] = aff[:2, :2]
        a2[:2, 2] = aff[:2, 3]
        if np.any(np.linalg.norm(a2[:2, :2], axis=0) == 0):
            a2[:2, :2] = np.diag(np.where(np.linalg.norm(aff[:3, :2], axis=0) > 0,
                                          np.linalg.norm(aff[:3, :2], axis=0), 1.0))
        zyx = zyx_affine_from_nifti(a2)
    is_labels = looks_like_labels(data, label_hint(path))
    if is_labels and not np.issubdtype(data.dtype, np.integer):
        data = as_label_array(data)
    hdr = {
        "format": "nrrd",
        "nrrd_space": str(header.get("space", "")),
        "nrrd_type": str(header.get("type", "")),
        "qform_code": 1,
        "sform_code": 1,
        SPACING_NOMINAL: any(m.endswith("has no voxel size; 1.0 mm assumed") for m in w_affine),
        DIRECTION_NOMINAL: "space directions" not in header,
    }
    if split_4d is not None:
        hdr["split_4d"] = int(split_4d)
    try:
        return volume_from_affine(data, zyx, is_labels=is_labels, source=str(path), header=hdr,
                                  warnings=tuple(warnings))
    except ValueError as exc:
        raise ReadError(path, f"has an invalid geometry ({exc})") from exc
