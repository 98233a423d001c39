"""DICOM-SEG in and out with highdicom (the optional extra ``dicom``).

Writing (:func:`write_dicom_seg`): a label volume on a DICOM series' grid (read from single-frame
DICOM files: its header lists their SOPInstanceUIDs and paths in slice order) becomes a binary
DICOM-SEG that references those instances, one segment per label present, named and coloured
from the model's label names (``label_names`` / ``label_colors`` in its metadata or provenance;
the label value is kept as the segment's TrackingID ``"label N"``, so label values survive a
round trip even when not consecutive). Type-2 attributes the source files lack (patient sex,
birth date, referring physician, ...) are given empty values, as the standard allows. Written to
a temporary file, read back and compared voxel for voxel, then renamed; a JSON sidecar beside.

Reading (:func:`read_dicom_seg_layers`): the SEG is placed on its referenced series' grid (the
series is looked for in the SEG's folder, then in the folders beside it); overlapping segments
go to separate layers. Without the referenced series the SEG's own frame geometry is used, with
a warning.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingDependencyError, ReadError, WriteError
from ..volume import Volume, volume_from_affine
from .dicom import LPS_TO_SAR, SEG_SOP_CLASSES, dicom_header_tags, has_dicom_magic
from .labeltable import (Label, default_color, labels_from_metadata, mask_stem,
                         metadata_from_labels, present_values, sidecar_label_rows)

log = logging.getLogger(__name__)

#: Type-2 attributes highdicom copies from the source (patient, study, series modules).
TYPE2_DEFAULTS = {"PatientName": "", "PatientID": "", "PatientBirthDate": "", "PatientSex": "",
                  "StudyDate": "", "StudyTime": "", "ReferringPhysicianName": "", "StudyID": "",
                  "AccessionNumber": ""}
_TRACKING = re.compile(r"^label (\d+)$")
_MAX_SIBLINGS = 64


def _highdicom():
    try:
        import highdicom
    except ImportError as exc:
        raise MissingDependencyError("highdicom", extra="dicom", purpose="DICOM-SEG") from exc
    return highdicom


def is_dicom_seg(path: str | Path) -> bool:
    """True for a DICOM file whose SOP class is a segmentation (header only; never raises)."""
    ds = dicom_header_tags(path, ["SOPClassUID"])
    return ds is not None and str(ds.get("SOPClassUID", "")) in SEG_SOP_CLASSES


# ---------------------------------------------------------------------- writing
def _source_header(volume: Volume, reference: Volume | None, path: Path) -> Mapping[str, Any]:
    for hdr in (volume.header, None if reference is None else reference.header):
        if hdr and hdr.get("sop_instance_uids") and hdr.get("frame_files"):
            return hdr
    raise WriteError(path, "a DICOM-SEG references the DICOM images it segments, but this result "
                           f"does not come from a single-frame DICOM series (source: "
                           f"{volume.source}); save it as .nii.gz or .seg.nrrd instead")


def _source_datasets(hdr: Mapping[str, Any], path: Path) -> list[Any]:
    import pydicom

    out = []
    for f, uid in zip(hdr["frame_files"], hdr["sop_instance_uids"]):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            raise WriteError(path, f"the source DICOM file {f} cannot be read any more ({exc}); "
                                   "the SEG must reference the series it was computed on") from exc
        if str(ds.get("SOPInstanceUID", "")) != uid:
            raise WriteError(path, f"the source file {f} changed (SOPInstanceUID {ds.get('SOPInstanceUID')} "
                                   f"instead of {uid})")
        for key, value in TYPE2_DEFAULTS.items():
            if key not in ds or ds.get(key) is None:
                setattr(ds, key, value)
        out.append(ds)
    return out


def _descriptions(hd: Any, labels: list[Label], meta: Mapping[str, Any]) -> list[Any]:
    from highdicom.sr.coding import CodedConcept  # noqa: F401  (import check for older versions)
    from pydicom.sr.codedict import codes

    model = str(meta.get("model_id") or meta.get("model_name") or "napari-attnseg")
    algo = hd.AlgorithmIdentificationSequence(
        name=model[:64], family=codes.DCM.ArtificialIntelligence,
        version=str(meta.get("model_version") or meta.get("attnseg_version") or "1")[:64])
    out = []
    for number, lb in enumerate(labels, start=1):
        out.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=lb.name[:64],
            segmented_property_category=codes.SCT.Tissue, segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo, tracking_uid=hd.UID(), tracking_id=f"label {lb.value}",
            display_color=hd.color.CIELabColor.from_rgb(*lb.color)))
    return out


def build_segmentation(volume: Volume, *, reference: Volume | None = None,
                       provenance: Mapping[str, Any] | None = None, path: Path | None = None) -> Any:
    """The highdicom Segmentation for a label volume on a DICOM series' grid."""
    hd = _highdicom()
    from .. import __version__

    path = path or Path("result.dcm")
    hdr = _source_header(volume, reference, path)
    data = np.asarray(volume.data)
    frames = data[None] if data.ndim == 2 else data
    n = len(hdr["sop_instance_uids"])
    if frames.shape[0] != n:
        raise WriteError(path, f"the result has {frames.shape[0]} slices but its DICOM series "
                               f"{n}; a DICOM-SEG must cover the series it references")
    if frames.size and (frames.dtype.kind not in "iub" or int(frames.min()) < 0):
        raise WriteError(path, "a DICOM-SEG needs non-negative integer labels")
    meta = {**dict(volume.metadata), **dict(provenance or {})}
    present = present_values(frames)
    labels = [lb for lb in labels_from_metadata(meta, present) if lb.value in present]
    if not labels:  # an empty result is still a valid answer: one named, empty segment
        named = labels_from_metadata(meta)
        labels = named[:1] or [Label(1, "label 1", default_color(1))]
    numbers = np.zeros(max(int(frames.max()) if frames.size else 0, labels[-1].value) + 1,
                       dtype=np.uint16)
    for i, lb in enumerate(labels, start=1):
        numbers[lb.value] = i
    pixel = numbers[frames.astype(np.int64)].astype(np.uint8 if len(labels) < 256 else np.uint16)
    sources = _source_datasets(hdr, path)
    model = str(meta.get("model_name") or "napari-attnseg")
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=pixel,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_descriptions(hd, labels, meta),
        series_instance_uid=hd.UID(), series_number=int(meta.get("series_number", 300) or 300),
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="napari-attnseg",
        manufacturer_model_name=model[:64], software_versions=__version__,
        device_serial_number="0", series_description=f"attnseg {model}"[:64],
        content_label="ATTNSEG", content_description=f"segmentation by {model}"[:64],
        omit_empty_frames=len(present) > 0)


