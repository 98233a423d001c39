"""Regenerate the MetaImage fixtures with SimpleITK (ITK's own writer) and the reference
geometry and voxels SimpleITK reads back. Not run by the tests (SimpleITK is not a dependency):

    python -m venv /tmp/sitk && /tmp/sitk/bin/pip install SimpleITK numpy
    /tmp/sitk/bin/python tests/data/metaimage/make_fixtures.py
"""

from pathlib import Path

import numpy as np
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent


def rot(ax, az):
    cx, sx, cz, sz = np.cos(ax), np.sin(ax), np.cos(az), np.sin(az)
    return np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]) @ np.array([[cz, -sz, 0], [sz, cz, 0],
                                                                        [0, 0, 1]])


def lps_affine(img):
    n = img.GetDimension()
    d = np.asarray(img.GetDirection()).reshape(n, n)
    a = np.eye(n + 1)
    a[:n, :n] = d @ np.diag(img.GetSpacing())
    a[:n, n] = img.GetOrigin()
    return a


def main():
    rng = np.random.default_rng(7)
    ct = rng.integers(-1000, 1500, size=(5, 6, 7), dtype=np.int16)  # (z, y, x)
    img = sitk.GetImageFromArray(ct)
    img.SetSpacing((0.7, 0.8, 2.5))
    img.SetOrigin((-40.5, 12.25, -7.0))
    img.SetDirection(rot(0.3, -0.5).ravel().tolist())
    sitk.WriteImage(img, str(HERE / "oblique_ct.mha"), useCompression=True)
    sitk.WriteImage(img, str(HERE / "oblique_ct.mhd"), useCompression=False)
    lab = np.zeros((9, 11), np.uint8)
    lab[2:6, 3:9] = 1
    lab[4:5, 4:6] = 2
    img2 = sitk.GetImageFromArray(lab)
    img2.SetSpacing((0.3, 0.4))
    img2.SetOrigin((5.0, -3.0))
    img2.SetDirection((0.0, 1.0, -1.0, 0.0))
    sitk.WriteImage(img2, str(HERE / "labels_2d.mha"), useCompression=True)
    ref = {}
    for name in ("oblique_ct.mha", "oblique_ct.mhd", "labels_2d.mha"):
        back = sitk.ReadImage(str(HERE / name))
        key = name.replace(".", "_")
        ref[key + "_array"] = sitk.GetArrayFromImage(back)
        ref[key + "_lps_affine"] = lps_affine(back)
    np.savez_compressed(HERE / "reference.npz", **ref)


if __name__ == "__main__":
    main()
