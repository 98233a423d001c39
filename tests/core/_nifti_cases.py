"""NIfTI test cases shared by the io tests: RAS, LPS and oblique affines and a save helper."""

from __future__ import annotations

import nibabel as nib
import numpy as np


def _oblique_affine() -> np.ndarray:
    ang = np.deg2rad(20.0)
    rot = np.array([[np.cos(ang), -np.sin(ang), 0], [np.sin(ang), np.cos(ang), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([0.7, 0.9, 2.5])
    aff[:3, 3] = [-12.5, 30.25, 7.0]
    return aff


AFFINES = {
    "RAS": np.diag([0.8, 0.9, 2.0, 1.0]) + np.array([[0, 0, 0, -10.0], [0, 0, 0, 5.0],
                                                    [0, 0, 0, 3.0], [0, 0, 0, 0]]),
    "LPS": np.array([[-0.5, 0, 0, 40.0], [0, -0.6, 0, 50.0], [0, 0, 3.0, -20.0], [0, 0, 0, 1]]),
    "oblique": _oblique_affine(),
}


def save(tmp_path, arr, affine, name="img.nii.gz", **hdr):
    """Write ``arr`` with ``affine`` (and header fields) as a NIfTI file; returns its path."""
    img = nib.Nifti1Image(arr, affine)
    for k, v in hdr.items():
        img.header[k] = v
    p = tmp_path / name
    nib.save(img, str(p))
    return p
