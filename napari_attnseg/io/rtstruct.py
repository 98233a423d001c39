"""DICOM RTSTRUCT out and in, with rt-utils (the optional extra ``rtstruct``).

Writing (:func:`write_rtstruct`, chosen by a ``*.rtstruct.dcm`` file name): a label volume on a
single-frame DICOM series' grid becomes an RT Structure Set that references that series, one ROI
per label present, named and coloured from the model's label names (``label_names`` /
``label_colors`` in its metadata or provenance); the label value is kept in the ROI description
(``"label N"``) so values survive a round trip. rt-utils traces each slice's outline with
OpenCV (outer contours and holes); it multiplies column indices by the first PixelSpacing value
(the row spacing), so it is handed the series headers with PixelSpacing swapped, which makes
the contours right for non-square pixels too. Contours are lossy: the file is read back before
it is renamed into place, the Dice and the number of changed voxels of each label are logged and
kept in the JSON sidecar, and a write whose read-back loses a label (Dice below 0.5) is refused.

Reading (:func:`read_rtstruct`): the referenced series (ReferencedSeriesInstanceUID) is looked
for in the RTSTRUCT's folder, then in the folders in and beside it; each closed planar contour
is mapped from patient coordinates to that series' voxel grid and filled (all contours of an ROI
on a slice at once, so holes stay holes); overlapping ROIs: the later ROI wins, with a warning
naming them. Without the series there is no grid: a clear error.
"""

from __future__ import annotations

import contextlib
import io as _io
import json
import logging
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingDependencyError, ReadError, WriteError
from ..volume import Volume
from .labeltable import (Label, default_color, labels_from_metadata, metadata_from_labels,
                         parse_color, present_values)

log = logging.getLogger(__name__)

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
#: the file name that selects this writer (before the DICOM-SEG's plain ``.dcm``)
SUFFIX = ".rtstruct.dcm"
_VALUE = re.compile(r"^label (\d+)$")
#: a label whose read-back Dice falls below this refuses the write; below WARN_DICE it warns
MIN_DICE, WARN_DICE = 0.5, 0.97


#: set by the Qt build of opencv-python (rt-utils' dependency) when cv2 is imported: its own Qt
#: plugins, which break napari (and every Qt program started from this process) on Linux
_CV2_QT_VARIABLES = ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_QPA_FONTDIR")


def _rt_utils() -> Any:
    saved = {k: os.environ.get(k) for k in _CV2_QT_VARIABLES}
    try:
        import cv2  # noqa: F401  (first, with the environment guarded)
        import rt_utils
        from rt_utils import ds_helper  # noqa: F401  (the builder helpers used below)
    except ImportError as exc:
        raise MissingDependencyError("rt-utils", extra="rtstruct", purpose="RTSTRUCT") from exc
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return rt_utils


def is_rtstruct(path: str | Path) -> bool:
    """True for a DICOM file whose SOP class is an RT Structure Set (header only; never raises)."""
    from .dicom import dicom_header_tags

    ds = dicom_header_tags(path, ["SOPClassUID", "Modality"])
    return ds is not None and (str(ds.get("SOPClassUID", "")) == RTSTRUCT_SOP_CLASS
                               or str(ds.get("Modality", "")).upper() == "RTSTRUCT")


# ---------------------------------------------------------------------- writing
def _source_header(volume: Volume, reference: Volume | None, path: Path) -> Mapping[str, Any]:
    for hdr in (volume.header, None if reference is None else reference.header):
        if hdr and hdr.get("sop_instance_uids") and hdr.get("frame_files"):
            return hdr
    raise WriteError(path, "an RTSTRUCT must reference the DICOM image series it contours, but "
                           "this result does not come from a single-frame DICOM series "
                           f"(source: {volume.source}); open the DICOM series and segment it, or "
                           "save this result as .nii.gz or .seg.nrrd instead")


def _frames(volume: Volume, hdr: Mapping[str, Any], path: Path) -> np.ndarray:
    data = np.asarray(volume.data)
    frames = data[None] if data.ndim == 2 else data
    n = len(hdr["sop_instance_uids"])
    if frames.shape[0] != n:
        raise WriteError(path, f"the result has {frames.shape[0]} slices but its DICOM series "
                               f"{n}; an RTSTRUCT must cover the series it references")
    if frames.size and (frames.dtype.kind not in "iub" or int(frames.min()) < 0):
        raise WriteError(path, "an RTSTRUCT needs non-negative integer labels")
    return frames


