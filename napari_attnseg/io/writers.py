"""Atomic, verified NIfTI writing with the source geometry and a JSON sidecar."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GeometryError, WriteError
from ..volume import Volume, nifti_affine_from_zyx, zyx_affine_from_nifti
from ._common import squeeze_trailing
from .nifti import QFORM_FIELDS

log = logging.getLogger(__name__)


def nifti_stem(path: str | Path) -> str:
    """File name without .nii / .nii.gz."""
    name = Path(path).name
    for suf in (".nii.gz", ".nii"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return Path(name).stem


def sidecar_path(path: str | Path) -> Path:
    """``<folder>/<name>.json`` for ``<folder>/<name>.nii.gz``."""
    path = Path(path)
    return path.with_name(nifti_stem(path) + ".json")


def _is_default_geometry(vol: Volume) -> bool:
    return (np.allclose(vol.spacing, 1.0) and np.allclose(vol.origin, 0.0)
            and vol.is_identity_direction)


def _header_target(vol: Volume) -> tuple[np.ndarray, tuple[int, ...]] | None:
    """The source file's affine and shape when they fit the volume exactly."""
    hdr = vol.header or {}
    na = hdr.get("nifti_affine")
    fshape = hdr.get("nifti_shape")
    if na is None or fshape is None:
        return None
    na = np.asarray(na, dtype=float)
    fshape = tuple(int(s) for s in fshape)
    if na.shape != (4, 4) or tuple(reversed(squeeze_trailing(fshape, 2))) != vol.shape:
        return None
    if vol.ndim == 3:
        ok = np.allclose(zyx_affine_from_nifti(na), vol.affine, rtol=1e-6, atol=1e-4)
    else:
        ok = np.allclose(np.linalg.norm(na[:3, :2], axis=0)[::-1], vol.spacing, rtol=1e-6)
    if not ok:
        log.info("header affine of %s does not match its geometry; using the geometry",
                 vol.source)
        return None
    return na, fshape


def _geometry_target(vol: Volume) -> tuple[np.ndarray, tuple[int, ...]]:
    if vol.ndim == 3:
        return nifti_affine_from_zyx(vol.affine), tuple(reversed(vol.shape))
    a2 = nifti_affine_from_zyx(vol.affine)  # 3x3: (i, j) -> (R, A)
    na = np.eye(4)
    na[:2, :2] = a2[:2, :2]
    na[:2, 3] = a2[:2, 2]
    return na, tuple(reversed(vol.shape))


def _file_dtype(data: np.ndarray, is_labels: bool, path: Path) -> np.dtype:
    if data.dtype == bool:
        return np.dtype(np.uint8)
    if np.iscomplexobj(data):
        raise WriteError(path, "complex data cannot be saved as NIfTI")
    if is_labels or np.issubdtype(data.dtype, np.integer):
        if is_labels and not np.issubdtype(data.dtype, np.integer):
            if data.size and not np.all(np.mod(data, 1) == 0):
                raise WriteError(path, "label volume has non-integer values")
        lo = int(data.min()) if data.size else 0
        hi = int(data.max()) if data.size else 0
        if is_labels and lo >= 0:
            cands = (np.uint8, np.uint16, np.uint32)
        elif not is_labels and data.dtype.itemsize <= 4:
            return data.dtype
        else:
            cands = (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32) if lo >= 0 \
                else (np.int8, np.int16, np.int32)
        for dt in cands:
            info = np.iinfo(dt)
            if info.min <= lo and hi <= info.max:
                return np.dtype(dt)
        return np.dtype(np.int64)
    if data.dtype == np.float16:
        return np.dtype(np.float32)
    return data.dtype


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, bytes):
        return obj.decode("latin-1", "replace")
    return repr(obj)


def _label_table(data: np.ndarray, spacing: tuple[float, ...]) -> list[dict[str, Any]]:
    if data.size == 0 or int(data.min()) < 0:
        return []
    counts = np.bincount(data.ravel().astype(np.int64))
    vox = float(np.prod(spacing))
    return [{"label": int(v), "voxels": int(c), "volume_mm3": round(c * vox, 4)}
            for v, c in enumerate(counts) if c and v != 0]


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


#: one file of a unit: (volume, path, reference, provenance)
Item = tuple[Volume, "str | Path", "Volume | None", "Mapping[str, Any] | None"]


