"""Reading scans (NIfTI, DICOM, NRRD, 2D images) into :class:`~napari_attnseg.volume.Volume`
and writing results as NIfTI with the source geometry.

Importing this package is cheap: nibabel, pydicom, pynrrd and imageio load on first use.

Public API
----------
read_volume(path, series_uid=None, *, split_4d=None, pixel_size_mm=None, modality=None) -> Volume
    (the modality, when not given, is detected: see :mod:`napari_attnseg.io.modality`)
list_series(path) -> list[SeriesInfo]
write_volume(volume, path, *, reference=None, provenance=None) -> Path
can_read(path) -> bool, detect_format(path) -> str | None
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from ..errors import ReadError
from ..volume import MODALITIES, Volume
from .series import SeriesInfo

__all__ = ["SeriesInfo", "can_read", "detect_format", "list_series", "read_volume",
           "write_volume"]

log = logging.getLogger(__name__)

FORMATS = ("nifti", "dicom", "nrrd", "metaimage", "image")


def _sniff(path: Path) -> str | None:
    """Format from the first bytes of a file without a known suffix."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(352)
    except OSError:
        return None
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"NRRD"):
        return "nrrd"
    if len(head) >= 348 and head[344:348] in (b"n+1\0", b"ni1\0") or head[4:8] in (b"n+2\0",):
        return "nifti"
    return None


def detect_format(path: str | Path) -> str | None:
    """"nifti", "dicom", "nrrd", "image" or None, from the name (and magic bytes for files
    without a known suffix). Cheap; never raises."""
    from .dicom import is_dicom
    from .image2d import is_image2d
    from .nifti import is_nifti
    from .nrrd import is_nrrd

    try:
        p = Path(path)
        if is_nifti(p):
            return "nifti"
        if is_nrrd(p):
            return "nrrd"
        if str(p).lower().endswith((".mha", ".mhd")):
            return "metaimage"
        if is_image2d(p):
            return "image"
        if p.is_dir():
            return "dicom" if is_dicom(p) else None
        if p.is_file():
            return "dicom" if is_dicom(p) else _sniff(p)
        return None
    except (OSError, ValueError, TypeError):
        return None


def can_read(path: str | Path) -> bool:
    """True when :func:`read_volume` will try ``path`` (a cheap guess; never raises)."""
    try:
        p = Path(path)
        return (p.is_file() or p.is_dir()) and detect_format(p) is not None
    except (OSError, ValueError, TypeError):
        return False


def read_volume(path: str | Path, series_uid: str | None = None, *,
                split_4d: int | None = None, pixel_size_mm: float | None = None,
                modality: str | None = None) -> Volume:
    """Read a scan or mask as a (z, y, x) / (y, x) :class:`Volume` with its geometry.

    Parameters
    ----------
    path : file or folder: .nii/.nii.gz, .nrrd/.nhdr, a DICOM file or folder (recursive),
        .png/.jpg/.tif.
    series_uid : DICOM series to read from a folder holding several (default: the one with most
        slices, with a warning naming the others); see :func:`list_series`.
    split_4d : index of the volume to take from a 4D file (4D files without it raise ReadError).
    pixel_size_mm : pixel size of plain 2D images (default 1.0 mm, with a warning).
    modality : override the modality ("CT", "MR", "US", ""); by default it is detected from
        what the file says (:func:`napari_attnseg.io.modality.detect_modality`).

    Raises ReadError (naming the file) for anything that cannot be read faithfully.
    A DICOMweb series URL (``http://HOST:PORT/dicom-web/studies/S/series/X``) is retrieved into
    the local cache first (:mod:`.dicomweb`).
    """
    if isinstance(path, str) and path.lower().startswith(("http://", "https://")):
        from .dicomweb import local_path

        path = local_path(path)
    p = Path(path)
    if not p.exists():
        raise ReadError(p, "file or folder does not exist")
    fmt = detect_format(p)
    if fmt is None and p.is_dir():
        raise ReadError(p, "no DICOM files found in this folder (nor NIfTI/NRRD files: open "
                           "those by file name)")
    if fmt is None:
        raise ReadError(p, "unsupported format: expected NIfTI (.nii, .nii.gz), NRRD (.nrrd), "
                           "DICOM (file or folder) or a 2D image (.png, .jpg, .tif)")
    if fmt == "nifti":
        from .atomic import recover_folder

        recover_folder(p.parent)  # finish (or undo) a multi-file write a kill interrupted
    if fmt == "dicom":
        if split_4d is not None:
            raise ReadError(p, "split_4d applies to 4D NIfTI/NRRD files, not DICOM")
        from .dicom import read_dicom
        from .dicom_seg import is_dicom_seg, read_dicom_seg
        from .rtstruct import is_rtstruct, read_rtstruct

        # a SEG / RTSTRUCT file: labels on its referenced series' grid (never stacked as images)
        vol = (read_dicom_seg(p) if is_dicom_seg(p) else read_rtstruct(p) if is_rtstruct(p)
               else read_dicom(p, series_uid))
    else:
        if series_uid is not None and series_uid not in (p.name, str(p)):
            raise ReadError(p, f"series_uid={series_uid!r} given but this {fmt} file holds one "
                               f"series ({p.name})")
        if fmt == "nifti":
            from .nifti import read_nifti

            vol = read_nifti(p, split_4d=split_4d)
        elif fmt == "nrrd":
            from .nrrd import read_nrrd
            from .seg_nrrd import is_seg_nrrd, read_seg_nrrd

            vol = read_seg_nrrd(p) if is_seg_nrrd(p) else read_nrrd(p, split_4d=split_4d)
        elif fmt == "metaimage":
            if split_4d is not None:
                raise ReadError(p, "split_4d applies to 4D NIfTI/NRRD files, not MetaImage")
            from .metaimage import read_metaimage

            vol = read_metaimage(p)
        else:
            if split_4d is not None:
                raise ReadError(p, "split_4d applies to 4D NIfTI/NRRD files, not 2D images")
            from .image2d import read_image2d

            vol = read_image2d(p, pixel_size_mm=pixel_size_mm)
    from .validate import check_volume

    check_volume(vol, p)  # the one gate: finite, non-singular geometry, real-valued voxels
    if vol.is_labels and fmt != "dicom":
        from .labeltable import with_label_info

        vol = with_label_info(vol, p)  # names/colours from the sidecar or a label table beside
    if modality is not None:
        if modality not in MODALITIES:
            from .._options import choose

            modality = choose(modality, [m for m in MODALITIES if m], "modality")
        vol = replace(vol, modality=modality,
                      header={**vol.header, "modality_source": "set by the user"})
    elif not vol.is_labels:
        vol = with_detected_modality(vol, p)
    return vol


