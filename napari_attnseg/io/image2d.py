"""Plain 2D images (PNG, JPEG, TIFF; a multi-page TIFF becomes a (z, y, x) stack).

Pixel size: ``pixel_size_mm`` when given, else a ``filename,pixel_size_mm`` CSV beside the image
(in its folder or the folder above, as HC18 ships ``pixel_size_and_hc.csv`` next to
``images/`` and ``masks/``; a mask ``NNN_mask.png`` takes the row of ``NNN.png``), else 1.0 mm
with a warning. A CSV with a ``head_circumference_mm`` column is HC18's: its images are
ultrasound of the fetal head. A ``modality`` column, where present, names the modality.

Masks open as labels: integer images with few values, and any ``*_mask`` / ``*_seg`` /
``*_labels`` image; a binary mask stored as 0/255 is read as 0/1.
"""

from __future__ import annotations

import csv
import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ReadError
from ..volume import SPACING_NOMINAL, Volume
from ._common import as_label_array, check_file, looks_like_labels
from .validate import label_hint

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: 2D images count as labels only with very few values (a grayscale PNG has up to 256)
MAX_IMAGE_LABEL_VALUES = 16
#: Names of masks: ``<image>_mask.png`` and the like (the part before is the image's name).
_MASK_NAME = re.compile(r"^(?P<base>.+?)[_-](mask|seg|segmentation|label|labels|gt)$", re.I)
_SIZE_COLUMNS = ("pixel_size_mm", "pixel size(mm)", "pixel_size", "pixel size (mm)",
                 "spacing_mm", "pixelsize")
_NAME_COLUMNS = ("filename", "file", "image", "name")


@dataclass(frozen=True)
class PixelSizeRow:
    """What a pixel-size CSV says about one image."""

    pixel_size_mm: float
    csv_path: Path
    modality: str = ""  #: "US" for HC18's CSV, or the CSV's ``modality`` column
    anatomy: str = ""


def mask_base_name(path: str | Path) -> str | None:
    """``"000_HC"`` for ``000_HC_mask.png``; ``None`` when the name is not a mask's."""
    p = Path(path)
    m = _MASK_NAME.match(p.stem)
    return m.group("base") if m else None


