"""DICOM reading with pydicom: series grouping, geometric slice sorting, rescaling, LPS -> RAS.

Slices are sorted by the projection of ImagePositionPatient on the slice normal (the cross
product of the ImageOrientationPatient row and column cosines), never by file name or
InstanceNumber. The affine keeps the real first position and the real step between slices, so
a gantry tilt (positions not along the normal) stays a sheared but exact geometry. Duplicate
positions: identical copies are dropped with a warning; different pixel data at one position
(mixed echoes / time points) is a ReadError. pydicom is imported only here, on first use.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingDependencyError, ReadError
from ..volume import Volume, volume_from_affine
from ._common import check_file
from .dicom_checks import check_declared_size, check_rescale, place_missing_positions
from .series import SeriesInfo

log = logging.getLogger(__name__)

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
DECODER_HINT = "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg"
#: positions closer than this (mm, along the normal) are the same slice
POSITION_TOL = 1e-3
#: LPS (x, y, z) -> the Volume world (S, A, R)
LPS_TO_SAR = np.array([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]])
_MAX_PROBE = 200
#: Segmentation Storage and Label Map Segmentation Storage: read by :mod:`.dicom_seg`, never
#: stacked as an image series (their frames share positions, one per segment)
SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")


# ---------------------------------------------------------------------- cheap detection
def has_dicom_magic(path: str | Path) -> bool:
    """True when the file has the 'DICM' prefix at byte 128 (never raises)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
        return len(head) == 132 and head[128:132] == b"DICM"
    except OSError:
        return False


def dicom_header_tags(path: str | Path, tags: list[str]) -> Any | None:
    """Only ``tags`` of a file named .dcm/.dicom or with the DICM prefix (a pydicom Dataset,
    no pixel data), or ``None`` for anything else or an unreadable file (never raises)."""
    p = Path(path)
    try:
        if not p.is_file() or not (p.suffix.lower() in (".dcm", ".dicom") or has_dicom_magic(p)):
            return None
        import pydicom

        return pydicom.dcmread(str(p), stop_before_pixels=True, specific_tags=list(tags))
    except Exception:  # pydicom raises many types on non-DICOM files
        return None


def is_dicom(path: str | Path) -> bool:
    """Cheap guess (never raises): a .dcm/.ima file, a file with the DICM prefix, or a folder
    holding one among its first files."""
    try:
        p = Path(path)
        if p.is_file():
            return p.suffix.lower() in DICOM_SUFFIXES or has_dicom_magic(p)
        if p.is_dir():
            for i, f in enumerate(p.rglob("*")):
                if i >= _MAX_PROBE:
                    break
                if f.is_file() and (f.suffix.lower() in DICOM_SUFFIXES or has_dicom_magic(f)):
                    return True
        return False
    except OSError:
        return False


# ---------------------------------------------------------------------- headers
@dataclass
class _Frame:
    """One 2D image: a single-frame file or one frame of a multi-frame file."""

    path: Path
    ds: Any
    frame: int | None
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: tuple[float, float] | None
    thickness: float | None
    instance: int
    slope: float
    intercept: float
    rows: int
    cols: int


def _pydicom():
    try:
        import pydicom
    except ImportError as exc:
        raise MissingDependencyError("pydicom", purpose="reading DICOM") from exc
    return pydicom


def _floats(value: Any, n: int) -> np.ndarray | None:
    if value is None:
        return None
    try:
        arr = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return arr if arr.size == n and np.all(np.isfinite(arr)) else None


def _float(value: Any, default: float | None) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if np.isfinite(out) else default


def _spacing_2d(ds: Any) -> tuple[float, float] | None:
    """PixelSpacing, else ImagerPixelSpacing, else the first ultrasound region (cm -> mm)."""
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        v = _floats(ds.get(tag), 2)
        if v is not None and np.all(v > 0):
            return float(v[0]), float(v[1])
    regions = ds.get("SequenceOfUltrasoundRegions")
    if regions:
        r = regions[0]
        dx, dy = _float(r.get("PhysicalDeltaX"), None), _float(r.get("PhysicalDeltaY"), None)
        if (dx and dy and dx > 0 and dy > 0 and int(r.get("PhysicalUnitsXDirection", 0)) == 3
                and int(r.get("PhysicalUnitsYDirection", 0)) == 3):
            return abs(dy) * 10.0, abs(dx) * 10.0
    return None