def _for_rt_utils(sources: list[Any]) -> list[Any]:
    """The headers as rt-utils reads them: it scales column indices by PixelSpacing[0]."""
    out = []
    for ds in sources:
        ds = ds.copy()
        ps = [float(v) for v in ds.PixelSpacing]
        ds.PixelSpacing = [ps[1], ps[0]]
        out.append(ds)
    return out


@contextlib.contextmanager
def _quiet_pydicom() -> Any:
    pd_log = logging.getLogger("pydicom")
    level = pd_log.level
    pd_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        pd_log.setLevel(level)


def build_rtstruct(volume: Volume, *, reference: Volume | None = None,
                   provenance: Mapping[str, Any] | None = None, path: Path | None = None
                   ) -> tuple[Any, list[Label], Mapping[str, Any]]:
    """The RTSTRUCT dataset for a label volume on a DICOM series' grid, its labels (ROI order)
    and the source header it references."""
    rt = _rt_utils()
    from rt_utils import ds_helper

    from .. import __version__
    from .dicom_seg import _source_datasets

    path = path or Path("result" + SUFFIX)
    hdr = _source_header(volume, reference, path)
    frames = _frames(volume, hdr, path)
    meta = {**dict(volume.metadata), **dict(provenance or {})}
    present = present_values(frames)
    labels = [lb for lb in labels_from_metadata(meta, present) if lb.value in present]
    if not labels:  # an empty result is still an answer: one named ROI without contours
        labels = labels_from_metadata(meta)[:1] or [Label(1, "label 1", default_color(1))]
    sources = _source_datasets(hdr, path)  # headers, type-2 attributes given empty values
    if any(str(ds.get("SeriesInstanceUID", "")) != str(sources[0].SeriesInstanceUID)
           for ds in sources):
        raise WriteError(path, "the result's source slices belong to several DICOM series")
    series = _for_rt_utils(sources)
    try:
        with _quiet_pydicom():  # rt-utils sets FileDataset.is_little_endian (deprecated)
            ds = ds_helper.create_rtstruct_dataset(series)
    except (AttributeError, KeyError, ValueError) as exc:
        raise WriteError(path, f"the source series lacks what an RTSTRUCT needs ({exc})") from exc
    model = str(meta.get("model_name") or meta.get("model_id") or "napari-attnseg")
    ds.Manufacturer, ds.ManufacturerModelName = "napari-attnseg", model[:64]
    ds.SoftwareVersions = __version__
    ds.InstitutionName = str(sources[0].get("InstitutionName", "") or "")
    ds.SeriesDescription = f"attnseg {model}"[:64]
    ds.StructureSetLabel = "ATTNSEG"
    ds.StructureSetName = f"segmentation by {model}"[:64]
    ds.SeriesNumber = int(meta.get("series_number", 301) or 301)
    ds.ReferringPhysicianName = str(sources[0].get("ReferringPhysicianName", "") or "")
    ds.OperatorsName = ""
    struct = rt.RTStruct(series, ds)
    for lb in labels:
        mask = np.moveaxis(frames == lb.value, 0, -1)  # rt-utils: (rows, cols, slices)
        with contextlib.redirect_stdout(_io.StringIO()):  # rt-utils prints about empty masks
            struct.add_roi(mask, color=list(lb.color), name=lb.name[:64],
                           description=f"label {lb.value}", roi_generation_algorithm=0)
    for obs in ds.RTROIObservationsSequence:
        obs.ROIObservationDescription = "napari-attnseg"
        obs.RTROIInterpretedType = "ORGAN"
    return ds, labels, hdr