@functools.lru_cache(maxsize=32)
def _parse_csv(path: str, mtime_ns: int) -> dict[str, PixelSizeRow] | None:
    """``{file name: row}`` of a pixel-size CSV; ``None`` when it is not one."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
            name_col = next((cols[c] for c in _NAME_COLUMNS if c in cols), None)
            size_col = next((cols[c] for c in _SIZE_COLUMNS if c in cols), None)
            if name_col is None or size_col is None:
                return None
            hc18 = any("head_circumference" in c or "head circumference" in c for c in cols)
            mod_col = cols.get("modality")
            out: dict[str, PixelSizeRow] = {}
            for row in reader:
                name = str(row.get(name_col) or "").strip()
                try:
                    size = float(row.get(size_col) or "nan")
                except ValueError:
                    continue
                if not name or not np.isfinite(size) or size <= 0:
                    continue
                modality = "US" if hc18 else ""
                if mod_col and row.get(mod_col):
                    from .modality import normalize_modality

                    modality = normalize_modality(row[mod_col]) or modality
                out[name] = PixelSizeRow(size, Path(path), modality,
                                         "fetal head" if hc18 else "")
            return out
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        log.debug("not a pixel-size CSV: %s (%s)", path, exc)
        return None


def pixel_size_from_csv(path: str | Path) -> PixelSizeRow | None:
    """The row for ``path`` in a ``filename,pixel_size_mm`` CSV in its folder or the folder
    above (the image's own name, or for a mask the name of its image); ``None`` if none."""
    p = Path(path)
    names = [p.name]
    base = mask_base_name(p)
    if base is not None:
        names += [base + p.suffix, base + ".png", base]
    for folder in (p.parent, p.parent.parent):
        try:
            csvs = sorted(folder.glob("*.csv")) if folder.is_dir() else []
        except OSError:
            continue
        for c in csvs[:20]:
            try:
                rows = _parse_csv(str(c), c.stat().st_mtime_ns)
            except OSError:
                continue
            if rows:
                for n in names:
                    if n in rows:
                        return rows[n]
    return None


def is_image2d(path: str | Path) -> bool:
    """True when the name ends in a plain image suffix (no file access; never raises)."""
    return str(path).lower().endswith(IMAGE_SUFFIXES)


def _to_gray(arr: np.ndarray, path: Path) -> tuple[np.ndarray, list[str]]:
    """(..., y, x, 3|4) colour -> grayscale luminance; identical channels are taken as is."""
    rgb = arr[..., :3]
    if all(np.array_equal(rgb[..., 0], rgb[..., c]) for c in (1, 2)):
        return rgb[..., 0], []
    gray = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return gray, [f"{path.name} is a colour image; converted to grayscale (luminance)"]


def _drop_alpha(arr: np.ndarray, path: Path) -> tuple[np.ndarray, list[str]]:
    """(..., y, x, 2|4) grey+alpha / RGBA -> grey (..., y, x) / RGB (..., y, x, 3); the alpha
    channel is dropped, with a warning when it is not fully opaque."""
    if arr.shape[-1] == 3:
        return arr, []
    alpha = arr[..., -1]
    colour = arr[..., :1][..., 0] if arr.shape[-1] == 2 else arr[..., :3]
    top = np.iinfo(arr.dtype).max if np.issubdtype(arr.dtype, np.integer) else 1.0
    if np.all(alpha == top):
        return colour, []
    return colour, [f"{path.name} has a transparency (alpha) channel; it was ignored"]


def read_image2d(path: str | Path, *, pixel_size_mm: float | None = None) -> Volume:
    """Read a PNG/JPEG/TIFF as a (y, x) Volume (a multi-page TIFF as (z, y, x)).

    ``pixel_size_mm`` sets the isotropic pixel size; without it the pixel-size CSV beside the
    image is used (:func:`pixel_size_from_csv`), else 1.0 mm with a warning saying so.
    """
    path = Path(path)
    check_file(path)
    warnings: list[str] = []
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(str(path))
        else:
            import imageio.v3 as iio

            arr = iio.imread(str(path))
    except Exception as exc:  # imageio/tifffile raise many types for corrupt files
        raise ReadError(path, f"not a readable image ({type(exc).__name__}: {exc})") from exc
    arr = np.asarray(arr)
    if arr.ndim >= 3 and arr.shape[-1] in (2, 3, 4) and arr.shape[-1] < min(arr.shape[:-1]):
        arr, w = _drop_alpha(arr, path)  # grey+alpha / RGBA: a 2D image, not 2-pixel slices
        warnings += w
        if arr.shape[-1] == 3:
            arr, w = _to_gray(arr, path)
            warnings += w
    arr = np.squeeze(arr) if arr.ndim > 2 else arr
    if arr.ndim not in (2, 3):
        raise ReadError(path, f"image has shape {arr.shape}; a 2D image or a 3D stack is needed")
    header: dict = {"format": "image"}
    modality = ""
    if pixel_size_mm is None:
        row = pixel_size_from_csv(path)
        if row is None:
            size = 1.0
            warnings.append(f"{path.name} has no pixel size; 1.0 mm assumed (set the pixel "
                            "size, or put a filename,pixel_size_mm CSV beside the images)")
            header["pixel_size_source"] = "assumed"
            header[SPACING_NOMINAL] = True
        else:
            size = row.pixel_size_mm
            header["pixel_size_source"] = row.csv_path.name
            if row.modality:
                modality = row.modality
                kind = "HC18 CSV" if row.anatomy == "fetal head" else "CSV"
                header["modality_source"] = f"the {kind} {row.csv_path.name}"
            if row.anatomy:
                header["anatomy"] = row.anatomy
                header["anatomy_source"] = f"the HC18 CSV {row.csv_path.name}"
    else:
        size = float(pixel_size_mm)
        if not np.isfinite(size) or size <= 0:
            raise ValueError(f"pixel_size_mm must be positive, got {pixel_size_mm!r}")
        header["pixel_size_source"] = "given"
    header["pixel_size_mm"] = size
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    named_mask = mask_base_name(path) is not None
    is_labels = bool(np.issubdtype(arr.dtype, np.integer)
                     and looks_like_labels(arr, label_hint(path, True if named_mask else None)))
    if is_labels:
        values = np.unique(arr)
        if values.size == 2 and values[0] == 0 and values[1] == 255:
            arr = (arr > 0).astype(np.uint8)
            warnings.append(f"{path.name} is a binary mask stored as 0/255; read as 0/1")
        arr = as_label_array(arr)
        modality = ""  # a mask has no modality of its own
        header.pop("modality_source", None)
    return Volume(data=np.ascontiguousarray(arr), spacing=(size,) * arr.ndim, is_labels=is_labels,
                  modality=modality, source=str(path), header=header, warnings=tuple(warnings))