def with_detected_modality(vol: Volume, path: str | Path | None = None) -> Volume:
    """``vol`` with the modality and anatomy its file states (see :mod:`.modality`), recorded in
    ``modality`` and ``header["modality_source" / "anatomy" / "anatomy_source"]``."""
    from .modality import detect_modality

    guess = detect_modality(vol, path)
    header = dict(vol.header)
    if guess.modality:
        header["modality_source"] = guess.source
    if guess.anatomy:
        header.update(anatomy=guess.anatomy, anatomy_source=guess.anatomy_source)
    return replace(vol, modality=guess.modality, header=header)


def list_series(path: str | Path) -> list[SeriesInfo]:
    """The series a file or folder holds (DICOM: one per SeriesInstanceUID, most slices first;
    NIfTI / NRRD / images: one entry whose uid is the file name). Headers only where possible."""
    p = Path(path)
    if not p.exists():
        raise ReadError(p, "file or folder does not exist")
    fmt = detect_format(p)
    if fmt is None:
        raise ReadError(p, "unsupported format")
    if fmt == "dicom":
        from .dicom import list_dicom_series
        from .dicom_seg import is_dicom_seg, seg_series_info
        from .rtstruct import is_rtstruct, rtstruct_series_info

        if is_rtstruct(p):
            return [rtstruct_series_info(p)]
        return [seg_series_info(p)] if is_dicom_seg(p) else list_dicom_series(p)
    if fmt == "nifti":
        return [_nifti_info(p)]
    vol = read_volume(p)
    return [SeriesInfo(uid=p.name, modality=vol.modality, description=p.name,
                       n_slices=vol.shape[0] if vol.ndim == 3 else 1, shape=vol.shape,
                       spacing=vol.spacing, files=(str(p),))]


def _nifti_info(p: Path) -> SeriesInfo:
    import numpy as np

    from ._common import squeeze_trailing
    from .nifti import _load, inspect_nifti

    inspect_nifti(p, verify_data=False)  # header checks only: the table lists, Open reads
    img = _load(p)
    shape = squeeze_trailing(img.shape, 2)
    spatial = shape[:3]
    norms = np.linalg.norm(np.asarray(img.affine)[:3, : len(spatial)], axis=0)
    desc = p.name if len(shape) <= 3 else f"{p.name} (4D: {shape[3]} volumes)"
    return SeriesInfo(uid=p.name, modality="", description=desc,
                      n_slices=spatial[2] if len(spatial) == 3 else 1,
                      shape=tuple(reversed(spatial)),
                      spacing=tuple(float(s) for s in norms[::-1]), files=(str(p),))


def write_volume(volume: Volume, path: str | Path, *, reference: Volume | None = None,
                 provenance: dict | None = None) -> Path:
    """Write ``volume`` as .nii/.nii.gz atomically and verified, with a JSON sidecar
    (see :func:`napari_attnseg.io.writers.write_volume`); ``*.seg.nrrd``, ``*.rtstruct.dcm`` and
    ``*.dcm`` names write a 3D Slicer segmentation / RTSTRUCT / DICOM-SEG instead
    (:mod:`.formats_out`)."""
    from .formats_out import special_writer

    special = special_writer(path)
    if special is not None:
        return special(volume, path, reference=reference, provenance=provenance)
    from .writers import write_volume as _write

    return _write(volume, path, reference=reference, provenance=provenance)