def _stage(volume: Volume, path: str | Path, reference: Volume | None,
           provenance: Mapping[str, Any] | None, unit: Any) -> dict[str, Any]:
    """Write ``volume`` to a temporary file of ``unit``, verify it and build its sidecar."""
    import nibabel as nib

    path = Path(path)
    lname = path.name.lower()
    if not (lname.endswith(".nii.gz") or lname.endswith(".nii")):
        raise WriteError(path, "only .nii and .nii.gz are written; change the file name")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise WriteError(path, f"folder {folder} does not exist")
    if path.is_dir():
        raise WriteError(path, "is a folder; give a file name (.nii / .nii.gz)")
    vol = volume
    if reference is not None:
        if reference.shape != vol.shape:
            raise GeometryError(f"cannot write {path.name}: shape {vol.shape} differs from the "
                                f"reference {reference.shape} ({reference.source})")
        if _header_target(vol) is None:
            if _is_default_geometry(vol) and not vol.same_grid(reference):
                vol = replace(vol, spacing=reference.spacing, origin=reference.origin,
                              direction=reference.direction)
            elif not vol.same_grid(reference):
                raise GeometryError(
                    f"cannot write {path.name}: its grid (spacing {vol.spacing}, origin "
                    f"{vol.origin}) differs from the reference {reference.source} (spacing "
                    f"{reference.spacing}, origin {reference.origin})")
            vol = replace(vol, header={**dict(reference.header), **dict(vol.header)})
    target = _header_target(vol)
    hdr = vol.header or {}
    if target is not None:
        nib_affine, fshape = target
        qcode, scode = int(hdr.get("qform_code", 1)), int(hdr.get("sform_code", 1))
        qparams = hdr.get("nifti_qform_params")
    else:
        nib_affine, fshape = _geometry_target(vol)
        qcode = int(hdr.get("qform_code", 0) or 1)
        scode = int(hdr.get("sform_code", 0) or 1)
        qparams = None
    data = np.asarray(vol.data)
    dtype = _file_dtype(data, vol.is_labels, path)
    if data.size and np.issubdtype(dtype, np.integer) and not np.issubdtype(data.dtype,
                                                                           np.integer):
        data = np.rint(data)
    arr = np.ascontiguousarray(data.T).astype(dtype, copy=False).reshape(fshape)

    img = nib.Nifti1Image(arr, nib_affine, dtype=dtype)
    img.set_qform(nib_affine, code=qcode)
    img.set_sform(nib_affine, code=scode)
    h = img.header
    if qparams:
        for k in QFORM_FIELDS:
            h[k] = qparams[k]
        pixdim = np.array(h["pixdim"])
        src = np.asarray(qparams["pixdim"], dtype=float)
        pixdim[:4] = src[:4]
        h["pixdim"] = pixdim
    h.set_xyzt_units("mm")
    h["descrip"] = b"napari-attnseg"
    if vol.is_labels:
        h.set_intent("label")  # NIFTI_INTENT_LABEL: readers know it is a label map
    tmp_img = unit.temp(path)
    nib.save(img, str(tmp_img))
    _verify(tmp_img, path, arr, nib_affine, qcode, scode)
    sidecar = _sidecar(vol, path, reference, provenance, nib_affine, qcode, scode, arr)
    return {"path": path, "vol": vol, "provenance": provenance, "sidecar": sidecar,
            "sha256": _sha256(tmp_img), "shape": arr.shape, "dtype": arr.dtype}


def write_volumes(items: Sequence[Item]) -> list[Path]:
    """Write several volumes (e.g. a mask and its probabilities) as one unit, all or nothing.

    Each is written as :func:`write_volume` describes, to temporary files that are verified and
    then committed together (:class:`napari_attnseg.io.atomic.Unit`): a failure or a kill at any
    moment leaves either every old file (with its old sidecar) or every new one. Each sidecar
    lists the whole unit (``written_together``: the unit token and each file's sha256), so a
    pair can be checked. Interrupted units in the destination folders are finished first."""
    from .atomic import Unit, recover_folder

    items = [(v, Path(p), r, prov) for v, p, r, prov in items]
    targets: dict[Path, Path] = {}
    for _, p, _, _ in items:
        for t in (p, sidecar_path(p)):
            key = Path(os.path.abspath(t))
            if key in targets:
                raise WriteError(p, f"is written twice in one unit (clashes with "
                                    f"{targets[key]}); give each output its own name")
            targets[key] = p
    for folder in dict.fromkeys(p.parent if str(p.parent) else Path(".") for _, p, _, _ in items):
        recover_folder(folder)
    unit = Unit()
    path = items[0][1] if items else Path(".")
    try:
        staged = []
        for vol, path, ref, prov in items:
            staged.append(_stage(vol, path, ref, prov, unit))
        together = {"unit": unit.token,
                    "files": [{"file": s["path"].name, "path": os.path.abspath(s["path"]),
                               "sha256": s["sha256"]} for s in staged]}
        for s in staged:
            path = s["path"]
            s["sidecar"]["written_together"] = together
            tmp_json = unit.temp(sidecar_path(path))
            tmp_json.write_text(json.dumps(s["sidecar"], indent=2, default=_jsonable))
        unit.commit()
    except OSError as exc:
        unit.abort()
        raise WriteError(path, f"could not be written ({exc})") from exc
    except BaseException:
        unit.abort()
        raise
    for s in staged:
        try:
            _write_label_tables(s["vol"], s["path"], s["provenance"])
        except OSError as exc:
            raise WriteError(s["path"], f"label tables could not be written ({exc})") from exc
        log.info("wrote %s (%s, %s)", s["path"], s["shape"], s["dtype"])
    return [s["path"] for s in staged]


