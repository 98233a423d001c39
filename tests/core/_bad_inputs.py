"""Builders of bad input files and the classifier of what the package did with them.

Result classes (as the reliability table of issue 12 counts them): ``error`` (an AttnsegError /
exit code 2 with one line naming the file), ``warning`` (correct, with a warning), ``correct``,
and the failures ``silent-wrong``, ``data-loss``, ``traceback``, ``unclear``, ``hang``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io as _io
import os
import struct
import threading
from pathlib import Path

import nibabel as nib
import numpy as np

#: NIfTI-1 header field offsets (little-endian files as nibabel writes them)
OFF = {"dim": 40, "intent_code": 68, "datatype": 70, "bitpix": 72, "pixdim": 76,
       "qform_code": 252, "sform_code": 254, "quatern_b": 256, "srow_x": 280, "srow_y": 296,
       "srow_z": 312}
RNG = np.random.default_rng(12)


# ---------------------------------------------------------------------- NIfTI
def nifti_raw(arr: np.ndarray, affine=None, qform=1, sform=1) -> bytearray:
    img = nib.Nifti1Image(arr, np.eye(4) if affine is None else affine)
    img.set_qform(img.affine, code=qform)
    img.set_sform(img.affine, code=sform)
    return bytearray(img.to_bytes())


def put(raw: bytearray, field: str, fmt: str, *values, index: int = 0) -> bytearray:
    size = struct.calcsize("<" + fmt[-1])
    struct.pack_into("<" + fmt, raw, OFF[field] + index * size, *values)
    return raw


def save_raw(folder: Path, name: str, raw: bytes) -> Path:
    p = folder / name
    p.write_bytes(gzip.compress(bytes(raw)) if name.endswith(".gz") else bytes(raw))
    return p


def ct_like(shape=(40, 36, 12)) -> np.ndarray:
    """A smooth int16 'CT' (compresses like a real scan)."""
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    body = (x**2 + y**2 < 0.8).astype(np.int16) * 1040 - 1000
    organ = ((x - 0.2) ** 2 + y**2 + z**2 < 0.2) * 60
    return (body + organ + RNG.integers(-3, 4, shape)).astype(np.int16)


# ---------------------------------------------------------------------- DICOM
def dicom_series(folder: Path, n=6, rows=8, cols=6, step=2.5, slope=1.0, spacing=(0.7, 0.8),
                 drop_position=(), positions=None, uid="1.2.3.4", reverse_numbers=True,
                 declare=None):
    """An axial CT series; instance numbers run against the table (the mirroring trap).
    ``declare``: (rows, cols) written in the headers instead of the real size."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        ds = Dataset()
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.Modality = uid, "1.2.3", "CT"
        ds.Rows, ds.Columns = rows, cols
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        z = -10.0 + k * step if positions is None else positions[k]
        if k not in drop_position:
            ds.ImagePositionPatient = [-20.0, -30.0, z]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = list(spacing)
        ds.SliceThickness = step
        ds.InstanceNumber = n - k if reverse_numbers else k + 1
        ds.RescaleSlope, ds.RescaleIntercept = slope, -1024
        ds.PixelData = (np.arange(rows * cols, dtype=np.uint16).reshape(rows, cols)
                        + 100 * k).tobytes()
        if declare:
            ds.Rows, ds.Columns = declare
        ds.save_as(folder / f"im{k:03d}.dcm", enforce_file_format=True)
    return folder


# ---------------------------------------------------------------------- classifiers
def sha(path: Path) -> str | None:
    p = Path(path)
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None


def _names_file(exc: BaseException, path) -> bool:
    text = str(exc)
    return Path(path).name in text and len(text) > len(str(path)) + 10


def read_class(path, check=None, timeout=20.0, **kwargs) -> str:
    """Read ``path`` with :func:`napari_attnseg.io.read_volume`; ``check(volume) -> bool``
    says whether a returned volume is right (None: any returned volume is silently wrong)."""
    from napari_attnseg.errors import AttnsegError
    from napari_attnseg.io import read_volume

    box: dict = {}

    def target():
        try:
            box["vol"] = read_volume(path, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - classified below
            box["exc"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        unblock_fifos(Path(path).parent)
        t.join(5)
        return "hang"
    exc = box.get("exc")
    if isinstance(exc, AttnsegError):
        return "error" if _names_file(exc, path) else "unclear"
    if exc is not None:
        return "traceback"
    vol = box["vol"]
    if check is None or not check(vol):
        return "silent-wrong"
    return "warning" if vol.warnings else "correct"


def unblock_fifos(folder: Path) -> None:
    """Open every FIFO in ``folder`` for writing and close it (a blocked reader gets EOF)."""
    import stat

    for p in folder.iterdir():
        if stat.S_ISFIFO(os.stat(p).st_mode):
            with contextlib.suppress(OSError):
                os.close(os.open(p, os.O_WRONLY | os.O_NONBLOCK))


def cli_class(argv, protect=(), check=None, names=()) -> str:
    """Run ``attnseg argv`` in-process. ``protect``: files that must not change; ``names``:
    what the one error line must mention; ``check()``: whether a success is right (without
    it any success is ``silent-wrong``)."""
    from napari_attnseg.cli import main

    before = {Path(p): sha(p) for p in protect}
    err = _io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(_io.StringIO()):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - a raw traceback
            return "traceback"
    if any(sha(p) != h for p, h in before.items()):
        return "data-loss"
    lines = [ln for ln in err.getvalue().splitlines()
             if ln.strip() and not ln.startswith(("INFO", "WARNING", "DEBUG"))]
    if rc == 2:
        ok = len(lines) == 1 and "error:" in lines[0] and all(n in lines[0] for n in names)
        return "error" if ok else "unclear"
    if rc == 0:  # without a check, a success is wrong (the case expects a refusal)
        if check is None or not check():
            return "silent-wrong"
        return "warning" if "WARNING" in err.getvalue() else "correct"
    return "unclear"


def tiny_model(folder: Path, classes=2):
    import torch

    from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
    from napari_attnseg.model.checkpoint import ModelSpec, save_model

    torch.manual_seed(0)
    cfg = UNetConfig(spatial_dims=2, out_channels=classes, channels=(4, 8, 16))
    spec = ModelSpec(arch=cfg, label_names={i: f"c{i}" for i in range(classes)}, modality="CT",
                     patch_size=(32, 32), name="badtiny", version="1")
    return save_model(folder / "badtiny", AttentionUNet(cfg), spec)


def scan_file(folder: Path, name="scan.nii.gz", shift=(0.0, 0.0, 0.0), data=None) -> Path:
    arr = ct_like((30, 27, 5)).astype(np.float32) if data is None else data
    aff = np.array([[-0.8, 0, 0, 10.0], [0, 0.9, 0, -20.0], [0, 0, 3.0, 5.0], [0, 0, 0, 1]])
    aff[:3, 3] += shift
    p = folder / name
    nib.save(nib.Nifti1Image(arr, aff), str(p))
    return p


def case_registry():
    """``(CASES, case)``: a list of ``(name, expected result class, fn)`` and the decorator
    ``@case("error")`` that appends to it (one per bad-input suite)."""
    cases: list = []

    def case(expected: str):
        def register(fn):
            cases.append((fn.__name__, expected, fn))
            return fn
        return register

    return cases, case
