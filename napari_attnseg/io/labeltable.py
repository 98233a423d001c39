"""Label names and colours: one table that every format reads and writes.

A label volume carries its names and colours in ``Volume.metadata`` as
``label_names = {"1": "organ", ...}`` and ``label_colors = {"1": "#e6194b", ...}`` (string keys,
JSON-friendly: exactly what predictions put in their provenance). This module turns that into a
list of :class:`Label` and back, reads and writes the label tables other tools use, and finds the
names written beside a mask:

* ``<stem>.json``: the writer's sidecar (``provenance.label_names`` / ``label_colors``, or the
  ``labels`` table with ``name`` and ``color``);
* ``<stem>.ctbl``: a 3D Slicer colour table (``index name R G B A``; spaces in names become ``_``,
  as Slicer writes them);
* ``<stem>_labels.txt``: an ITK-SNAP label description file (``IDX R G B A VIS MSH "LABEL"``).

Pure Python; no optional dependency.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

RGB = tuple[int, int, int]

#: Distinct colours (after Sasha Trubetskoy's list); label v gets PALETTE[(v - 1) % len].
PALETTE: tuple[RGB, ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)
#: Suffixes stripped to find a mask's stem (longest first).
_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".dcm", ".mha", ".mhd")
_ITK_LINE = re.compile(r'^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([0-9.eE+-]+)\s+(\d+)\s+(\d+)\s+"(.*)"\s*$')
_ITK_HEADER = """\
################################################
# ITK-SnAP Label Description File
# File format:
# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL
# Fields:
#    IDX:   Zero-based index
#    -R-:   Red color component (0..255)
#    -G-:   Green color component (0..255)
#    -B-:   Blue color component (0..255)
#    -A-:   Label transparency (0.00 .. 1.00)
#    VIS:   Label visibility (0 or 1)
#    MSH:   Label mesh visibility (0 or 1)
#  LABEL:   Label description
# Written by napari-attnseg
################################################
"""


@dataclass(frozen=True)
class Label:
    """One label value with its name and display colour (RGB, 0..255)."""

    value: int
    name: str
    color: RGB

    @property
    def hex(self) -> str:
        return hex_color(self.color)

    @property
    def color01(self) -> tuple[float, float, float]:
        """The colour as floats in [0, 1] (Slicer, napari, DICOM conversions)."""
        return tuple(round(c / 255.0, 6) for c in self.color)  # type: ignore[return-value]


def default_color(value: int) -> RGB:
    """The palette colour of label ``value`` (black for the background 0)."""
    value = int(value)
    return (0, 0, 0) if value == 0 else PALETTE[(value - 1) % len(PALETTE)]


def hex_color(rgb: Iterable[int]) -> str:
    r, g, b = (int(c) for c in list(rgb)[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def parse_color(value: Any) -> RGB | None:
    """An RGB triple (0..255) from ``"#rrggbb"``, 0..255 integers or 0..1 floats (RGB or RGBA);
    None when ``value`` is not a colour."""
    if isinstance(value, str):
        m = re.fullmatch(r"#?([0-9a-fA-F]{6})([0-9a-fA-F]{2})?", value.strip())
        if not m:
            return None
        h = m.group(1)
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    try:
        arr = np.asarray(value, dtype=float).ravel()
    except (TypeError, ValueError):
        return None
    if arr.size not in (3, 4) or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        return None
    rgb = arr[:3]
    if np.all(rgb <= 1.0):  # floats in [0, 1] (napari, Slicer); [1, 0, 0] is red
        rgb = rgb * 255.0
    if np.any(rgb > 255.5):
        return None
    return tuple(int(round(c)) for c in rgb)  # type: ignore[return-value]


def _int_keyed(value: Any) -> dict[int, Any]:
    out: dict[int, Any] = {}
    if isinstance(value, Mapping):
        for k, v in value.items():
            try:
                out[int(k)] = v
            except (TypeError, ValueError):
                continue
    elif isinstance(value, (list, tuple)):
        out = dict(enumerate(value))
    return out


def labels_from_metadata(meta: Mapping[str, Any] | None, values: Iterable[int] = ()) -> list[Label]:
    """The labels (background excluded) named in ``meta`` (``label_names`` / ``label_colors``)
    plus any other non-zero ``values`` present in the data, sorted by value. Missing names are
    ``"label <v>"``, missing colours the palette's."""
    meta = meta or {}
    names = {k: str(v) for k, v in _int_keyed(meta.get("label_names")).items()}
    colours = {k: c for k, v in _int_keyed(meta.get("label_colors")).items()
               if (c := parse_color(v)) is not None}
    keys = sorted({int(v) for v in values} | set(names) | set(colours))
    return [Label(v, names.get(v) or f"label {v}", colours.get(v) or default_color(v))
            for v in keys if v > 0]


