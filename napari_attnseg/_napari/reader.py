"""npe2 reader: NIfTI / NRRD files, DICOM files and folders -> napari layers with geometry.

``get_reader`` is cheap (``io.can_read`` looks at the name and a few bytes, or for a folder
whether it holds DICOM) and returns None for anything else so napari can try other readers.
The returned function reads through :func:`napari_attnseg.io.read_volume`; problems found while
reading (series choice, uneven spacing, NaN voxels) become napari warnings, and a file that
cannot be read becomes an error notification naming the file and the problem - never a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import AttnsegError
from .layers import layer_data_tuple

log = logging.getLogger(__name__)

LayerDataTuple = tuple[Any, dict[str, Any], str]


def _paths(path: str | Sequence[str]) -> list[str]:
    if isinstance(path, (str, Path)):
        return [str(path)]
    return [str(p) for p in path]


def layer_name(path: str | Path) -> str:
    """Layer name for a file or folder: the name without .nii/.nii.gz/.nrrd/.dcm."""
    name = Path(path).name or str(path)
    for suffix in (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".dcm", ".ima", ".mha",
                   ".mhd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def get_reader(path: str | Sequence[str]) -> Callable[[Any], list[LayerDataTuple]] | None:
    """The reader function when :mod:`napari_attnseg.io` can read every path, else None."""
    from .. import io

    paths = _paths(path)
    if not paths or not all(io.can_read(p) for p in paths):
        return None
    return read_layers


def read_one(path: str | Path) -> list[LayerDataTuple]:
    """Read one file or folder; warnings are shown, errors raise (AttnsegError / ValueError)."""
    from napari.utils.notifications import show_warning

    from .. import io
    from ..io.formats_in import read_label_layers

    layers = read_label_layers(path)  # seg.nrrd / DICOM-SEG: a labels layer per layer
    if layers is not None:
        base = layer_name(path)
        for msg in {m for v in layers for m in v.warnings}:
            show_warning(f"{Path(path).name}: {msg}")
        return [layer_data_tuple(v, name=base if len(layers) == 1 else f"{base} [layer {i + 1}]")
                for i, v in enumerate(layers)]
    vol = io.read_volume(path)
    for msg in vol.warnings:
        show_warning(f"{Path(path).name}: {msg}")
    return [layer_data_tuple(vol, name=layer_name(path))]


def read_layers(path: str | Sequence[str]) -> list[LayerDataTuple]:
    """Read each path; one that fails gives an error notification and is skipped."""
    from napari.utils.notifications import show_error

    out: list[LayerDataTuple] = []
    for p in _paths(path):
        try:
            out.extend(read_one(p))
        except Exception as exc:  # noqa: BLE001 - no exception may escape a reader
            show_error(f"Could not open {error_text(p, exc)}")
    if out:  # radiological (or $ATTNSEG_DISPLAY) display and orientation letters
        try:
            from .display import ensure_current_viewer_display

            ensure_current_viewer_display()
        except Exception:  # noqa: BLE001 - the layers still open; no exception escapes a reader
            log.exception("could not set the display for %s", path)
    return out


def error_text(path: str | Path, exc: BaseException) -> str:
    """``<file>: <problem>`` for a notification; the problem is never empty (a bare
    MemoryError says so) and unexpected errors are logged with their traceback."""
    reason = " ".join(str(exc).split())
    if isinstance(exc, MemoryError):
        reason = f"not enough memory to read it ({reason or 'MemoryError'})"
    elif not isinstance(exc, (AttnsegError, ValueError, OSError)):
        log.exception("unexpected error reading %s", path)
        reason = f"unexpected {type(exc).__name__}: {reason or 'no message'}"
    else:
        log.warning("could not open %s: %s", path, reason)
    reason = reason or type(exc).__name__
    return reason if str(path) in reason else f"{path}: {reason}"