def write_rtstruct(volume: Volume, path: str | Path, *, reference: Volume | None = None,
                   provenance: Mapping[str, Any] | None = None) -> Path:
    """Write ``volume`` as an RTSTRUCT referencing its source series (see the module doc)."""
    from .dicom_seg import dicom_result_sidecar, staged_dicom_write

    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise WriteError(path, f"folder {folder} does not exist")
    if volume.ndim != 3:
        raise WriteError(path, "an RTSTRUCT places contours by slice position; this single "
                               "2D image has none (save it as .nii.gz)")
    ds, labels, hdr = build_rtstruct(volume, reference=reference, provenance=provenance,
                                     path=path)
    if any(_same_file(path, f) for f in hdr["frame_files"]):
        raise WriteError(path, "is one of the source DICOM files; give the RTSTRUCT its own name")
    want = np.asarray(volume.data)
    with staged_dicom_write(path) as (tmp, side_tmp):
        ds.save_as(str(tmp), enforce_file_format=True)
        back, _, _ = _rasterize(_read_ds(tmp), volume, tmp)
        fidelity = round_trip_fidelity(want, back, labels)
        for row in fidelity:
            if row["voxels"] and row["dice"] < MIN_DICE:
                raise WriteError(path, f"verification failed: label {row['label']} "
                                       f"('{row['name']}') reads back with Dice {row['dice']:.3f}")
            if row["voxels"] and row["dice"] < WARN_DICE:
                log.warning("%s: label %s ('%s') reads back from its contours with Dice %.3f "
                            "(%d voxels changed)", path.name, row["label"], row["name"],
                            row["dice"], row["voxels_changed"])
        side_tmp.write_text(json.dumps(dicom_result_sidecar(
            path, "rtstruct", ds, hdr, volume, want, provenance, round_trip=fidelity),
            indent=2, default=str))
    log.info("wrote RTSTRUCT %s (%d ROIs)", path, len(labels))
    return path


def _same_file(a: Path, b: str | Path) -> bool:
    try:
        return a.exists() and os.path.samefile(a, b) or a.resolve() == Path(b).resolve()
    except OSError:
        return False


def round_trip_fidelity(want: np.ndarray, got: np.ndarray, labels: list[Label]
                        ) -> list[dict[str, Any]]:
    """Per label: voxels, Dice and voxels changed between a mask and its contours' read-back."""
    out = []
    for lb in labels:
        a, b = want == lb.value, got == lb.value
        na, nb, inter = int(a.sum()), int(b.sum()), int(np.count_nonzero(a & b))
        dice = 1.0 if na + nb == 0 else 2.0 * inter / (na + nb)
        out.append({"label": lb.value, "name": lb.name, "voxels": na, "dice": round(dice, 5),
                    "voxels_changed": int(np.count_nonzero(a ^ b))})
    return out


# ---------------------------------------------------------------------- reading
def _read_ds(path: Path) -> Any:
    import pydicom

    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:  # pydicom raises many types on a broken file
        raise ReadError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
    if str(ds.get("SOPClassUID", "")) != RTSTRUCT_SOP_CLASS and ds.get("Modality") != "RTSTRUCT":
        raise ReadError(path, "is not an RTSTRUCT (SOP class "
                              f"{ds.get('SOPClassUID', '?')})")
    if "StructureSetROISequence" not in ds:
        raise ReadError(path, "RTSTRUCT without a StructureSetROISequence (no ROIs)")
    return ds


def referenced_series_uid(ds: Any) -> str:
    """The SeriesInstanceUID of the image series an RTSTRUCT's contours are drawn on."""
    for ref in ds.get("ReferencedFrameOfReferenceSequence") or []:
        for study in ref.get("RTReferencedStudySequence") or []:
            for series in study.get("RTReferencedSeriesSequence") or []:
                if series.get("SeriesInstanceUID"):
                    return str(series.SeriesInstanceUID)
    return ""


def _roi_labels(ds: Any) -> list[tuple[int, Label]]:
    """(ROINumber, Label) in file order; values from our ``"label N"`` descriptions when every
    ROI has a distinct one, else 1, 2, ... in file order."""
    colours = {}
    for rc in ds.get("ROIContourSequence") or []:
        rgb = parse_color([int(c) for c in rc.get("ROIDisplayColor") or []] or None)
        colours[str(rc.get("ReferencedROINumber", ""))] = rgb
    rois = list(ds.StructureSetROISequence)
    values = []
    for roi in rois:
        m = _VALUE.match(str(roi.get("ROIDescription", "") or ""))
        values.append(int(m.group(1)) if m else None)
    if None in values or len(set(values)) != len(values) or 0 in values:
        values = list(range(1, len(rois) + 1))
    out = []
    for roi, value in zip(rois, values):
        number = int(roi.ROINumber)
        rgb = colours.get(str(number)) or default_color(value)
        out.append((number, Label(value, str(roi.get("ROIName", "") or f"ROI {number}"), rgb)))
    return out