def metadata_from_labels(labels: Iterable[Label]) -> dict[str, dict[str, str]]:
    """``{"label_names": {...}, "label_colors": {...}}`` (string keys) for Volume.metadata."""
    labels = list(labels)
    return {"label_names": {str(lb.value): lb.name for lb in labels},
            "label_colors": {str(lb.value): lb.hex for lb in labels}}


def present_values(data: np.ndarray) -> list[int]:
    """Non-zero label values present in an integer array."""
    arr = np.asarray(data)
    if arr.size == 0:
        return []
    if np.issubdtype(arr.dtype, np.integer) and int(arr.min()) >= 0 and int(arr.max()) < 1 << 20:
        return [int(v) for v in np.flatnonzero(np.bincount(arr.ravel().astype(np.int64))) if v]
    return [int(v) for v in np.unique(arr) if v != 0]


# ---------------------------------------------------------------------- table files
def mask_stem(path: str | Path) -> str:
    """File name without .seg.nrrd / .nii.gz / .nii / .nrrd / .dcm / .mha / .mhd."""
    name = Path(path).name
    low = name.lower()
    for suf in _SUFFIXES:
        if low.endswith(suf):
            return name[: -len(suf)]
    return Path(name).stem


def ctbl_path(path: str | Path) -> Path:
    return Path(path).with_name(mask_stem(path) + ".ctbl")


def itksnap_path(path: str | Path) -> Path:
    return Path(path).with_name(mask_stem(path) + "_labels.txt")


def format_ctbl(labels: Iterable[Label]) -> str:
    lines = ["# Color table file written by napari-attnseg",
             "# index name R G B A (3D Slicer colour table)", "0 background 0 0 0 0"]
    for lb in labels:
        name = re.sub(r"\s+", "_", lb.name.strip()) or f"label_{lb.value}"
        lines.append(f"{lb.value} {name} {lb.color[0]} {lb.color[1]} {lb.color[2]} 255")
    return "\n".join(lines) + "\n"


