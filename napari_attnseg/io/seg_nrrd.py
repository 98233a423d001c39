"""3D Slicer segmentations (``.seg.nrrd``) in and out with segment names and colours (slicerio).

Reading: :func:`read_seg_nrrd_layers` gives one label :class:`Volume` per layer of the file
(Slicer stores overlapping segments in several layers, a 4D ``list domain domain domain`` NRRD),
each with its segments' names and colours in ``metadata``; :func:`read_seg_nrrd` gives one volume
(the only layer, or for a layered file every segment relabelled 1..N in file order, later ones
winning where they overlap, with a warning that counts the overlapping voxels).

Writing: :func:`write_seg_nrrd` writes a label volume as one layer, a segment per label value
(the model's names and colours; named labels absent from the mask are written as empty
segments), atomically and verified by reading it back with slicerio, with a ``<name>.json``
sidecar holding the provenance. slicerio is the optional extra ``slicer``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GeometryError, MissingDependencyError, ReadError, WriteError
from ..volume import Volume, nifti_affine_from_zyx, volume_from_affine, zyx_affine_from_nifti
from ._common import as_label_array, check_file
from .labeltable import (Label, labels_from_metadata, mask_stem, metadata_from_labels,
                         parse_color, present_values, sidecar_label_rows)

log = logging.getLogger(__name__)

SEG_SUFFIX = ".seg.nrrd"
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _slicerio():
    try:
        import slicerio
    except ImportError as exc:
        raise MissingDependencyError("slicerio", extra="slicer",
                                     purpose="3D Slicer segmentations (.seg.nrrd)") from exc
    return slicerio


def is_seg_nrrd(path: str | Path) -> bool:
    """True for ``*.seg.nrrd``, or an ``.nrrd`` file whose header has Slicer segment fields
    (reads the header only; never raises)."""
    p = Path(path)
    low = p.name.lower()
    if low.endswith(SEG_SUFFIX):
        return True
    if not low.endswith(".nrrd") or not p.is_file():
        return False
    try:
        import nrrd

        header = nrrd.read_header(str(p))
    except Exception:  # pynrrd raises several types on a bad header; not a segmentation then
        return False
    return any(str(k).startswith("Segment0_") for k in header)


def _read(path: Path) -> dict[str, Any]:
    from .nrrd import inspect_nrrd

    check_file(path)
    inspect_nrrd(path)  # the input gate: type, sizes, data file, raw size, before any read
    slicerio = _slicerio()
    try:
        return slicerio.read_segmentation(str(path))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReadError(path, f"not a readable 3D Slicer segmentation ({type(exc).__name__}: "
                              f"{exc})") from exc


def _segment_label(seg: Mapping[str, Any], value: int) -> Label:
    from .labeltable import default_color

    rgb = parse_color(seg.get("color")) or default_color(value)
    name = str(seg.get("name") or seg.get("id") or f"label {value}")
    return Label(int(value), name, rgb)


def _zyx_affine(ijk_to_lps: Any) -> np.ndarray:
    return zyx_affine_from_nifti(_LPS @ np.asarray(ijk_to_lps, dtype=float))


def _layer_arrays(seg: dict[str, Any], path: Path) -> list[np.ndarray]:
    vox = np.asarray(seg["voxels"])
    if vox.ndim == 3:
        return [np.ascontiguousarray(vox.T)]
    if vox.ndim == 4:
        return [np.ascontiguousarray(vox[i].T) for i in range(vox.shape[0])]
    raise ReadError(path, f"segmentation voxels have shape {vox.shape}; 3D or layered 4D expected")


def _volume(data: np.ndarray, affine: np.ndarray, path: Path, labels: list[Label],
            extra: dict[str, Any], warnings: tuple[str, ...] = ()) -> Volume:
    header = {"format": "seg.nrrd", "qform_code": 1, "sform_code": 1, **extra}
    try:
        return volume_from_affine(as_label_array(data), affine, is_labels=True, source=str(path),
                                  header=header, metadata=metadata_from_labels(labels),
                                  warnings=warnings)
    except ValueError as exc:
        raise ReadError(path, f"has an invalid geometry ({exc})") from exc


def read_seg_nrrd_layers(path: str | Path) -> list[Volume]:
    """One label volume per layer of a Slicer segmentation, each with the names and colours
    of its segments (``metadata['label_names']`` / ``['label_colors']``)."""
    path = Path(path)
    seg = _read(path)
    affine = _zyx_affine(seg["ijkToLPS"])
    layers = _layer_arrays(seg, path)
    segments = list(seg.get("segments") or [])
    out = []
    for i, data in enumerate(layers):
        mine = [s for s in segments if int(s.get("layer", 0) or 0) == i]
        labels = [_segment_label(s, int(s.get("labelValue", 1))) for s in mine]
        out.append(_volume(data, affine, path, labels,
                           {"seg_layer": i, "seg_layers": len(layers),
                            "segment_ids": [str(s.get("id", "")) for s in mine]}))
    return out


def read_seg_nrrd(path: str | Path) -> Volume:
    """The segmentation as one label volume (a layered file collapsed: segment n of the file
    becomes label n; where segments overlap the later one wins, with a warning)."""
    path = Path(path)
    layers = read_seg_nrrd_layers(path)
    if len(layers) == 1:
        return layers[0]
    seg = _read(path)
    segments = list(seg.get("segments") or [])
    vox = np.asarray(seg["voxels"])
    shape = layers[0].shape
    out = np.zeros(shape, dtype=np.uint16 if len(segments) > 255 else np.uint8)
    covered = np.zeros(shape, dtype=np.uint16)
    labels = []
    for n, s in enumerate(segments, start=1):
        layer, value = int(s.get("layer", 0) or 0), int(s.get("labelValue", 1))
        mask = np.ascontiguousarray((vox[layer] == value).T)
        out[mask] = n
        covered += mask
        labels.append(_segment_label(s, n))
    overlap = int(np.count_nonzero(covered > 1))
    warnings = ()
    if overlap:
        warnings = (f"{path.name} has {len(layers)} layers of overlapping segments; "
                    f"{overlap} voxels belong to several segments and show the last one (open it "
                    "in napari to get one labels layer per layer)",)
        log.warning(warnings[0])
    return _volume(out, layers[0].affine, path, labels,
                   {"seg_layers": len(layers), "collapsed": True}, warnings)


# ---------------------------------------------------------------------- writing
def _extent(mask: np.ndarray) -> list[int]:
    """Slicer's ``i0 i1 j0 j1 k0 k1`` of a (z, y, x) mask (empty: 0 -1 0 -1 0 -1)."""
    if not mask.any():
        return [0, -1, 0, -1, 0, -1]
    idx = np.nonzero(mask.T)
    return [int(v) for axis in idx for v in (axis.min(), axis.max())]