@contextlib.contextmanager
def staged_dicom_write(path: Path) -> Iterator[tuple[Path, Path]]:
    """``(tmp, side_tmp)``: hidden files beside ``path`` and its ``.json`` sidecar to write and
    verify; both are moved into place together when the block ends without an error, and
    whatever is left is removed (an ``OSError`` becomes a :class:`WriteError` naming ``path``)."""
    folder = path.parent if str(path.parent) else Path(".")
    side = path.with_name(mask_stem(path) + ".json")
    side_tmp = side.with_name(f".{side.name}.tmp")
    tmp = None
    try:
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{mask_stem(path)}.", suffix=".dcm")
        os.close(fd)
        tmp = Path(tmp_name)
        yield tmp, side_tmp
        os.replace(tmp, path)
        os.replace(side_tmp, side)
    except OSError as exc:
        raise WriteError(path, f"could not be written ({exc})") from exc
    finally:
        for p in (tmp, side_tmp):
            if p is not None and p.exists():
                p.unlink()


def dicom_result_sidecar(path: Path, fmt: str, ds: Any, hdr: Mapping[str, Any], volume: Volume,
                         written: np.ndarray, provenance: Mapping[str, Any] | None,
                         **extra: Any) -> dict[str, Any]:
    """The JSON sidecar of a DICOM result object (SEG, RTSTRUCT) written for ``volume``: its
    UIDs, the series it references, provenance and one row per label present in ``written``."""
    from .. import __version__

    meta = {**dict(volume.metadata), **dict(provenance or {})}
    rows = [{"label": v, "voxels": int(np.count_nonzero(written == v))} for v in present_values(written)]
    return {
        "file": path.name, "written_by": f"napari-attnseg {__version__}", "format": fmt,
        "sop_instance_uid": str(ds.SOPInstanceUID), "series_instance_uid": str(ds.SeriesInstanceUID),
        "referenced_series_uid": hdr.get("series_uid"), "source": volume.source,
        "provenance": meta, "labels": sidecar_label_rows(rows, meta), **extra,
    }