def _expand(ds: Any, path: Path) -> list[_Frame]:
    """The frames of one dataset with their geometry and rescale."""
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    instance = int(_float(ds.get("InstanceNumber"), 0) or 0)
    n_frames = int(_float(ds.get("NumberOfFrames"), 1) or 1)
    top_slope = _float(ds.get("RescaleSlope"), 1.0)
    top_inter = _float(ds.get("RescaleIntercept"), 0.0)
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if n_frames <= 1 and not per:
        return [_Frame(path, ds, None, _floats(ds.get("ImagePositionPatient"), 3),
                       _floats(ds.get("ImageOrientationPatient"), 6), _spacing_2d(ds),
                       _float(ds.get("SliceThickness"), None), instance, top_slope, top_inter,
                       rows, cols)]
    shared = ds.get("SharedFunctionalGroupsSequence")
    shared = shared[0] if shared else None

    def get(group: Any, seq: str, attr: str) -> Any:
        for g in (group, shared):
            if g is not None and seq in g and g[seq].value:
                v = g[seq].value[0].get(attr)
                if v is not None:
                    return v
        return None

    frames = []
    for f in range(n_frames):
        g = per[f] if per and f < len(per) else None
        pos = _floats(get(g, "PlanePositionSequence", "ImagePositionPatient"), 3)
        ori = _floats(get(g, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
        if ori is None:
            ori = _floats(ds.get("ImageOrientationPatient"), 6)
        ps = _floats(get(g, "PixelMeasuresSequence", "PixelSpacing"), 2)
        spacing = (float(ps[0]), float(ps[1])) if ps is not None else _spacing_2d(ds)
        thick = _float(get(g, "PixelMeasuresSequence", "SliceThickness"), None)
        slope = _float(get(g, "PixelValueTransformationSequence", "RescaleSlope"), top_slope)
        inter = _float(get(g, "PixelValueTransformationSequence", "RescaleIntercept"), top_inter)
        frames.append(_Frame(path, ds, f, pos, ori, spacing, thick, instance * 100000 + f,
                             slope, inter, rows, cols))
    return frames


def _has_pixels(ds: Any) -> bool:
    return any(t in ds for t in PIXEL_TAGS)


def _read_header(pydicom: Any, path: Path, single: bool) -> Any | None:
    """The dataset with large values deferred, or None for a non-DICOM file in a folder."""
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path), defer_size="2 KB")
    except InvalidDicomError as exc:
        if not single and path.suffix.lower() not in DICOM_SUFFIXES:
            return None
        try:  # no preamble / file meta: accept only if it parses as an image dataset
            ds = pydicom.dcmread(str(path), defer_size="2 KB", force=True)
        except Exception as exc2:  # pydicom raises many types on garbage with force=True
            if single:
                raise ReadError(path, f"not a DICOM file ({exc2})") from exc2
            log.warning("skipping %s: not DICOM (%s)", path, exc2)
            return None
        if "SOPClassUID" in ds or "Modality" in ds or _has_pixels(ds):
            return ds
        if single:
            raise ReadError(path, f"not a DICOM file ({exc})") from exc
        return None
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        if single:
            raise ReadError(path, f"DICOM file could not be parsed ({type(exc).__name__}: "
                                  f"{exc})") from exc
        log.warning("skipping %s: unreadable DICOM (%s)", path, exc)
        return None


def scan(path: str | Path) -> tuple[dict[str, list[_Frame]], dict[str, list[Any]]]:
    """Group the frames under ``path`` by SeriesInstanceUID.

    Returns (series with pixel data, series without pixel data as datasets)."""
    path = Path(path)
    check_file(path)
    pydicom = _pydicom()
    if path.is_file():
        files, single = [path], True
    else:
        files = sorted(f for f in path.rglob("*")
                       if f.is_file() and f.name != "DICOMDIR" and not f.name.startswith("."))
        single = False
    groups: dict[str, list[_Frame]] = defaultdict(list)
    no_pixels: dict[str, list[Any]] = defaultdict(list)
    for f in files:
        if not single and f.stat().st_size == 0:
            continue
        ds = _read_header(pydicom, f, single)
        if ds is None:
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "unknown-series")
        if _has_pixels(ds) and str(ds.get("SOPClassUID", "")) not in SEG_SOP_CLASSES:
            groups[uid].extend(_expand(ds, f))
        else:
            no_pixels[uid].append(ds)
    if not groups:
        if no_pixels:
            kinds = sorted({str(getattr(d.get("SOPClassUID"), "name", d.get("SOPClassUID", "?")))
                            for ds_list in no_pixels.values() for d in ds_list})
            if any(str(d.get("SOPClassUID", "")) in SEG_SOP_CLASSES
                   for ds_list in no_pixels.values() for d in ds_list):
                raise ReadError(path, "holds a DICOM-SEG but not the image series it segments; "
                                      "open the SEG file itself, with its series in the same or "
                                      "a neighbouring folder")
            raise ReadError(path, "DICOM without pixel data (no image to show; SOP class: "
                                  f"{', '.join(kinds)}, e.g. a structured report)")
        raise ReadError(path, "no DICOM files found" + (" in this folder" if not single else ""))
    return dict(groups), dict(no_pixels)