def segmentation_dict(volume: Volume, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The slicerio segmentation dict for a 3D label volume (one layer, a segment per label)."""
    data = np.asarray(volume.data)
    if volume.ndim != 3:
        raise GeometryError(f"a .seg.nrrd holds a 3D segmentation; this one is {volume.ndim}D "
                            f"{volume.shape}: save 2D results as NIfTI")
    if data.size and ((data.dtype.kind == "f" and not np.all(np.mod(data, 1) == 0))
                      or float(data.min()) < 0):
        raise GeometryError("a .seg.nrrd needs non-negative integer labels")
    data = as_label_array(data.astype(np.int64) if data.dtype.kind in "fb" else data)
    meta = {**dict(volume.metadata), **dict(meta or {})}
    present = set(present_values(data))
    segments = []
    for lb in labels_from_metadata(meta, present):
        segments.append({"id": f"Segment_{lb.value}", "labelValue": lb.value, "layer": 0,
                         "name": lb.name, "nameAutoGenerated": False,
                         "color": list(lb.color01), "colorAutoGenerated": False,
                         "extent": _extent(data == lb.value) if lb.value in present
                         else [0, -1, 0, -1, 0, -1]})
    ijk_to_lps = _LPS @ nifti_affine_from_zyx(volume.affine)
    return {"voxels": data.T, "ijkToLPS": ijk_to_lps, "segments": segments,
            "containedRepresentationNames": ["Binary labelmap"],
            "masterRepresentation": "Binary labelmap", "encoding": "gzip"}


def _json_default(obj: Any) -> Any:
    from .writers import _jsonable

    return _jsonable(obj)


def write_seg_nrrd(volume: Volume, path: str | Path, *, reference: Volume | None = None,
                   provenance: Mapping[str, Any] | None = None) -> Path:
    """Write a 3D label volume as a Slicer ``.seg.nrrd`` (names and colours from its metadata
    and ``provenance``), atomically and verified, with a ``<name>.json`` sidecar."""
    from .. import __version__

    path = Path(path)
    if not path.name.lower().endswith(SEG_SUFFIX):
        raise WriteError(path, f"a 3D Slicer segmentation is named *{SEG_SUFFIX}")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise WriteError(path, f"folder {folder} does not exist")
    vol = volume
    if reference is not None:
        if reference.shape != vol.shape:
            raise GeometryError(f"cannot write {path.name}: shape {vol.shape} differs from the "
                                f"reference {reference.shape} ({reference.source})")
        if not vol.same_grid(reference) and np.allclose(vol.affine, np.eye(vol.ndim + 1)):
            vol = replace(vol, spacing=reference.spacing, origin=reference.origin,
                          direction=reference.direction)
    seg = segmentation_dict(vol, provenance)
    slicerio = _slicerio()
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{mask_stem(path)}.", suffix=SEG_SUFFIX)
    os.close(fd)
    tmp = Path(tmp_name)
    side = path.with_name(mask_stem(path) + ".json")
    try:
        slicerio.write_segmentation(str(tmp), seg)
        back = slicerio.read_segmentation(str(tmp))
        if not np.array_equal(np.asarray(back["voxels"]), np.asarray(seg["voxels"])):
            raise WriteError(path, "verification failed: voxel values re-read differ")
        if not np.allclose(back["ijkToLPS"], seg["ijkToLPS"], atol=1e-5):
            raise WriteError(path, "verification failed: geometry re-read differs")
        names = [s.get("name") for s in back.get("segments", [])]
        if names != [s["name"] for s in seg["segments"]]:
            raise WriteError(path, f"verification failed: segment names re-read {names}")
        meta = {**dict(vol.metadata), **dict(provenance or {})}
        rows = [{"label": s["labelValue"], "voxels": int(np.count_nonzero(vol.data ==
                                                                           s["labelValue"]))}
                for s in seg["segments"]]
        sidecar = {"file": path.name, "written_by": f"napari-attnseg {__version__}",
                   "format": "seg.nrrd", "source": vol.source, "is_labels": True,
                   "geometry": vol.geometry_summary(), "provenance": meta,
                   "labels": sidecar_label_rows(rows, meta)}
        side_tmp = side.with_name(f".{side.name}.tmp")
        side_tmp.write_text(json.dumps(sidecar, indent=2, default=_json_default))
        os.replace(tmp, path)
        os.replace(side_tmp, side)
    except OSError as exc:
        raise WriteError(path, f"could not be written ({exc})") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
        leftover = side.with_name(f".{side.name}.tmp")
        if leftover.exists():
            leftover.unlink()
    log.info("wrote %s (%d segments)", path, len(seg["segments"]))
    return path
