"""Write the small demo files in sample_data/ from the project's own phantoms.

    python scripts/make_sample_data.py [--out sample_data] [--check]

Files (deterministic: re-running gives the same bytes; gzip mtime is 0 in nibabel):

* ``ct_phantom.nii.gz`` / ``ct_phantom_labels.nii.gz`` - CT in HU (int16), labels 1 organ, 2 lesion
* ``mr_phantom.nii.gz`` / ``mr_phantom_labels.nii.gz`` - T1-like MR (int16 a.u.), 1 ventricles, 2 lesion
* ``us_cine.nii.gz`` / ``us_cine_labels.nii.gz`` - ultrasound cine, array (t, y, x); in the file the
  third NIfTI axis is time with a "spacing" of 1 (one frame)
* ``ct_dicom/`` - the central 24 slices of the CT phantom as a DICOM series (int16 stored values
  with RescaleSlope 1 / RescaleIntercept -1024, standard LPS orientation, shuffled file names and
  descending InstanceNumbers, so readers must sort by ImagePositionPatient)

``--check`` regenerates into a temporary folder and fails if any byte differs from ``--out``.
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_attnseg.sample import ct_phantom, mr_phantom, us_cine  # noqa: E402
from napari_attnseg.volume import Volume, nifti_affine_from_zyx  # noqa: E402

log = logging.getLogger("make_sample_data")

SEED = 0
DICOM_SLICES = 24
UID_ROOT = "1.2.826.0.1.3680043.10.1234."  # fixed prefix; UIDs derived from names (deterministic)


def _uid(name: str) -> str:
    digits = str(int(hashlib.sha256(name.encode()).hexdigest(), 16))
    return (UID_ROOT + digits)[:64]


def write_nifti(vol: Volume, path: Path, dtype: np.dtype, descrip: str) -> None:
    """Write ``vol`` exactly (affine from its geometry, qform = sform, code 1 scanner)."""
    import nibabel as nib
    from nibabel.openers import Opener

    data = np.asarray(vol.data).astype(dtype)
    img = nib.Nifti1Image(np.ascontiguousarray(data.T), nifti_affine_from_zyx(vol.affine))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = descrip.encode()[:79]
    level = Opener.default_compresslevel
    Opener.default_compresslevel = 9  # smaller files; still deterministic (mtime 0)
    try:
        img.to_filename(str(path))
    finally:
        Opener.default_compresslevel = level  # nibabel's global: leave it as found


def write_ct_dicom(image: Volume, folder: Path, n_slices: int = DICOM_SLICES) -> list[Path]:
    """The central ``n_slices`` of ``image`` as a CT DICOM series (shuffled file names)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    if not image.is_identity_direction:
        raise ValueError("write_ct_dicom expects an identity-direction (RAS) phantom")
    folder.mkdir(parents=True, exist_ok=True)
    nz, ny, nx = image.shape
    k0 = (nz - n_slices) // 2
    sz, sy, sx = image.spacing
    o_s, o_a, o_r = image.origin
    study, series, frame = _uid("study"), _uid("ct-series"), _uid("frame-of-reference")
    order = np.random.default_rng(7).permutation(n_slices) * 37 + 11
    names = [f"IM{int(v):04d}.dcm" for v in order]
    written = []
    for k in range(n_slices):
        hu = image.data[k0 + k, ::-1, ::-1]  # rows run posterior (+P), columns left (+L): LPS
        stored = (hu.astype(np.int32) + 1024).astype(np.int16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = _uid(f"ct-slice-{k}")
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = "CT"
        ds.Manufacturer = "napari-attnseg phantom"
        ds.PatientName = "Phantom^CT"
        ds.PatientID = "PHANTOM-CT-0"
        ds.StudyDate = ds.SeriesDate = "20240101"
        ds.StudyDescription = "Synthetic abdomen phantom"
        ds.SeriesDescription = "CT phantom (synthetic, seed 0)"
        ds.SeriesNumber = 2
        ds.InstanceNumber = n_slices - k  # descending with position: do not sort by it
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        # pixel (0, 0) of slice k is phantom voxel (k0 + k, ny - 1, nx - 1); LPS = (-R, -A, S)
        ds.ImagePositionPatient = [f"{-(o_r + (nx - 1) * sx):.6g}",
                                   f"{-(o_a + (ny - 1) * sy):.6g}",
                                   f"{o_s + (k0 + k) * sz:.6g}"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [f"{sy:.6g}", f"{sx:.6g}"]  # row spacing, column spacing
        ds.SliceThickness = f"{sz:.6g}"
        ds.SliceLocation = f"{o_s + (k0 + k) * sz:.6g}"
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelData = np.ascontiguousarray(stored).astype("<i2").tobytes()
        path = folder / names[k]
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return written


def make(out: Path) -> list[Path]:
    """Generate every sample file under ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    ct, ct_lab = ct_phantom(SEED)
    write_nifti(ct, out / "ct_phantom.nii.gz", np.int16, "CT phantom, HU, seed 0")
    write_nifti(ct_lab, out / "ct_phantom_labels.nii.gz", np.uint8, "labels: 1 organ, 2 lesion")
    mr, mr_lab = mr_phantom(SEED)
    mr_int = mr.with_data(np.clip(np.round(mr.data), 0, 32767).astype(np.int16))
    write_nifti(mr_int, out / "mr_phantom.nii.gz", np.int16, "T1-like MR phantom, seed 0")
    write_nifti(mr_lab, out / "mr_phantom_labels.nii.gz", np.uint8,
                "labels: 1 ventricles, 2 lesion")
    us, us_lab = us_cine(SEED)
    write_nifti(us, out / "us_cine.nii.gz", np.uint8, "US cine: axis 3 (k) is time, 1 per frame")
    write_nifti(us_lab, out / "us_cine_labels.nii.gz", np.uint8, "labels: 1 head; k is time")
    files += [out / n for n in ("ct_phantom.nii.gz", "ct_phantom_labels.nii.gz",
                                "mr_phantom.nii.gz", "mr_phantom_labels.nii.gz",
                                "us_cine.nii.gz", "us_cine_labels.nii.gz")]
    files += write_ct_dicom(ct, out / "ct_dicom")
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "sample_data")
    parser.add_argument("--check", action="store_true",
                        help="regenerate in a temporary folder and compare bytes with --out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            files = make(Path(tmp))
            bad = [p.relative_to(tmp) for p in files
                   if not (args.out / p.relative_to(tmp)).is_file()
                   or not filecmp.cmp(p, args.out / p.relative_to(tmp), shallow=False)]
        if bad:
            log.error("differs from %s: %s", args.out, ", ".join(map(str, bad)))
            return 1
        log.info("all %d files in %s are up to date", len(files), args.out)
        return 0
    files = make(args.out)
    total = sum(p.stat().st_size for p in files)
    log.info("wrote %d files, %.2f MB, to %s", len(files), total / 1e6, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