# ---------------------------------------------------------------------- geometry
@dataclass
class _Geometry:
    frames: list[_Frame]
    affine: np.ndarray  # zyx -> (S, A, R)
    warnings: list[str]
    positions: list[float] | None


def _normal(ori: np.ndarray) -> np.ndarray:
    n = np.cross(ori[:3], ori[3:])
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else np.array([0.0, 0.0, 1.0])


def _sort(frames: list[_Frame]) -> tuple[list[_Frame], np.ndarray | None]:
    """Frames in geometric order and their positions along the normal (None if unknown)."""
    if all(f.position is not None and f.orientation is not None for f in frames):
        normal = _normal(frames[0].orientation)
        proj = np.array([float(f.position @ normal) for f in frames])
        order = sorted(range(len(frames)), key=lambda i: (proj[i], frames[i].instance))
        return [frames[i] for i in order], proj[order]
    return sorted(frames, key=lambda f: (f.instance, str(f.path))), None


def _geometry(frames: list[_Frame], where: Path) -> _Geometry:
    """Sorted frames and the (z, y, x) affine of the stack (frames already de-duplicated)."""
    warnings: list[str] = []
    first = frames[0]
    ps = first.pixel_spacing
    if ps is None:
        ps = (1.0, 1.0)
        warnings.append(f"{where.name}: no PixelSpacing; 1.0 mm pixels assumed")
    single_2d = len(frames) == 1 and (first.position is None or first.orientation is None)
    if single_2d:
        return _Geometry(frames, np.diag([ps[0], ps[1], 1.0]), warnings, None)
    frames, proj = _sort(frames)
    n = len(frames)
    a_lps = np.eye(4)
    if proj is not None:
        ori = first.orientation
        for f in frames:
            if not np.allclose(f.orientation, ori, atol=1e-4):
                raise ReadError(f.path, "slices of this series have different orientations "
                                        f"({np.round(ori, 4).tolist()} vs "
                                        f"{np.round(f.orientation, 4).tolist()}); a localizer "
                                        "or multi-plane series cannot be stacked")
        row, col, normal = ori[:3], ori[3:], _normal(ori)
        if n > 1:
            diffs = np.diff(proj)
            step = (proj[-1] - proj[0]) / (n - 1)
            if np.max(np.abs(diffs - step)) > max(0.01, 0.01 * abs(step)):
                warnings.append(
                    f"uneven slice spacing in {where.name}: steps from {diffs.min():.4g} to "
                    f"{diffs.max():.4g} mm (mean {step:.4g} mm used); distances across slices "
                    "are approximate (resample before measuring)")
            slice_vec = (frames[-1].position - frames[0].position) / (n - 1)
            cosang = abs(float(slice_vec @ normal)) / max(np.linalg.norm(slice_vec), 1e-12)
            tilt = float(np.degrees(np.arccos(min(1.0, cosang))))
            if tilt > 0.1:
                warnings.append(
                    f"gantry tilt of {tilt:.2f} degrees in {where.name}: slices are offset "
                    "along the table; the volume keeps the true (sheared) geometry")
        else:
            step = first.thickness or _float(first.ds.get("SpacingBetweenSlices"), None) or 1.0
            slice_vec = normal * step
        a_lps[:3, 0] = slice_vec
        a_lps[:3, 1] = col * ps[0]
        a_lps[:3, 2] = row * ps[1]
        a_lps[:3, 3] = first.position
    else:
        missing = sum(f.position is None or f.orientation is None for f in frames)
        step = (_float(first.ds.get("SpacingBetweenSlices"), None) or first.thickness)
        how = f"SliceThickness/SpacingBetweenSlices ({step:g} mm)" if step else "1.0 mm (assumed)"
        step = step or 1.0
        warnings.append(
            f"{missing} of {n} slices in {where.name} have no ImagePositionPatient/"
            f"ImageOrientationPatient: sorted by InstanceNumber, slice spacing from {how}")
        ori = first.orientation
        if ori is not None:
            row, col, normal = ori[:3], ori[3:], _normal(ori)
        else:
            row, col, normal = np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([0, 0, 1.0])
        a_lps[:3, 0] = normal * abs(step)
        a_lps[:3, 1] = col * ps[0]
        a_lps[:3, 2] = row * ps[1]
        if first.position is not None:
            a_lps[:3, 3] = first.position
    aff = np.eye(4)
    aff[:3, :3] = LPS_TO_SAR @ a_lps[:3, :3]
    aff[:3, 3] = LPS_TO_SAR @ a_lps[:3, 3]
    return _Geometry(frames, aff, warnings, None if proj is None else proj.tolist())


