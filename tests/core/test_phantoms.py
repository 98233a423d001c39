"""Phantoms: deterministic, right geometry and classes, realistic statistics, not thresholdable."""

import time

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_attnseg.sample import ct_phantom, mr_phantom, phantom_dataset, us_cine


def _dice(a, b):
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def _best_window_dice(img, target):
    """Dice of the best intensity window [lo, hi] chosen with the answer known (an upper bound
    for any global threshold, Otsu included)."""
    vals = img[target]
    best = 0.0
    for lo in np.percentile(vals, [0.5, 2, 5, 10, 20]):
        for hi in np.percentile(vals, [80, 90, 95, 98, 99.5]):
            best = max(best, _dice((img >= lo) & (img <= hi), target))
    return best


@pytest.mark.parametrize("make", [ct_phantom, mr_phantom, us_cine])
def test_deterministic_and_seeded(make):
    a_img, a_lab = make(0)
    b_img, b_lab = make(0)
    c_img, _ = make(1)
    assert np.array_equal(a_img.data, b_img.data) and np.array_equal(a_lab.data, b_lab.data)
    assert not np.array_equal(a_img.data, c_img.data)


@pytest.mark.parametrize("make", [ct_phantom, mr_phantom, us_cine])
def test_fast(make):
    t0 = time.perf_counter()
    make(3)
    assert time.perf_counter() - t0 < 4.0  # < 2 s on an idle machine; margin for a loaded one


def test_ct_phantom_geometry_and_hu():
    img, lab = ct_phantom(0)
    assert img.shape == lab.shape == (48, 128, 128)
    assert img.spacing == lab.spacing == (2.5, 0.8, 0.8)
    assert img.modality == "CT" and not img.is_labels and lab.is_labels
    assert img.data.dtype == np.int16 and lab.data.dtype == np.uint8
    assert img.same_grid(lab)
    # centred: world centre of the array is the origin
    centre = img.affine @ np.r_[(np.array(img.shape) - 1) / 2.0, 1]
    np.testing.assert_allclose(centre[:3], 0, atol=1e-9)
    assert set(np.unique(lab.data)) == {0, 1, 2}
    d = img.data.astype(float)
    corner = d[:, :6, :6]
    assert abs(corner.mean() + 1000) < 10  # air
    organ, lesion = d[lab.data == 1], d[lab.data == 2]
    assert 45 < np.median(organ) < 85
    assert 15 < np.median(organ) - np.median(lesion) < 40  # hypodense lesion
    assert 8 < corner.std() < 20  # noise ~10-15 HU
    assert d.max() > 400  # bone present
    # the lesion lies inside the organ (its dilation stays within organ + lesion)
    grown = ndi.binary_dilation(lab.data == 2)
    assert np.count_nonzero(grown & (lab.data == 0)) < 0.2 * np.count_nonzero(grown)


def test_mr_phantom_bias_and_rician_noise():
    img, lab = mr_phantom(0)
    assert img.shape == (40, 128, 128) and img.spacing == (3.0, 1.0, 1.0)
    assert img.modality == "MR" and lab.data.dtype == np.uint8
    assert set(np.unique(lab.data)) == {0, 1, 2}
    d = img.data
    assert d.min() >= 0  # magnitude data
    bg = d[:, :8, :8].ravel()
    # Rician in background = Rayleigh: mean/std ratio sqrt(pi/2)/sqrt(2-pi/2) ~ 1.91
    assert 1.7 < bg.mean() / bg.std() < 2.15
    # ventricles (CSF) darker than brain; a bias field: the same tissue differs across the volume
    vent = d[lab.data == 1]
    assert np.median(vent) < 0.6 * np.median(d[d > 0.5 * d.max()])
    # CSF outside the ventricles overlaps the ventricle intensities (not thresholdable)
    assert _best_window_dice(d, lab.data == 1) < 0.5


def test_us_cine_axes_speckle_labels():
    img, lab = us_cine(0)
    assert img.shape == (16, 160, 160) and img.spacing == (1.0, 0.3, 0.3)
    assert img.modality == "US" and img.metadata["axes"] == ("t", "y", "x")
    assert img.data.dtype == np.uint8
    areas = (lab.data == 1).sum(axis=(1, 2))
    assert areas.min() > 0 and areas.max() > 1.05 * areas.min()  # it pulsates
    com = np.array([ndi.center_of_mass(f) for f in lab.data == 1])
    assert np.ptp(com, axis=0).max() > 0.5  # and moves
    # speckle: inside uniform tissue the intensity varies a lot (coefficient of variation)
    inside = img.data[0][lab.data[0] == 1].astype(float)
    assert inside.std() / inside.mean() > 0.3
    # shadow: the darkest columns are below the reflector, not at the image edges
    assert _best_window_dice(img.data.astype(float), lab.data == 1) < 0.75


def test_phantom_dataset_varied_and_not_thresholdable():
    cases = phantom_dataset("ct", 3, seed=4, shape=(24, 64, 64), spacing=(3.0, 1.5, 1.5))
    assert len(cases) == 3
    again = phantom_dataset("CT", 3, seed=4, shape=(24, 64, 64), spacing=(3.0, 1.5, 1.5))
    for (a, la), (b, lb) in zip(cases, again):
        assert np.array_equal(a.data, b.data) and np.array_equal(la.data, lb.data)
        assert a.shape == (24, 64, 64) and a.spacing == (3.0, 1.5, 1.5)
    organ_fracs = [np.mean(lab.data > 0) for _, lab in cases]
    assert len(set(np.round(organ_fracs, 4))) == 3  # different anatomy
    for img, lab in cases:
        assert _best_window_dice(img.data.astype(float), lab.data > 0) < 0.75
    us = phantom_dataset("us", 2, seed=1, shape=(4, 64, 80))
    assert us[0][0].shape == (4, 64, 80)
    with pytest.raises(ValueError, match="did you mean 'mr'"):
        phantom_dataset("mri", 1)


def test_bad_arguments_have_messages():
    with pytest.raises(ValueError, match="shape"):
        ct_phantom(shape=(4, 4))
    with pytest.raises(ValueError, match="spacing"):
        mr_phantom(spacing=(1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="n_frames"):
        us_cine(n_frames=0)


def test_sample_data_files_are_up_to_date(tmp_path):
    """sample_data/ is what scripts/make_sample_data.py writes today (byte for byte); re-run the
    script after changing the phantoms."""
    import filecmp
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("make_sample_data",
                                                  root / "scripts" / "make_sample_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    files = mod.make(tmp_path)
    assert sum(p.stat().st_size for p in files) < 3e6
    stale = [str(p.relative_to(tmp_path)) for p in files
             if not filecmp.cmp(p, root / "sample_data" / p.relative_to(tmp_path), shallow=False)]
    assert not stale, f"regenerate with: python scripts/make_sample_data.py ({stale})"
