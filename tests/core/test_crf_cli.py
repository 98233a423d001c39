"""``attnseg refine``: 4D class-last and 3D foreground NIfTI inputs, output on the image grid."""

from __future__ import annotations

import numpy as np
import pytest

from napari_attnseg import cli
from napari_attnseg.crf import CRFParams, refine

nib = pytest.importorskip("nibabel")
pytest.importorskip("pydensecrf.densecrf")


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    k, j, i = np.mgrid[:5, :30, :32]
    gt = (j - 15) ** 2 + (i - 16) ** 2 <= 64
    img_zyx = (gt * 100.0 + rng.normal(0, 30, gt.shape)).astype(np.float32)
    fg_zyx = np.clip(0.5 + 0.3 * (2 * gt - 1) + rng.normal(0, 0.3, gt.shape), 0.01, 0.99)
    affine = np.diag([0.8, 0.9, 3.0, 1.0])
    affine[:3, 3] = [-10, 5, 20]
    nib.save(nib.Nifti1Image(img_zyx.T, affine), tmp_path / "img.nii.gz")
    probs_ijkc = np.stack([1 - fg_zyx.T, fg_zyx.T], axis=-1).astype(np.float32)
    nib.save(nib.Nifti1Image(probs_ijkc, affine), tmp_path / "probs4d.nii.gz")
    nib.save(nib.Nifti1Image(fg_zyx.T.astype(np.float32), affine), tmp_path / "fg.nii.gz")
    return tmp_path, img_zyx, fg_zyx.astype(np.float32), affine


@pytest.mark.parametrize("probs_name", ["probs4d.nii.gz", "fg.nii.gz"])
def test_cli_refine_writes_labels_on_the_image_grid(files, probs_name):
    tmp, img, fg, affine = files
    out = tmp / "out.nii.gz"
    rc = cli.main(["refine", str(tmp / probs_name), str(tmp / "img.nii.gz"), "-o", str(out),
                   "-q", "--mode", "2d", "--workers", "1", "--iterations", "3"])
    assert rc == 0
    res_img = nib.load(str(out))
    np.testing.assert_allclose(res_img.affine, affine, atol=1e-5)
    got = np.asarray(res_img.dataobj).T  # back to (z, y, x)
    p = CRFParams(mode="2d", workers=1, iterations=3)
    expected = refine(fg, img, (3.0, 0.9, 0.8), p).labels
    np.testing.assert_array_equal(got, expected)


def test_cli_refine_shape_mismatch_is_a_clear_error(files, tmp_path, capsys):
    tmp, img, fg, affine = files
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 5, 2), np.float32), affine), tmp / "bad.nii.gz")
    rc = cli.main(["refine", str(tmp / "bad.nii.gz"), str(tmp / "img.nii.gz"), "-o",
                   str(tmp / "o.nii.gz"), "-q"])
    assert rc == 2
    assert "spatial shape" in capsys.readouterr().err