def write_dicom_seg(volume: Volume, path: str | Path, *, reference: Volume | None = None,
                    provenance: Mapping[str, Any] | None = None) -> Path:
    """Write ``volume`` as a DICOM-SEG referencing its source series (see the module doc)."""
    hd = _highdicom()
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise WriteError(path, f"folder {folder} does not exist")
    seg = build_segmentation(volume, reference=reference, provenance=provenance, path=path)
    hdr = _source_header(volume, reference, path)
    with staged_dicom_write(path) as (tmp, side_tmp):
        seg.save_as(str(tmp))
        back = hd.seg.segread(str(tmp))
        got = _label_map(back, list(hdr["sop_instance_uids"]))
        want = np.asarray(volume.data)
        want = want[None] if want.ndim == 2 else want
        if not np.array_equal(got, want):
            raise WriteError(path, "verification failed: the SEG read back differs from the result")
        side_tmp.write_text(json.dumps(dicom_result_sidecar(
            path, "dicom-seg", seg, hdr, volume, want, provenance), indent=2, default=str))
    log.info("wrote DICOM-SEG %s (%d segments)", path, len(seg.SegmentSequence))
    return path


# ---------------------------------------------------------------------- reading
def _value_of(desc: Any) -> int:
    m = _TRACKING.match(str(desc.get("TrackingID", "") or ""))
    return int(m.group(1)) if m else int(desc.SegmentNumber)


def _segment_labels(seg: Any) -> dict[int, Label]:
    """Segment number -> Label (value from the TrackingID, name, colour)."""
    hd = _highdicom()
    out = {}
    for desc in seg.SegmentSequence:
        number = int(desc.SegmentNumber)
        value = _value_of(desc)
        rgb = default_color(value)
        lab = desc.get("RecommendedDisplayCIELabValue")
        if lab is not None:
            rgb = hd.color.CIELabColor.from_dicom_value([int(v) for v in lab]).to_rgb(clip=True)
        out[number] = Label(value, str(desc.get("SegmentLabel", "") or f"segment {number}"),
                            tuple(int(c) for c in rgb))
    values = [lb.value for lb in out.values()]
    if len(set(values)) != len(values):  # TrackingIDs not ours: number the segments
        out = {n: replace(lb, value=n) for n, lb in out.items()}
    return out


def _masks(seg: Any, uids: list[str]) -> np.ndarray:
    return np.asarray(seg.get_pixels_by_source_instance(
        uids, assert_missing_frames_are_empty=True, skip_overlap_checks=True), dtype=bool)


def _label_map(seg: Any, uids: list[str]) -> np.ndarray:
    """One label map (values from the TrackingIDs), for the round-trip check."""
    masks = _masks(seg, uids)
    labels = _segment_labels(seg)
    out = np.zeros(masks.shape[:3], dtype=np.uint16)
    for i, number in enumerate(seg.segment_numbers):
        out[masks[..., i]] = labels[number].value
    return out


def _layers(masks: np.ndarray, numbers: list[int], labels: dict[int, Label]
            ) -> list[tuple[np.ndarray, list[Label]]]:
    """Segments packed into as few non-overlapping label maps as possible (as Slicer does)."""
    layers: list[tuple[np.ndarray, list[Label]]] = []
    top = max([lb.value for lb in labels.values()], default=1)
    dtype = np.uint8 if top < 256 else np.uint16
    for i, number in enumerate(numbers):
        m = masks[..., i]
        for arr, labs in layers:
            if not np.any(arr[m]):
                arr[m] = labels[number].value
                labs.append(labels[number])
                break
        else:
            arr = np.zeros(m.shape, dtype=dtype)
            arr[m] = labels[number].value
            layers.append((arr, [labels[number]]))
    return layers or [(np.zeros(masks.shape[:3], dtype=dtype), [])]


def _find_series(seg_path: Path, series_uid: str) -> Path | None:
    """The folder holding the referenced series: the SEG's folder, else a folder in it or
    beside it (each searched one level deep, at most 400 files each)."""
    import pydicom

    def holds(folder: Path, depth: int) -> bool:
        files = itertools.islice(folder.rglob("*") if depth else folder.iterdir(), 400)
        for f in files:
            if f.is_file() and f != seg_path and (f.suffix.lower() in (".dcm", ".ima")
                                                  or has_dicom_magic(f)):
                try:
                    ds = pydicom.dcmread(str(f), stop_before_pixels=True,
                                         specific_tags=["SeriesInstanceUID"])
                except Exception:  # not DICOM after all: keep looking
                    continue
                if str(ds.get("SeriesInstanceUID", "")) == series_uid:
                    return True
        return False

    here = seg_path.parent
    if holds(here, 0):
        return here
    below = [d for d in sorted(here.iterdir()) if d.is_dir()]
    beside = [d for d in sorted(here.parent.iterdir()) if d.is_dir() and d != here]
    for d in below[:_MAX_SIBLINGS] + beside[:_MAX_SIBLINGS]:
        if holds(d, 1):
            return d
    return None


