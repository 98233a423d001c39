"""MetaImage (``.mha`` single file, ``.mhd`` header + raw data file) reading, without ITK.

What is read (the MetaIO format as ITK and SimpleITK write it):

* ``NDims`` 2 or 3, ``DimSize``, ``ElementType`` (``MET_CHAR`` .. ``MET_DOUBLE``; ``MET_LONG``
  is 4 bytes as in MetaIO, ``MET_LONG_LONG`` 8), one channel (``ElementNumberOfChannels``);
* ``ElementSpacing`` (else ``ElementSize``), ``Offset`` (alias ``Origin`` / ``Position``) and
  ``TransformMatrix`` (alias ``Rotation`` / ``Orientation``: the direction of axis 0, then of
  axis 1, ...), all in ITK's LPS world, turned into RAS;
* byte order (``BinaryDataByteOrderMSB`` / ``ElementByteOrderMSB``), ``HeaderSize`` (``-1``:
  the data is the end of the file), ``CompressedData`` (a zlib stream; decompressed with a cap at
  the size the header declares, so a corrupt or hostile file cannot exhaust memory);
* ``ElementDataFile = LOCAL`` (data after the header, ``.mha``) or one file name relative to the
  header (``.mhd``). ``LIST`` and file patterns (one file per slice) are refused with a message.

Sizes are checked against the header before any array is allocated.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np

from ..errors import ReadError
from ..volume import DIRECTION_NOMINAL, Volume, volume_from_affine, zyx_affine_from_nifti
from ._common import as_label_array, check_file, looks_like_labels, replace_nonfinite

log = logging.getLogger(__name__)

METAIMAGE_SUFFIXES = (".mha", ".mhd")
_TYPES = {"MET_CHAR": "i1", "MET_UCHAR": "u1", "MET_SHORT": "i2", "MET_USHORT": "u2",
          "MET_INT": "i4", "MET_UINT": "u4", "MET_LONG": "i4", "MET_ULONG": "u4",
          "MET_LONG_LONG": "i8", "MET_ULONG_LONG": "u8", "MET_FLOAT": "f4", "MET_DOUBLE": "f8"}
_ALIASES = {"Origin": "Offset", "Position": "Offset", "Rotation": "TransformMatrix",
            "Orientation": "TransformMatrix"}
#: a header longer than this is not a MetaImage header
_MAX_HEADER = 1 << 16
_MAX_VOXELS = 1 << 31


def is_metaimage(path: str | Path) -> bool:
    """True when the name ends in .mha or .mhd (no file access; never raises)."""
    return str(path).lower().endswith(METAIMAGE_SUFFIXES)


def read_header(path: Path) -> tuple[dict[str, str], int]:
    """The ``Key = Value`` fields (aliases resolved) and the byte offset just after the
    ``ElementDataFile`` line (where LOCAL data starts)."""
    with open(path, "rb") as fh:
        head = fh.read(_MAX_HEADER)
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(head):
        end = head.find(b"\n", pos)
        if end < 0:
            end = len(head)
        line = head[pos:end].decode("latin-1").strip()
        pos = end + 1
        if not line:
            continue
        if "=" not in line:
            raise ReadError(path, f"not a MetaImage header (line {line[:40]!r} has no '=')")
        key, value = (s.strip() for s in line.split("=", 1))
        fields[_ALIASES.get(key, key)] = value
        if key == "ElementDataFile":
            return fields, pos
    raise ReadError(path, "MetaImage header without ElementDataFile (truncated or not MetaImage)")


def _floats(fields: dict[str, str], key: str, n: int, path: Path, default: list[float]
            ) -> np.ndarray:
    if key not in fields:
        return np.asarray(default, dtype=float)
    try:
        vals = np.asarray([float(v) for v in fields[key].split()], dtype=float)
    except ValueError as exc:
        raise ReadError(path, f"{key} = {fields[key]!r} is not a list of numbers") from exc
    if vals.size != n or not np.all(np.isfinite(vals)):
        raise ReadError(path, f"{key} has {vals.size} values ({fields[key]!r}); {n} expected")
    return vals


def _true(fields: dict[str, str], *keys: str) -> bool:
    return any(fields.get(k, "").strip().lower() in ("true", "1") for k in keys)


def _raw_bytes(path: Path, fields: dict[str, str], data_start: int, nbytes: int) -> bytes:
    source = fields["ElementDataFile"]
    if source.upper() == "LIST" or "%" in source or len(source.split()) > 1:
        raise ReadError(path, f"ElementDataFile = {source}: one file per slice is not supported; "
                              "convert to a single .mha or .nii.gz")
    if source.upper() == "LOCAL":
        data_path, offset = path, data_start
    else:
        data_path, offset = path.parent / source, 0
        if not data_path.is_file():
            raise ReadError(path, f"its data file {data_path} does not exist")
    header_size = int(float(fields.get("HeaderSize", "0") or 0))
    compressed = _true(fields, "CompressedData")
    size = data_path.stat().st_size
    if compressed:
        csize = int(float(fields.get("CompressedDataSize", size - offset)))
        with open(data_path, "rb") as fh:
            fh.seek(offset + max(header_size, 0))
            blob = fh.read(csize)
        dec = zlib.decompressobj()
        try:
            raw = dec.decompress(blob, nbytes + 1)  # capped: never more than declared + 1
        except zlib.error as exc:
            raise ReadError(path, f"compressed data is corrupt ({exc})") from exc
        if len(raw) != nbytes:
            got = str(len(raw)) if len(raw) < nbytes else f"more than {nbytes}"
            raise ReadError(path, f"compressed data holds {got} bytes; the header declares "
                                  f"{nbytes} (DimSize x element size)")
        return raw
    if header_size == -1:
        offset = size - nbytes
    else:
        offset += max(header_size, 0)
    if offset < 0 or size - offset < nbytes:
        raise ReadError(path, f"data is truncated: {max(size - offset, 0)} bytes after the "
                              f"header, {nbytes} declared (DimSize x element size)")
    with open(data_path, "rb") as fh:
        fh.seek(offset)
        return fh.read(nbytes)


def read_metaimage(path: str | Path) -> Volume:
    """Read a 2D or 3D ``.mha`` / ``.mhd`` image as a Volume (world RAS; see the module doc)."""
    path = Path(path)
    check_file(path)
    fields, data_start = read_header(path)
    if fields.get("ObjectType", "Image").lower() != "image":
        raise ReadError(path, f"ObjectType = {fields['ObjectType']}: only images are read")
    try:
        ndim = int(fields.get("NDims", "0"))
        dims = [int(v) for v in fields.get("DimSize", "").split()]
    except ValueError as exc:
        raise ReadError(path, f"bad NDims / DimSize ({exc})") from exc
    if ndim not in (2, 3) or len(dims) != ndim or min(dims) < 1:
        raise ReadError(path, f"NDims = {ndim}, DimSize = {dims}: a 2D or 3D image is needed")
    channels = int(fields.get("ElementNumberOfChannels", "1") or 1)
    if channels != 1:
        raise ReadError(path, f"has {channels} channels per voxel; one channel is read")
    etype = fields.get("ElementType", "")
    if etype not in _TYPES:
        raise ReadError(path, f"ElementType = {etype!r} is not supported ({', '.join(_TYPES)})")
    n_vox = int(np.prod(dims, dtype=np.int64))
    if n_vox > _MAX_VOXELS:
        raise ReadError(path, f"declares {n_vox} voxels (DimSize {dims}); too large to read")
    msb = _true(fields, "BinaryDataByteOrderMSB", "ElementByteOrderMSB")
    dtype = np.dtype((">" if msb else "<") + _TYPES[etype])
    raw = _raw_bytes(path, fields, data_start, n_vox * dtype.itemsize)
    data = np.frombuffer(raw, dtype=dtype).reshape(dims[::-1]).astype(dtype.newbyteorder("="))
    spacing = _floats(fields, "ElementSpacing" if "ElementSpacing" in fields else "ElementSize",
                      ndim, path, [1.0] * ndim)
    if np.any(spacing <= 0):
        raise ReadError(path, f"ElementSpacing {spacing.tolist()} must be positive")
    offset = _floats(fields, "Offset", ndim, path, [0.0] * ndim)
    tm = _floats(fields, "TransformMatrix", ndim * ndim, path, np.eye(ndim).ravel().tolist())
    direction = tm.reshape(ndim, ndim).T  # TransformMatrix lists axis 0's direction first
    if abs(np.linalg.det(direction)) < 1e-6:
        raise ReadError(path, f"TransformMatrix {tm.tolist()} is singular")
    flip = np.diag([-1.0, -1.0, 1.0][:ndim])  # LPS -> RAS
    aff = np.eye(ndim + 1)
    aff[:ndim, :ndim] = flip @ direction @ np.diag(spacing)
    aff[:ndim, ndim] = flip @ offset
    warnings: list[str] = []
    data, w = replace_nonfinite(np.ascontiguousarray(data), path)
    warnings += w
    is_labels = looks_like_labels(data)
    if is_labels and not np.issubdtype(data.dtype, np.integer):
        data = as_label_array(data)
    header = {"format": "metaimage", "element_type": etype, "qform_code": 1, "sform_code": 1,
              "anatomical_orientation": fields.get("AnatomicalOrientation", ""),
              DIRECTION_NOMINAL: "TransformMatrix" not in fields}  # (its aliases are renamed to it)
    try:
        return volume_from_affine(data, zyx_affine_from_nifti(aff), is_labels=is_labels,
                                  source=str(path), header=header, warnings=tuple(warnings))
    except ValueError as exc:
        raise ReadError(path, f"has an invalid geometry ({exc})") from exc
