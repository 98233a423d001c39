"""Synthetic scans stored in any axis order (PSR, LIP, ...) or oblique, with a bright marker in
the patient's right-anterior-superior corner: built with nibabel's own orientation tools, so the
expected geometry does not come from the code under test."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt

#: canonical RAS grid (i = R, j = A, k = S), voxel size and origin (mm)
SHAPE_RAS = (40, 30, 20)
SPACING_RAS = (1.0, 1.2, 2.0)
ORIGIN_RAS = (-20.0, -15.0, 10.0)
#: marker block (i, j, k slices) near the +R, +A, +S corner
MARKER = (slice(30, 36), slice(22, 27), slice(14, 18))

CASES = ("PSR", "LIP", "oblique", "LIP-oblique", "RAS")


def _rotation(deg_x: float, deg_z: float) -> np.ndarray:
    ax, az = np.deg2rad(deg_x), np.deg2rad(deg_z)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ rx


def canonical() -> tuple[np.ndarray, np.ndarray]:
    """(data in RAS i, j, k order, its affine): a smooth background and the marker."""
    i, j, k = np.meshgrid(*[np.arange(s) for s in SHAPE_RAS], indexing="ij")
    data = (100 + 2 * i + 3 * j + 5 * k).astype(np.float32)
    data[MARKER] = 5000.0
    aff = np.eye(4)
    aff[:3, :3] = np.diag(SPACING_RAS)
    aff[:3, 3] = ORIGIN_RAS
    return data, aff


def stored(case: str) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """(data as stored (i, j, k), the file affine, the marker centre in napari world (S, A, R))."""
    data, aff = canonical()
    code = case.split("-")[0] if case != "oblique" else "RAS"
    if code != "RAS":
        transform = ornt.ornt_transform(ornt.axcodes2ornt("RAS"), ornt.axcodes2ornt(tuple(code)))
        data = ornt.apply_orientation(data, transform)
        aff = aff @ ornt.inv_ornt_aff(transform, SHAPE_RAS)
    if case.endswith("oblique"):
        rot = np.eye(4)
        rot[:3, :3] = _rotation(12.0, -9.0)
        aff = rot @ aff
    assert "".join(nib.aff2axcodes(aff)) == code, (case, nib.aff2axcodes(aff))
    centre_ras = canonical_marker_world(aff, data)
    return np.ascontiguousarray(data), aff, centre_ras[::-1].tolist()


def canonical_marker_world(aff: np.ndarray, data: np.ndarray) -> np.ndarray:
    """World (R, A, S) centre of the marker voxels of the stored ``data`` under ``aff``."""
    idx = np.argwhere(data >= 5000.0)
    return (aff @ np.c_[idx, np.ones(len(idx))].T)[:3].mean(1)


def save(path, case: str) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Write ``case`` as NIfTI (qform and sform set); returns :func:`stored`'s tuple."""
    data, aff, marker = stored(case)
    img = nib.Nifti1Image(data, aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    img.to_filename(str(path))
    return data, aff, marker