# ---------------------------------------------------------------------- pixels
def _transfer_syntax(ds: Any) -> str:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return f"{getattr(uid, 'name', uid)} ({uid})" if uid else "unknown"


class _PixelCache:
    """Decodes each file once (multi-frame files hold all frames)."""

    def __init__(self) -> None:
        self._arrays: dict[Path, np.ndarray] = {}
        self.colour: set[Path] = set()

    def frame(self, fr: _Frame) -> np.ndarray:
        arr = self._arrays.get(fr.path)
        if arr is None:
            try:
                arr = fr.ds.pixel_array
            except Exception as exc:  # pydicom's decoders raise many exception types
                syntax = _transfer_syntax(fr.ds)
                raise ReadError(fr.path, f"pixel data could not be decoded (transfer syntax "
                                         f"{syntax}): {exc}. For compressed DICOM install the "
                                         f"decoders: {DECODER_HINT}") from exc
            spp = int(fr.ds.get("SamplesPerPixel", 1) or 1)
            if spp > 1:
                self.colour.add(fr.path)
                arr = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114],
                                                                   dtype=np.float32)
            self._arrays[fr.path] = arr
        if fr.frame is not None and arr.ndim == 3:
            return arr[fr.frame]
        return arr


def _value(cache: _PixelCache, fr: _Frame, as_float: bool) -> np.ndarray:
    raw = cache.frame(fr)
    if not as_float:
        return raw
    return (raw.astype(np.float32) * np.float32(fr.slope) + np.float32(fr.intercept))


def _dedupe(frames: list[_Frame], cache: _PixelCache, as_float: bool, where: Path
            ) -> tuple[list[_Frame], list[str]]:
    """Drop identical copies at one position; refuse different images at one position."""
    frames, proj = _sort(frames)
    if proj is None or len(frames) < 2:
        return frames, []
    keep = [frames[0]]
    dropped = 0
    for i in range(1, len(frames)):
        if abs(proj[i] - proj[i - 1]) > POSITION_TOL:
            keep.append(frames[i])
            continue
        a, b = _value(cache, keep[-1], as_float), _value(cache, frames[i], as_float)
        if a.shape == b.shape and np.array_equal(a, b):
            dropped += 1
            continue
        raise ReadError(where, f"duplicate slice position {proj[i]:.3f} mm along the normal "
                               f"with different pixel data ({keep[-1].path.name}, "
                               f"{frames[i].path.name}): the series mixes several acquisitions "
                               "(echoes, time points?); pick one series or split the files")
    if dropped:
        return keep, [f"{dropped} duplicate slices (same position, identical pixels) in "
                      f"{where.name} were dropped"]
    return keep, []


def _check_sizes(frames: list[_Frame], where: Path) -> None:
    sizes: dict[tuple[int, int], list[_Frame]] = defaultdict(list)
    for f in frames:
        sizes[(f.rows, f.cols)].append(f)
    if len(sizes) > 1:
        parts = [f"{r}x{c} ({len(fs)} slices, e.g. {fs[0].path.name})"
                 for (r, c), fs in sizes.items()]
        raise ReadError(where, "slices of one series differ in size: " + ", ".join(parts))


def _modality(tag: str) -> str:
    tag = (tag or "").upper()
    return tag if tag in ("CT", "MR", "US") else ""


