"""The one gate for input: every reader, the napari reader, the Load widget and the CLI go through
these checks, and every failure is an :class:`~napari_attnseg.errors.AttnsegError` whose message
names the file and the problem.

* :func:`require_regular_file` - refuses FIFOs, devices and sockets (reading one would hang);
* :func:`verify_gzip` - decompresses the whole stream so that the CRC-32 and length trailer are
  checked (a flipped bit is an error, never a silently different image);
* :func:`check_memory` - sizes computed from the header before anything is allocated;
* :func:`check_affine` - finite, non-singular geometry with plausible voxel sizes;
* :func:`looks_like_labels` / :func:`require_labels` - the dtype policy for label maps;
* :func:`require_probabilities`, :func:`require_same_grid` - where two volumes meet.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import stat
import zlib
from pathlib import Path

import numpy as np

from ..errors import GeometryError, ReadError

#: plausible voxel sizes in mm (1 nm .. 100 m); anything else is a broken header
MIN_SPACING_MM = 1e-6
MAX_SPACING_MM = 1e5
MAX_ORIGIN_MM = 1e8
#: a label map has at most this many distinct values (background included)
MAX_LABEL_VALUES = 256
#: without a hint (name, intent code, sidecar) a volume opens as labels only with this few values
MAX_UNHINTED_LABEL_VALUES = 16
#: name tokens (file or parent folder) that say "this is a label map"
LABEL_WORDS = frozenset({
    "seg", "segs", "segmentation", "segmentations", "label", "labels", "labelstr", "labelsts",
    "labelmap", "mask", "masks", "gt", "truth", "groundtruth", "annotation", "annotations",
    "annot", "aseg", "aparc", "parc",
})
#: two volumes are on one grid when their corner voxels lie this many voxels apart at most
GRID_TOLERANCE_VOXELS = 0.01
_CHUNK = 1 << 22


def _fmt_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


# ---------------------------------------------------------------------- files
def require_regular_file(path: str | Path, what: str = "file") -> Path:
    """The path when it is an existing, non-empty regular file (never opens it)."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ReadError(path, f"{what} does not exist") from None
    except OSError as exc:
        raise ReadError(path, f"{what} cannot be accessed ({exc.strerror or exc})") from exc
    if stat.S_ISDIR(st.st_mode):
        raise ReadError(path, f"{what} is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "not a regular file"
        raise ReadError(path, f"{what} is {kind}; only regular files are read (reading it "
                              "could block forever)")
    if st.st_size == 0:
        raise ReadError(path, f"{what} is empty (0 bytes)")
    return path


def is_gzip(path: str | Path) -> bool:
    """True when the file starts with the gzip magic bytes (never raises)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == b"\x1f\x8b"
    except OSError:
        return False


def read_gzip_head(path: str | Path, n: int) -> bytes:
    """The first ``n`` decompressed bytes of a gzip file (ReadError if it is not gzip)."""
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read(n)
    except (OSError, EOFError, zlib.error) as exc:
        raise ReadError(path, f"not a valid gzip file ({type(exc).__name__}: {exc})") from exc


def verify_gzip(path: str | Path, need_bytes: int | None = None) -> int:
    """Decompress the whole gzip stream (CRC-32 and length checked at its end) without keeping
    it; returns the decompressed size. ``need_bytes``: the size the header declares (a shorter
    stream is a truncated file)."""
    n = 0
    try:
        with gzip.open(path, "rb") as fh:
            while True:
                chunk = fh.read(_CHUNK)
                if not chunk:
                    break
                n += len(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        why = str(exc) or type(exc).__name__
        if isinstance(exc, EOFError):
            why = "the compressed stream ends early"
        raise ReadError(path, f"compressed data is corrupt ({why}): the file was damaged or "
                              "truncated (copy it again)") from exc
    if need_bytes is not None and n < need_bytes:
        raise ReadError(path, f"is truncated: the header declares {need_bytes:,} bytes, the "
                              f"decompressed file holds {n:,}")
    return n


def read_gzip_range(path: str | Path, start: int, nbytes: int) -> bytearray:
    """Bytes ``start .. start + nbytes`` of the decompressed stream, read in the same single
    pass that decompresses the rest of it, so that the CRC-32 and length trailer are checked
    (ReadError for a corrupt or truncated file); nothing else is kept in memory."""
    buf = bytearray(nbytes)
    view = memoryview(buf)
    try:
        with gzip.open(path, "rb") as fh:
            left = start
            while left > 0:
                chunk = fh.read(min(left, _CHUNK))
                if not chunk:
                    break
                left -= len(chunk)
            filled = 0
            while left == 0 and filled < nbytes:
                n = fh.readinto(view[filled:filled + _CHUNK])
                if not n:
                    break
                filled += n
            if left or filled < nbytes:
                raise ReadError(path, f"is truncated: the header declares {start + nbytes:,} "
                                      f"bytes, the decompressed file holds "
                                      f"{start - left + filled:,}")
            while fh.read(_CHUNK):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        why = "the compressed stream ends early" if isinstance(exc, EOFError) else (
            str(exc) or type(exc).__name__)
        raise ReadError(path, f"compressed data is corrupt ({why}): the file was damaged or "
                              "truncated (copy it again)") from exc
    return buf


# ---------------------------------------------------------------------- sizes
def memory_limit_bytes() -> int:
    """Largest input accepted: ``ATTNSEG_MAX_INPUT_GB`` if set, else the machine's memory."""
    env = os.environ.get("ATTNSEG_MAX_INPUT_GB")
    if env:
        try:
            return int(float(env) * 2**30)
        except ValueError:
            pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 64 * 2**30


def check_memory(path: str | Path, shape: tuple[int, ...], itemsize: int,
                 what: str = "the header declares") -> int:
    """Refuse a declared size that cannot fit in memory (before allocating anything). The reader
    holds the array and one contiguous copy; returns the number of voxels."""
    dims = [int(s) for s in shape]
    if any(d < 1 for d in dims):
        raise ReadError(path, f"{what} an invalid shape {tuple(dims)} (every size must be >= 1)")
    nvox = math.prod(dims)
    need = 2 * nvox * max(int(itemsize), 1)
    limit = memory_limit_bytes()
    if need > limit:
        raise ReadError(path, f"{what} shape {tuple(dims)} = {nvox:,} voxels ({_fmt_bytes(need)} "
                              f"to read), more than the {_fmt_bytes(limit)} of memory; the header "
                              "is probably corrupt (ATTNSEG_MAX_INPUT_GB raises the limit)")
    return nvox


# ---------------------------------------------------------------------- geometry
def check_spacing(values, path: str | Path, what: str = "voxel size") -> None:
    """Each voxel size finite and within [MIN_SPACING_MM, MAX_SPACING_MM]."""
    for v in values:
        v = float(v)
        if not math.isfinite(v) or not MIN_SPACING_MM <= abs(v) <= MAX_SPACING_MM:
            shown = ", ".join(f"{float(x):.6g}" for x in values)
            raise ReadError(path, f"{what} ({shown}) is not a usable voxel size in mm (must be "
                                  f"finite, between {MIN_SPACING_MM:g} and {MAX_SPACING_MM:g}); "
                                  "the header is broken: fix it before using the file")


def check_axes(columns: np.ndarray, path: str | Path, what: str = "affine") -> None:
    """Columns (one per array axis) finite, of plausible length and not (nearly) collinear."""
    cols = np.asarray(columns, dtype=float)
    if not np.all(np.isfinite(cols)):
        raise ReadError(path, f"the {what} has NaN or infinite entries; the header is broken")
    norms = np.linalg.norm(cols, axis=0)
    check_spacing(norms, path, f"the {what}'s voxel size")
    unit = cols / norms
    sv = np.linalg.svd(unit, compute_uv=False)
    if sv[-1] < 1e-3 * sv[0]:
        raise ReadError(path, f"the {what} is singular (its axes are parallel or degenerate): "
                              f"{np.round(cols, 6).tolist()}; the header is broken")


def check_affine(affine: np.ndarray, path: str | Path) -> None:
    """An index -> world affine ((n+1)x(n+1)) fit to place voxels: finite, non-singular,
    plausible voxel sizes and origin."""
    a = np.asarray(affine, dtype=float)
    n = a.shape[0] - 1
    check_axes(a[:n, :n], path)
    origin = a[:n, n]
    if not np.all(np.isfinite(origin)) or np.any(np.abs(origin) > MAX_ORIGIN_MM):
        raise ReadError(path, f"the origin {origin.tolist()} mm is not finite or implausibly far "
                              "away; the header is broken")


def check_volume(vol, path: str | Path) -> None:
    """The gate every reader's result passes: geometry and a real-valued array."""
    check_affine(vol.affine, path)
    if np.iscomplexobj(vol.data):
        raise ReadError(path, "holds complex-valued voxels; only real-valued scans can be read "
                              "(save the magnitude or the real part)")
    if vol.data.dtype.kind not in "biuf":
        raise ReadError(path, f"holds voxels of type {vol.data.dtype}, not numbers")


# ---------------------------------------------------------------------- labels
def label_hint(path: str | Path | None, header_says: bool | None = None) -> bool | None:
    """True / False when something says whether ``path`` is a label map, else None.

    In order: the file's own header (``header_says``, e.g. a NIfTI intent code), the
    napari-attnseg sidecar (``is_labels``), then a label word in the file or folder name."""
    if header_says is not None:
        return header_says
    if path is None:
        return None
    p = Path(path)
    from .writers import sidecar_path

    side = sidecar_path(p)
    try:
        if side.is_file() and side.stat().st_size < 10_000_000:
            meta = json.loads(side.read_text())
            if isinstance(meta, dict) and isinstance(meta.get("is_labels"), bool):
                return meta["is_labels"]
    except (OSError, ValueError, UnicodeDecodeError):
        pass
    words = set(re.split(r"[^a-z0-9]+", (p.name + " " + p.parent.name).lower()))
    return True if words & LABEL_WORDS else None


def distinct_values(data: np.ndarray, limit: int) -> np.ndarray | None:
    """The sorted distinct values, or None when there are more than ``limit``. Works in chunks
    (never a full int64 copy of a big volume) and stops early on images."""
    flat = np.asarray(data).reshape(-1)
    if flat.size == 0:
        return np.zeros(0, flat.dtype)
    if flat.dtype == bool:
        return np.array([v for v in (False, True) if (flat == v).any()], dtype=bool)
    step = max(1, flat.size // 65536)
    if len(np.unique(flat[::step])) > limit:
        return None
    if flat.dtype.kind in "iu":
        lo, hi = int(flat.min()), int(flat.max())
        if hi - lo < (1 << 20):
            counts = np.zeros(hi - lo + 1, np.int64)
            for i in range(0, flat.size, _CHUNK // 4):  # an intp copy of 1 M values at most
                chunk = flat[i:i + _CHUNK // 4]
                if flat.dtype.kind == "u":
                    shifted = (chunk - np.asarray(lo, flat.dtype)).astype(np.intp)
                else:
                    shifted = chunk.astype(np.int64) - lo
                counts += np.bincount(shifted, minlength=counts.size)
            present = np.flatnonzero(counts)
            return None if present.size > limit else (present + lo).astype(flat.dtype)
    seen = np.zeros(0, flat.dtype)
    for i in range(0, flat.size, _CHUNK):
        seen = np.union1d(seen, np.unique(flat[i:i + _CHUNK]))
        if seen.size > limit:
            return None
    return seen


def looks_like_labels(data: np.ndarray, hint: bool | None = None) -> bool:
    """Whether a volume opens as a label map (napari Labels) rather than an image.

    Never for negative, non-finite or non-integer values. With a hint (``hint=True``: a label
    word in the name, an intent code, a sidecar) up to 256 values; without one only a compact
    set (at most 16 values including 0, the largest below 4 x count + 16), so that a uint8 scan
    with few grey levels stays an image. ``hint=False`` never."""
    if hint is False or data.size == 0:
        return False
    if data.dtype == bool:
        return True
    if data.dtype.kind not in "iuf":
        return False
    limit = MAX_LABEL_VALUES - 1 if hint else MAX_UNHINTED_LABEL_VALUES
    values = distinct_values(data, limit)
    if values is None or not np.all(np.isfinite(values)) or values[0] < 0:
        return False
    if data.dtype.kind == "f" and not np.all(np.mod(values, 1) == 0):
        return False
    if hint:
        return True
    return bool(values[0] == 0 and values[-1] < 4 * len(values) + 16)


def smallest_uint(hi: int) -> np.dtype:
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if hi <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise ValueError(f"label value {hi} does not fit in uint64")


def require_labels(data: np.ndarray, path: str | Path, role: str = "labels") -> np.ndarray:
    """``data`` as non-negative integer labels in the smallest unsigned dtype, or a ReadError
    saying why it is not a label map (non-integer values such as 1.3, negative values, NaN, or
    too many values: an image given where labels belong)."""
    arr = np.asarray(data)
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype.kind not in "iuf":
        raise ReadError(path, f"{role}: voxels of type {arr.dtype} cannot be labels")
    if arr.dtype.kind == "f" and arr.size and not np.all(np.isfinite(arr)):
        raise ReadError(path, f"{role} hold NaN or infinite values; labels must be whole numbers")
    values = distinct_values(arr, MAX_LABEL_VALUES)
    if values is None:
        lo, hi = float(arr.min()), float(arr.max())
        raise ReadError(path, f"{role}: more than {MAX_LABEL_VALUES} distinct values (range "
                              f"{lo:g}..{hi:g}); a label map holds a few whole numbers - is "
                              "this an image?")
    frac = values[np.mod(values, 1) != 0] if arr.dtype.kind == "f" else values[:0]
    if frac.size:
        raise ReadError(path, f"{role} hold non-integer values (e.g. {float(frac[0]):g}); labels "
                              "must be whole numbers (0 = background), not rounded silently")
    if values.size and values[0] < 0:
        raise ReadError(path, f"{role} hold negative values (e.g. {float(values[0]):g}); labels "
                              "must be 0 (background) or positive")
    hi = int(values[-1]) if values.size else 0
    return arr.astype(smallest_uint(hi), copy=False)


def require_probabilities(data: np.ndarray, path: str | Path, tol: float = 1e-3) -> np.ndarray:
    """float32 probabilities in [0, 1] (tiny excursions clipped) or a ReadError."""
    arr = np.asarray(data, dtype=np.float32)
    if arr.size == 0:
        raise ReadError(path, "probabilities are empty")
    if not np.all(np.isfinite(arr)):
        raise ReadError(path, "probabilities hold NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -tol or hi > 1 + tol:
        raise ReadError(path, f"values span {lo:g}..{hi:g}; probabilities must lie in [0, 1] "
                              "(is this the image or a label map?)")
    if lo < 0 or hi > 1:
        arr = np.clip(arr, 0.0, 1.0)
    return arr


# ---------------------------------------------------------------------- grids
def _corners(shape: tuple[int, ...]) -> np.ndarray:
    n = len(shape)
    idx = np.array(np.meshgrid(*[[0, s - 1] for s in shape], indexing="ij")).reshape(n, -1)
    return np.vstack([idx, np.ones((1, idx.shape[1]))])


def grid_offset_mm(vol, ref) -> float:
    """Largest distance (mm) between where ``vol`` and ``ref`` put the same corner voxel."""
    c = _corners(ref.shape)
    return float(np.max(np.linalg.norm((vol.affine @ c - ref.affine @ c)[:-1], axis=0)))


def _describe(vol) -> str:
    g = vol.geometry_summary()
    return f"shape {tuple(g['shape'])}, spacing {tuple(g['spacing_mm'])} mm, origin " \
           f"{tuple(round(o, 3) for o in g['origin_mm'])} mm"


def require_same_grid(vol, ref, what: str | None = None, ref_what: str | None = None) -> None:
    """Raise GeometryError unless ``vol`` and ``ref`` have the same shape and the same affine
    (every corner voxel within 1 % of a voxel). Used wherever two volumes meet."""
    a = what or str(vol.source or "the first volume")
    b = ref_what or str(ref.source or "the second volume")
    if vol.shape != ref.shape:
        raise GeometryError(f"{a} ({_describe(vol)}) and {b} ({_describe(ref)}) are not on the "
                            "same grid: their spatial shapes differ; resample one onto the "
                            "other first")
    off = grid_offset_mm(vol, ref)
    tol = GRID_TOLERANCE_VOXELS * min(min(vol.spacing), min(ref.spacing))
    if off > tol:
        raise GeometryError(f"{a} ({_describe(vol)}) and {b} ({_describe(ref)}) are not on the "
                            f"same grid: the same voxel lies up to {off:.4g} mm apart (spacing, "
                            "origin or orientation differ); resample one onto the other first")
