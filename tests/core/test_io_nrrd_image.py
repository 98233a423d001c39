"""NRRD (LPS / RAS space directions) and plain 2D images."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_attnseg.errors import ReadError
from napari_attnseg.io import list_series, read_volume, write_volume

nrrd = pytest.importorskip("nrrd")
RNG = np.random.default_rng(1)


@pytest.mark.parametrize("space,signs", [("left-posterior-superior", (-1, -1, 1)),
                                         ("right-anterior-superior", (1, 1, 1))])
def test_nrrd_space_directions(tmp_path, space, signs):
    arr = RNG.integers(0, 1000, size=(6, 5, 4)).astype(np.int16)
    dirs = np.array([[0.5, 0.1, 0], [0, -0.6, 0], [0, 0, 2.0]])
    origin = np.array([10.0, -20.0, 5.0])
    p = tmp_path / "a.nrrd"
    nrrd.write(str(p), arr, {"space": space, "space directions": dirs, "space origin": origin})
    vol = read_volume(p)
    assert vol.shape == (4, 5, 6) and vol.header["format"] == "nrrd"
    np.testing.assert_array_equal(vol.data, arr.T)
    s = np.array(signs, float)
    for i, j, k in [(0, 0, 0), (5, 4, 3), (2, 1, 3)]:
        space_pt = origin + i * dirs[0] + j * dirs[1] + k * dirs[2]
        ras = space_pt * s
        np.testing.assert_allclose((vol.affine @ [k, j, i, 1])[:3], ras[::-1], atol=1e-9)
    out = write_volume(vol, tmp_path / "a.nii.gz")  # through NIfTI: nibabel sees RAS
    img = nib.load(str(out))
    np.testing.assert_allclose(img.affine @ [5, 4, 3, 1],
                               [*((origin + 5 * dirs[0] + 4 * dirs[1] + 3 * dirs[2]) * s), 1],
                               atol=1e-4)


def test_nrrd_4d_and_bad(tmp_path):
    arr = RNG.normal(size=(3, 4, 5, 2)).astype(np.float32)
    p = tmp_path / "v.nrrd"
    nrrd.write(str(p), arr, {"kinds": ["domain", "domain", "domain", "list"]})
    with pytest.raises(ReadError, match="split_4d"):
        read_volume(p)
    vol = read_volume(p, split_4d=1)
    np.testing.assert_array_equal(vol.data, arr[..., 1].T)
    assert any("no space directions" in w for w in vol.warnings)
    bad = tmp_path / "bad.nrrd"
    bad.write_text("NRRD0004\ntype: what\n")
    with pytest.raises(ReadError, match="bad.nrrd"):
        read_volume(bad)


def test_brain_tumour_nrrd(shared_data):
    d = shared_data / "mri_brain_tumour"
    img = read_volume(d / "brain1_image.nrrd")
    mask = read_volume(d / "brain1_tumour_mask.nrrd")
    assert img.shape == (25, 256, 256) and not img.is_labels
    np.testing.assert_allclose(img.spacing, (6.5, 0.78125, 0.78125), rtol=1e-9)
    assert mask.is_labels and mask.same_grid(img)
    _, hdr = nrrd.read(str(d / "brain1_image.nrrd"))
    lps = hdr["space origin"]
    np.testing.assert_allclose(img.origin, (lps[2], -lps[1], -lps[0]))
    assert img.orientation_code() == "LAS"
    assert list_series(d / "brain1_image.nrrd")[0].shape == (25, 256, 256)


def test_png_and_tif(tmp_path):
    import imageio.v3 as iio
    import tifffile

    gray = RNG.integers(0, 255, size=(20, 30)).astype(np.uint8)
    iio.imwrite(tmp_path / "g.png", gray)
    vol = read_volume(tmp_path / "g.png", pixel_size_mm=0.2)
    assert vol.shape == (20, 30) and vol.spacing == (0.2, 0.2) and vol.warnings == ()
    np.testing.assert_array_equal(vol.data, gray)
    assert not vol.is_labels
    mask = (gray > 128).astype(np.uint8)
    iio.imwrite(tmp_path / "m.png", mask)
    m = read_volume(tmp_path / "m.png")
    assert m.is_labels and any("1.0 mm assumed" in w for w in m.warnings)
    rgb = np.stack([gray, gray // 2, gray], axis=-1)
    iio.imwrite(tmp_path / "c.png", rgb)
    c = read_volume(tmp_path / "c.png")
    assert c.shape == (20, 30) and any("grayscale" in w for w in c.warnings)
    stack = RNG.normal(size=(3, 8, 9)).astype(np.float32)
    tifffile.imwrite(tmp_path / "s.tif", stack)
    s = read_volume(tmp_path / "s.tif", pixel_size_mm=0.5)
    assert s.shape == (3, 8, 9)
    np.testing.assert_array_equal(s.data, stack)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ReadError, match="broken.png"):
        read_volume(tmp_path / "broken.png")


def test_hc18_png(shared_data):
    img = read_volume(shared_data / "hc18" / "images" / "000_HC.png", pixel_size_mm=0.0691)
    mask = read_volume(shared_data / "hc18" / "masks" / "000_HC_mask.png", pixel_size_mm=0.0691)
    assert img.shape == (540, 800) == mask.shape and mask.is_labels and not img.is_labels