def write_volume(volume: Volume, path: str | Path, *, reference: Volume | None = None,
                 provenance: Mapping[str, Any] | None = None) -> Path:
    """Write ``volume`` as .nii / .nii.gz atomically, verified, with a ``<name>.json`` sidecar.

    Geometry: the source file's own affine (``header["nifti_affine"]``, with its qform/sform
    codes and raw qform fields) when it fits the volume's shape and geometry, else the affine of
    the Volume geometry. ``reference`` (same shape) lends its header and, when ``volume`` has
    the default geometry (1 mm, origin 0, identity), its geometry. Labels are stored in the
    smallest unsigned integer type (with the NIfTI label intent). The file and its sidecar are
    written to temporary names in the same folder, the file re-read and compared (shape,
    affine, codes, voxels), and both committed as one unit (:func:`write_volumes`): a failure
    or a kill leaves the old file and sidecar, or the new ones. Returns the path written.
    """
    return write_volumes([(volume, path, reference, provenance)])[0]


def _verify(tmp: Path, path: Path, arr: np.ndarray, affine: np.ndarray, qcode: int,
            scode: int) -> None:
    import nibabel as nib

    back = nib.load(str(tmp), mmap=False)
    if tuple(back.shape) != tuple(arr.shape):
        raise WriteError(path, f"verification failed: shape {back.shape} re-read, "
                               f"{arr.shape} written")
    if not np.allclose(back.affine, affine, rtol=1e-6, atol=1e-5):
        raise WriteError(path, f"verification failed: affine re-read\n{back.affine}\n"
                               f"differs from the intended\n{affine}")
    if int(back.header["qform_code"]) != qcode or int(back.header["sform_code"]) != scode:
        raise WriteError(path, "verification failed: qform/sform codes changed")
    if not np.array_equal(np.asanyarray(back.dataobj), arr):
        raise WriteError(path, "verification failed: voxel values re-read differ")


def _sidecar(vol: Volume, path: Path, reference: Volume | None,
             provenance: Mapping[str, Any] | None, affine: np.ndarray, qcode: int, scode: int,
             arr: np.ndarray) -> dict[str, Any]:
    from .. import __version__

    hdr = vol.header or {}
    meta = dict(vol.metadata)
    if provenance:
        meta.update(provenance)
    keep = ("format", "modality", "series_uid", "series_description", "orientation",
            "rescale", "split_4d", "nrrd_space")
    out: dict[str, Any] = {
        "file": path.name,
        "written_by": f"napari-attnseg {__version__}",
        "source": vol.source,
        "reference": None if reference is None else reference.source,
        "is_labels": bool(vol.is_labels),
        "dtype": str(arr.dtype),
        "geometry": vol.geometry_summary(),
        "nifti_affine": np.asarray(affine).tolist(),
        "qform_code": qcode,
        "sform_code": scode,
        "source_header": {k: hdr[k] for k in keep if k in hdr},
        "provenance": meta,
    }
    if vol.is_labels and np.issubdtype(arr.dtype, np.integer):
        from .labeltable import sidecar_label_rows

        out["labels"] = sidecar_label_rows(_label_table(np.asarray(vol.data), vol.spacing), meta)
    return out


def _write_label_tables(vol: Volume, path: Path, provenance: Mapping[str, Any] | None) -> None:
    """A Slicer .ctbl and an ITK-SNAP label file beside a label mask whose names are known."""
    meta = {**dict(vol.metadata), **dict(provenance or {})}
    if not vol.is_labels or not (meta.get("label_names") or meta.get("label_colors")):
        return
    from .labeltable import labels_from_metadata, present_values, write_label_tables

    write_label_tables(path, labels_from_metadata(meta, present_values(vol.data)))