def _pick(groups: dict[str, list[_Frame]], series_uid: str | None, where: Path
          ) -> tuple[str, list[str]]:
    if series_uid is not None:
        if series_uid not in groups:
            raise ReadError(where, f"series {series_uid} not found; available: "
                                   + ", ".join(groups))
        return series_uid, []
    uid = max(groups, key=lambda u: len(groups[u]))
    if len(groups) == 1:
        return uid, []
    others = [f"{u} ({str(groups[u][0].ds.get('SeriesDescription', '')) or '?'}, "
              f"{len(groups[u])} slices)" for u in groups if u != uid]
    return uid, [f"{where.name} holds {len(groups)} series; read the one with most slices "
                 f"({uid}, {len(groups[uid])} slices). Others: {'; '.join(others)} "
                 "(pick one with series_uid=..., or --series-uid on the command line)"]


def read_dicom(path: str | Path, series_uid: str | None = None) -> Volume:
    """Read one DICOM series from a file or a folder (searched recursively) as a Volume."""
    path = Path(path)
    groups, _ = scan(path)
    uid, warnings = _pick(groups, series_uid, path)
    frames = groups[uid]
    _check_sizes(frames, path)
    check_declared_size(frames, path)
    check_rescale(frames)
    frames, w = place_missing_positions(frames, path)  # never mirror: see dicom_checks
    warnings += w
    ds0 = frames[0].ds
    modality_tag = str(ds0.get("Modality", "") or "")
    rescaled = any(f.slope != 1.0 or f.intercept != 0.0 for f in frames)
    as_float = rescaled or modality_tag.upper() == "CT"
    cache = _PixelCache()
    frames, w = _dedupe(frames, cache, as_float, path)
    warnings += w
    geo = _geometry(frames, path)
    warnings += geo.warnings
    slices = [_value(cache, f, as_float) for f in geo.frames]
    if cache.colour:
        warnings.append(f"{len(cache.colour)} colour file(s) converted to grayscale (luminance)")
        slices = [s.astype(np.float32) for s in slices]
    data = slices[0] if geo.affine.shape[0] == 3 else np.stack(slices)
    slope_int = (frames[0].slope, frames[0].intercept)
    header: dict[str, Any] = {
        "format": "dicom",
        "modality": modality_tag,
        "series_uid": uid,
        "series_description": str(ds0.get("SeriesDescription", "") or ""),
        "study_uid": str(ds0.get("StudyInstanceUID", "") or ""),
        "rescale": slope_int,
        "rescale_varies": len({(f.slope, f.intercept) for f in frames}) > 1,
        "transfer_syntax": _transfer_syntax(ds0),
        "n_files": len({f.path for f in frames}),
        "first_file": str(geo.frames[0].path),
        "qform_code": 1,
        "sform_code": 1,
    }
    if all(f.frame is None for f in geo.frames):  # single-frame files: what a DICOM-SEG cites
        header["sop_instance_uids"] = [str(f.ds.get("SOPInstanceUID", "")) for f in geo.frames]
        header["frame_files"] = [str(f.path) for f in geo.frames]
    if geo.positions is not None:
        header["slice_positions_mm"] = [round(p, 4) for p in geo.positions]
    for w in warnings:
        log.warning(w)
    try:
        return volume_from_affine(data, geo.affine, modality=_modality(modality_tag),
                                  is_labels=False, source=str(path), header=header,
                                  warnings=tuple(warnings))
    except ValueError as exc:
        raise ReadError(path, f"invalid geometry ({exc})") from exc


def list_dicom_series(path: str | Path) -> list[SeriesInfo]:
    """The image series under ``path`` (headers only; no pixel data decoded)."""
    path = Path(path)
    groups, _ = scan(path)
    out = []
    for uid, frames in groups.items():
        ds0 = frames[0].ds
        try:
            frames, _ = place_missing_positions(frames, path)
            geo = _geometry(frames, path)
            n = geo.affine.shape[0] - 1
            spacing = tuple(float(s) for s in np.linalg.norm(geo.affine[:n, :n], axis=0))
        except ReadError as exc:  # still list it; reading will report the problem
            log.warning("series %s: %s", uid, exc)
            spacing = ()
        rows, cols = frames[0].rows, frames[0].cols
        shape = (len(frames), rows, cols) if len(spacing) != 2 else (rows, cols)
        out.append(SeriesInfo(
            uid=uid, modality=str(ds0.get("Modality", "") or ""),
            description=str(ds0.get("SeriesDescription", "") or ""), n_slices=len(frames),
            shape=shape, spacing=spacing,
            files=tuple(sorted({str(f.path) for f in frames}))))
    out.sort(key=lambda s: -s.n_slices)
    return out