def _rasterize(ds: Any, grid: Volume, path: Path) -> tuple[np.ndarray, list[Label], list[str]]:
    """The label map of the RTSTRUCT ``ds`` on ``grid`` (3D), its labels and warnings."""
    _rt_utils()
    import cv2

    from .dicom import LPS_TO_SAR

    shape = grid.shape
    inv = np.linalg.inv(grid.affine)
    labels = _roi_labels(ds)
    contours: dict[str, Any] = {str(rc.get("ReferencedROINumber", "")): rc
                                for rc in ds.get("ROIContourSequence") or []}
    top = max([lb.value for _, lb in labels], default=1)
    out = np.zeros(shape, dtype=np.uint8 if top < 256 else np.uint16)
    owner = np.full(shape, -1, dtype=np.int32)
    warnings: list[str] = []
    overlaps: dict[tuple[int, int], int] = {}
    skipped = 0
    for i, (number, lb) in enumerate(labels):
        per_slice: dict[int, list[np.ndarray]] = {}
        for c in (contours.get(str(number)) or {}).get("ContourSequence") or []:
            pts = np.asarray([float(v) for v in c.get("ContourData") or []]).reshape(-1, 3)
            if str(c.get("ContourGeometricType", "CLOSED_PLANAR")) != "CLOSED_PLANAR" \
                    or not len(pts):
                skipped += 1
                continue
            sar = pts @ LPS_TO_SAR.T
            idx = (np.c_[sar, np.ones(len(sar))] @ inv.T)[:, :3]  # (z, y, x) voxel indices
            z = float(np.mean(idx[:, 0]))
            k = int(round(z))
            if abs(z - k) > 0.25 or not 0 <= k < shape[0] or np.ptp(idx[:, 0]) > 0.5:
                skipped += 1
                continue
            per_slice.setdefault(k, []).append(np.round(idx[:, [2, 1]]).astype(np.int32))
        for k, polys in per_slice.items():
            m = np.zeros(shape[1:], np.uint8)
            cv2.fillPoly(m, polys, 1)
            m = m.astype(bool)
            for j in np.unique(owner[k][m]):
                if j >= 0 and j != i:
                    overlaps[(int(j), i)] = overlaps.get((int(j), i), 0) + int(
                        np.count_nonzero(owner[k][m] == j))
            out[k][m] = lb.value
            owner[k][m] = i
    if skipped:
        warnings.append(f"{skipped} contour(s) in {path.name} are not closed planar contours on "
                        "a slice of the series and were left out")
    for (a, b), n in overlaps.items():
        warnings.append(f"ROIs '{labels[a][1].name}' and '{labels[b][1].name}' overlap in {n} "
                        f"voxels; the later ROI ('{labels[b][1].name}') is shown there")
    for w in warnings:
        log.warning(w)
    return out, [lb for _, lb in labels], warnings


def read_rtstruct(path: str | Path) -> Volume:
    """An RTSTRUCT as one label volume on its referenced series' grid (see the module doc)."""
    from .dicom import read_dicom
    from .dicom_seg import _find_series

    path = Path(path)
    ds = _read_ds(path)
    series_uid = referenced_series_uid(ds)
    if not series_uid:
        raise ReadError(path, "the RTSTRUCT names no referenced image series "
                              "(RTReferencedSeriesSequence), so it has no grid to open on")
    folder = _find_series(path, series_uid)
    if folder is None:
        raise ReadError(path, f"the image series {series_uid} its contours are drawn on was not "
                              "found in its folder or beside it; an RTSTRUCT holds contours in "
                              "mm only: put it with (or beside) its series' folder")
    source = read_dicom(folder, series_uid)
    if source.ndim != 3:
        raise ReadError(path, f"its series in {folder} has no slice positions")
    data, labels, warnings = _rasterize(ds, source, path)
    header = {**dict(source.header), "format": "rtstruct", "rtstruct_file": str(path),
              "rtstruct_series_uid": str(ds.get("SeriesInstanceUID", ""))}
    vol = source.with_data(data, is_labels=True)
    return replace(vol, source=str(path), header=header, modality=source.modality,
                   metadata=metadata_from_labels(labels),
                   warnings=tuple(source.warnings) + tuple(warnings))


def rtstruct_series_info(path: str | Path) -> Any:
    """A :class:`~napari_attnseg.io.series.SeriesInfo` for an RTSTRUCT file (the Load widget's
    series table): its ROIs, on the grid it opens on."""
    from .series import SeriesInfo

    vol = read_rtstruct(path)
    names = ", ".join((vol.metadata.get("label_names") or {}).values())
    desc = f"RTSTRUCT: {names}" if names else "RTSTRUCT"
    return SeriesInfo(uid=str(vol.header.get("rtstruct_series_uid") or Path(path).name),
                      modality="RTSTRUCT", description=desc,
                      n_slices=vol.shape[0], shape=vol.shape, spacing=vol.spacing,
                      files=(str(path),))