def read_dicom_seg_layers(path: str | Path) -> list[Volume]:
    """The segments of a DICOM-SEG as label volumes on its referenced series' grid (one volume
    unless segments overlap), named and coloured from the segment descriptions."""
    hd = _highdicom()
    path = Path(path)
    try:
        seg = hd.seg.segread(str(path))
    except Exception as exc:  # pydicom / highdicom raise many types on a broken SEG
        raise ReadError(path, f"not a readable DICOM-SEG ({type(exc).__name__}: {exc})") from exc
    labels = _segment_labels(seg)
    numbers = list(seg.segment_numbers)
    refs = seg.get("ReferencedSeriesSequence") or []
    series_uid = str(refs[0].SeriesInstanceUID) if refs else ""
    folder = _find_series(path, series_uid) if series_uid else None
    warnings: tuple[str, ...] = ()
    if folder is not None:
        from .dicom import read_dicom

        source = read_dicom(folder, series_uid)
        uids = list(source.header.get("sop_instance_uids") or [])
        if not uids:
            raise ReadError(path, f"its series in {folder} is multi-frame; only SEGs of "
                                  "single-frame series are placed on their grid")
        masks = _masks(seg, uids)
        base = source
    else:
        vol = seg.get_volume(combine_segments=False)
        masks = np.asarray(vol.array, dtype=bool)
        aff = np.eye(4)
        aff[:3, :3] = LPS_TO_SAR @ np.asarray(vol.affine)[:3, :3]
        aff[:3, 3] = LPS_TO_SAR @ np.asarray(vol.affine)[:3, 3]
        base = volume_from_affine(np.zeros(masks.shape[:3], np.uint8), aff, source=str(path))
        warnings = (f"the series {series_uid or '?'} that {path.name} segments was not found "
                    "beside it; the SEG's own frame geometry is used",)
        log.warning(warnings[0])
    out = []
    for arr, labs in _layers(masks, numbers, labels):
        header = {**dict(base.header), "format": "dicom-seg", "seg_file": str(path),
                  "seg_series_uid": str(seg.SeriesInstanceUID)}
        vol = base.with_data(arr, is_labels=True)
        out.append(replace(vol, source=str(path), header=header, modality=base.modality,
                           metadata=metadata_from_labels(labs),
                           warnings=tuple(base.warnings) + warnings))
    return out


def read_dicom_seg(path: str | Path) -> Volume:
    """A DICOM-SEG as one label volume (overlapping segments: the later wins, with a warning)."""
    layers = read_dicom_seg_layers(path)
    if len(layers) == 1:
        return layers[0]
    data = np.zeros(layers[0].shape, dtype=np.uint16)
    covered = np.zeros(layers[0].shape, dtype=np.uint16)
    names: dict[str, str] = {}
    colours: dict[str, str] = {}
    for lay in layers:
        data = np.where(lay.data > 0, lay.data, data)
        covered += lay.data > 0
        names.update(lay.metadata["label_names"])
        colours.update(lay.metadata["label_colors"])
    n = int(np.count_nonzero(covered > 1))
    msg = (f"{Path(path).name} has overlapping segments ({n} voxels in several); they show the "
           "last one (napari opens one labels layer per layer)")
    log.warning(msg)
    return replace(layers[0], data=data.astype(np.uint8) if data.max() < 256 else data,
                   metadata={"label_names": names, "label_colors": colours},
                   warnings=layers[0].warnings + (msg,))


def seg_series_info(path: str | Path) -> Any:
    """A :class:`~napari_attnseg.io.series.SeriesInfo` for a SEG file (the Load widget's
    series table): its segments, on the grid it opens on."""
    from .series import SeriesInfo

    vol = read_dicom_seg(path)
    names = ", ".join((vol.metadata.get("label_names") or {}).values())
    return SeriesInfo(uid=str(vol.header.get("seg_series_uid", Path(path).name)), modality="SEG",
                      description=f"DICOM-SEG: {names}" if names else "DICOM-SEG",
                      n_slices=vol.shape[0] if vol.ndim == 3 else 1, shape=vol.shape,
                      spacing=vol.spacing, files=(str(path),))