def parse_ctbl(text: str) -> list[Label]:
    """Labels of a Slicer colour table (the background and unnamed rows skipped)."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#") or len(parts) < 5:
            continue
        try:
            value, rgb = int(parts[0]), tuple(int(float(p)) for p in parts[2:5])
        except ValueError:
            continue
        if value > 0 and parts[1] not in ("", "(none)"):
            out.append(Label(value, parts[1], rgb))  # type: ignore[arg-type]
    return out


def format_itksnap(labels: Iterable[Label]) -> str:
    rows = ['    0     0    0    0        0  0  0    "Clear Label"']
    for lb in labels:
        name = lb.name.replace('"', "'")
        rows.append(f"{lb.value:5d} {lb.color[0]:5d} {lb.color[1]:4d} {lb.color[2]:4d}"
                    f"        1  1  1    \"{name}\"")
    return _ITK_HEADER + "\n".join(rows) + "\n"


def parse_itksnap(text: str) -> list[Label]:
    """Labels of an ITK-SNAP label description file (the clear label 0 skipped)."""
    out = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        m = _ITK_LINE.match(line)
        if m and int(m.group(1)) > 0:
            out.append(Label(int(m.group(1)), m.group(8),
                             (int(m.group(2)), int(m.group(3)), int(m.group(4)))))
    return out


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_label_tables(mask_path: str | Path, labels: Iterable[Label]) -> list[Path]:
    """Write ``<stem>.ctbl`` (3D Slicer) and ``<stem>_labels.txt`` (ITK-SNAP) beside a mask,
    each atomically. Returns the paths written (none for an empty table)."""
    labels = list(labels)
    if not labels:
        return []
    out = []
    for target, text in ((ctbl_path(mask_path), format_ctbl(labels)),
                         (itksnap_path(mask_path), format_itksnap(labels))):
        _atomic_text(target, text)
        out.append(target)
    return out


def _from_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        side = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.debug("no label names in %s: %s", path, exc)
        return None
    if not isinstance(side, dict):
        return None
    prov = side.get("provenance") if isinstance(side.get("provenance"), dict) else {}
    names = dict(_int_keyed(prov.get("label_names")))
    colours = dict(_int_keyed(prov.get("label_colors")))
    for row in side.get("labels") or []:
        if isinstance(row, dict) and "label" in row:
            if row.get("name"):
                names.setdefault(int(row["label"]), row["name"])
            if row.get("color"):
                colours.setdefault(int(row["label"]), row["color"])
    names.pop(0, None)
    if not names and not colours:
        return None
    return {"label_names": {str(k): str(v) for k, v in names.items()},
            "label_colors": {str(k): hex_color(c) for k, v in colours.items()
                             if (c := parse_color(v)) is not None}}


def read_label_info(mask_path: str | Path) -> dict[str, Any] | None:
    """Label names/colours written beside ``mask_path``: the JSON sidecar, else a Slicer
    ``.ctbl``, else an ITK-SNAP ``_labels.txt``; None when there is none."""
    p = Path(mask_path)
    side = p.with_name(mask_stem(p) + ".json")
    if side.is_file():
        info = _from_sidecar(side)
        if info:
            return info
    for table, parse in ((ctbl_path(p), parse_ctbl), (itksnap_path(p), parse_itksnap)):
        if table.is_file():
            try:
                labels = parse(table.read_text(encoding="utf-8", errors="replace"))
            except OSError as exc:
                log.warning("could not read the label table %s: %s", table, exc)
                continue
            if labels:
                return metadata_from_labels(labels)
    return None


def with_label_info(volume: Any, mask_path: str | Path) -> Any:
    """``volume`` with the names/colours found beside ``mask_path`` in its metadata (names
    already in the metadata win); unchanged when none are found or it is not a label volume."""
    if not getattr(volume, "is_labels", False):
        return volume
    info = read_label_info(mask_path)
    if not info:
        return volume
    meta = dict(volume.metadata)
    for key in ("label_names", "label_colors"):
        merged = dict(info.get(key) or {})
        merged.update({str(k): v for k, v in (meta.get(key) or {}).items()})
        if merged:
            meta[key] = merged
    return replace(volume, metadata=meta)


def sidecar_label_rows(rows: list[dict[str, Any]], meta: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The writer's per-label rows with ``name`` and ``color`` added from ``meta`` (unchanged
    when ``meta`` names no label: defaults are not written as if they were known)."""
    if not meta or not (meta.get("label_names") or meta.get("label_colors")):
        return [dict(r) for r in rows]
    table = {lb.value: lb for lb in labels_from_metadata(meta, [r["label"] for r in rows])}
    out = []
    for r in rows:
        lb = table.get(int(r["label"]))
        out.append(dict(r, name=lb.name, color=lb.hex) if lb else dict(r))
    return out
