"""Dense CRF refinement: accuracy on synthetic shapes, millimetre bandwidths, errors, parallel
== serial, boundary band, cancel, missing pydensecrf, auto-tune."""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest

from napari_attnseg.crf import CRFParams, autotune, autotune_job, default_params, refine, refine_job
from napari_attnseg.crf import dense_crf as dc
from napari_attnseg.errors import AttnsegError, MissingDependencyError

pytest.importorskip("pydensecrf.densecrf")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float(2 * np.count_nonzero(a & b) / (a.sum() + b.sum()))


def noisy_disk(shape=(64, 64), seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    gt = (yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 <= (shape[0] / 4) ** 2
    img = gt * 100.0 + rng.normal(0, 40, shape)
    fg = np.clip(0.5 + 0.3 * (2 * gt - 1) + rng.normal(0, 0.3, shape), 0.01, 0.99)
    return gt, img, fg.astype(np.float32)


def noisy_ellipsoid(n=32, seed=1):
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:n, :n, :n]
    c = n / 2
    gt = (z - c) ** 2 / (0.375 * n) ** 2 + (y - c) ** 2 / (0.28 * n) ** 2 + \
        (x - c) ** 2 / (0.28 * n) ** 2 <= 1
    img = gt * 1.0 + rng.normal(0, 0.5, gt.shape)
    fg = np.clip(0.5 + 0.3 * (2 * gt - 1) + rng.normal(0, 0.25, gt.shape), 0.01, 0.99)
    return gt, img, fg.astype(np.float32)


P3 = CRFParams(sxy_gaussian_mm=3, gaussian_weight=3, sxy_bilateral_mm=6, srgb_bilateral=40,
               bilateral_weight=5, mode="3d", workers=1, protect=False)


def direct_pydensecrf(probs, norm, spacing, prm):
    """The reference: pydensecrf used directly as its README shows."""
    import pydensecrf.densecrf as d
    from pydensecrf import utils as u

    shape = probs.shape[1:]
    crf = d.DenseCRF(int(np.prod(shape)), probs.shape[0])
    crf.setUnaryEnergy(u.unary_from_softmax(probs))
    crf.addPairwiseEnergy(u.create_pairwise_gaussian(
        [prm.sxy_gaussian_mm / s for s in spacing], shape), compat=prm.gaussian_weight)
    crf.addPairwiseEnergy(u.create_pairwise_bilateral(
        [prm.sxy_bilateral_mm / s for s in spacing], prm.srgb_bilateral, norm),
        compat=prm.bilateral_weight)
    return np.array(crf.inference(prm.iterations)).reshape(probs.shape)


def test_refinement_raises_dice_2d():
    gt, img, fg = noisy_disk()
    prm = CRFParams(sxy_gaussian_mm=3, gaussian_weight=3, sxy_bilateral_mm=10,
                    srgb_bilateral=30, bilateral_weight=5)
    res = refine(fg, img, (1.0, 1.0), prm)
    before, after = dice(fg > 0.5, gt), dice(res.labels == 1, gt)
    assert after > before + 0.05, (before, after)
    assert res.labels.dtype == np.uint8 and res.labels.shape == gt.shape
    assert res.probabilities.dtype == np.float32 and res.probabilities.shape == (2,) + gt.shape
    np.testing.assert_allclose(res.probabilities.sum(0), 1, atol=1e-4)
    assert res.n_changed == int(np.count_nonzero(res.labels != (fg > 0.5)))
    assert res.params.mode == "2d"


def test_refinement_raises_dice_3d_and_matches_direct_call():
    gt, img, fg = noisy_ellipsoid()
    res = refine(fg, img, (1, 1, 1), P3)
    assert dice(res.labels == 1, gt) > dice(fg > 0.5, gt) + 0.03
    probs = np.stack([1 - fg, fg]).astype(np.float32)
    ref = direct_pydensecrf(probs, dc.normalize_intensity(img), (1, 1, 1), P3)
    np.testing.assert_array_equal(res.probabilities, ref.astype(np.float32))


def test_foreground_probability_equals_two_class_input_and_many_labels():
    gt, img, fg = noisy_disk((32, 32))
    a = refine(fg, img, (1, 1))
    b = refine(np.stack([1 - fg, fg]), img, (1, 1))
    np.testing.assert_array_equal(a.labels, b.labels)
    three = np.stack([0.8 * (1 - fg), 0.2 * (1 - fg), fg])
    c = refine(three, img, (1, 1))
    assert c.probabilities.shape == (3, 32, 32) and c.labels.max() <= 2


def test_anisotropic_spacing_matches_isotropic_resample():
    gt, img, fg = noisy_ellipsoid()
    iso = refine(fg, img, (1, 1, 1), P3).labels
    sub = slice(0, None, 2)  # every second slice = the same object sampled at 2 mm
    aniso = refine(fg[sub], img[sub], (2, 1, 1), P3).labels
    wrong = refine(fg[sub], img[sub], (1, 1, 1), P3).labels  # spacing ignored
    err_right = np.mean(aniso != iso[sub])
    err_wrong = np.mean(wrong != iso[sub])
    assert err_right < 0.015, err_right
    assert err_wrong > 3 * err_right, (err_right, err_wrong)


@pytest.mark.parametrize(
    "probs_shape, image_shape, spacing, match",
    [
        ((2, 8, 9), (8, 8), (1, 1), "does not fit image shape"),
        ((8, 8, 2), (8, 8), (1, 1), "class axis looks last"),
        ((2, 8, 8), (8, 8), (1, 1, 1), "spacing has 3 values"),
        ((1, 8, 8), (8, 8), (1, 1), "at least 2 classes"),
        ((2, 8, 8), (8, 8), (1, -1), "positive"),
    ],
)
def test_shape_and_spacing_mistakes_are_clear(probs_shape, image_shape, spacing, match):
    probs = np.full(probs_shape, 1.0 / probs_shape[0] if probs_shape[0] <= 2 else 0.5,
                    np.float32)
    if probs_shape[0] == 1:
        probs[:] = 1.0
    with pytest.raises(ValueError, match=match):
        refine(probs, np.zeros(image_shape), spacing)


def test_value_mistakes_are_clear():
    img = np.zeros((8, 8))
    p = np.full((2, 8, 8), 0.5, np.float32)
    bad = p.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        refine(bad, img, (1, 1))
    with pytest.raises(ValueError, match="logits"):
        refine(p * 6 - 1, img, (1, 1))
    with pytest.raises(ValueError, match="sum to 1"):
        refine(np.full((2, 8, 8), 0.3, np.float32), img, (1, 1))
    nan_img = img.copy()
    nan_img[1, 1] = np.inf
    with pytest.raises(ValueError, match="image contains NaN"):
        refine(p, nan_img, (1, 1))
    with pytest.raises(ValueError, match="did you mean '3d'"):
        CRFParams(mode="3D-ish")
    with pytest.raises(ValueError, match="iterations"):
        CRFParams(iterations=0)


def test_float64_and_fortran_order_inputs_give_the_same_result():
    gt, img, fg = noisy_disk((32, 40))
    a = refine(fg, img, (1, 1))
    b = refine(np.asfortranarray(fg.astype(np.float64)), np.asfortranarray(img), (1, 1))
    np.testing.assert_array_equal(a.probabilities, b.probabilities)


def test_parallel_slices_equal_serial_exactly():
    rng = np.random.default_rng(3)
    fg = rng.random((4, 40, 48)).astype(np.float32)
    img = rng.normal(size=fg.shape)
    serial = refine(fg, img, (3, 1, 1), CRFParams(mode="2d", workers=1))
    parallel = refine(fg, img, (3, 1, 1), CRFParams(mode="2d", workers=2))
    np.testing.assert_array_equal(serial.probabilities, parallel.probabilities)
    # and each slice is the plain 2D refinement of that slice
    one = refine(fg[2], img[2], (1, 1), CRFParams(workers=1))
    # normalization is per volume, so compare with the slice normalized the same way
    norm = dc.normalize_intensity(img)
    ref = direct_pydensecrf(np.stack([1 - fg[2], fg[2]]), norm[2], (1, 1), CRFParams())
    np.testing.assert_array_equal(serial.probabilities[:, 2], ref.astype(np.float32))
    assert one.labels.shape == (40, 48)


def test_auto_mode_uses_2d_for_thick_slices_and_3d_otherwise():
    gt, img, fg = noisy_ellipsoid(16)
    assert refine(fg, img, (5, 0.7, 0.7), CRFParams(workers=1)).params.mode == "2d"
    assert refine(fg, img, (1, 1, 1), CRFParams(workers=1)).params.mode == "3d"


def test_memory_estimate_refuses_or_falls_back(monkeypatch):
    gt, img, fg = noisy_ellipsoid(16)
    monkeypatch.setattr(dc, "_available_memory", lambda: 1000)
    with pytest.raises(AttnsegError, match="GiB"):
        refine(fg, img, (1, 1, 1), CRFParams(mode="3d"))
    assert refine(fg, img, (1, 1, 1), CRFParams(mode="auto", workers=1)).params.mode == "2d"
    assert 200 * 1000 <= dc.estimate_memory((10, 10, 10), 2) <= 250 * 1000  # measured ~209 B


def test_band_mode_changes_only_band_voxels():
    from scipy import ndimage

    gt, img, fg = noisy_ellipsoid()
    fg = np.where(fg > 0.5, np.maximum(fg, 0.97), np.minimum(fg, 0.03)).astype(np.float32)
    # a few uncertain voxels far from the object
    fg[2, 2, 2] = 0.6
    prm = CRFParams(**{**P3.to_dict(), "band_mm": 2.0, "uncertain": 0.05})
    res = refine(fg, img, (1, 1, 1), prm)
    labels0 = fg > 0.5
    # independent band: distance (mm) to the nearest voxel of the other label <= band + 1 voxel
    d_in = ndimage.distance_transform_edt(labels0)
    d_out = ndimage.distance_transform_edt(~labels0)
    near = np.where(labels0, d_in, d_out) <= 3.0
    allowed = near | (np.maximum(fg, 1 - fg) < 0.95)
    changed = res.labels != labels0
    assert changed.any()
    assert not (changed & ~allowed).any()
    probs = np.stack([1 - fg, fg])
    untouched = ~allowed
    np.testing.assert_array_equal(res.probabilities[:, untouched], probs[:, untouched])
    full = refine(fg, img, (1, 1, 1), P3)
    assert abs(dice(res.labels, gt) - dice(full.labels, gt)) < 0.01


def test_cancel_stops_the_job():
    gt, img, fg = noisy_ellipsoid(16)
    job = refine_job(fg, img, (1, 1, 1), P3)
    stages = [next(job).stage for _ in range(3)]
    assert "crf 3d" in stages
    job.close()
    with pytest.raises(StopIteration):
        next(job)
    job2 = refine_job(fg, img, (1, 1, 1), CRFParams(mode="2d", workers=2))
    next(job2), next(job2), next(job2)
    job2.close()  # pending slices are cancelled; no error


def test_missing_pydensecrf_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    gt, img, fg = noisy_disk((16, 16))
    with pytest.raises(MissingDependencyError, match=r"pip install 'napari-attnseg\[crf\]'"):
        refine(fg, img, (1, 1))


def test_default_params_per_modality():
    for m in ("CT", "MR", "US", ""):
        assert isinstance(default_params(m), CRFParams)
    assert default_params("us").mode == "2d"
    with pytest.raises(ValueError, match="modality"):
        default_params("PET")


def test_autotune_finds_at_least_the_base_and_reports_gain():
    gt, img, fg = noisy_disk((48, 48))
    base = CRFParams(sxy_gaussian_mm=1, gaussian_weight=1, sxy_bilateral_mm=3,
                     srgb_bilateral=5, bilateral_weight=1, workers=1)
    grid = {"bilateral_weight": [1, 5], "srgb_bilateral": [5, 30], "sxy_bilateral_mm": [3, 10]}
    res = autotune(fg, img, (1, 1), gt.astype(np.uint8), grid=grid, base=base)
    assert len(res.trials) == 8  # base is one of the grid points
    assert res.trials[0].params == base
    assert res.best_dice == max(t.dice for t in res.trials)
    assert res.best_dice > res.trials[0].dice
    assert res.baseline_dice == pytest.approx(dice(fg > 0.5, gt))
    check = refine(fg, img, (1, 1), res.best_params)
    assert dice(check.labels, gt) == pytest.approx(res.best_dice)
    assert res.gain > 0


def test_autotune_mask_and_cancel():
    gt, img, fg = noisy_ellipsoid(16)
    res = autotune(fg, img, (1, 1, 1), gt, mask=[7, 8], n_trials=2, base=P3)
    assert len(res.trials) == 2
    m = np.zeros(gt.shape, bool)
    m[[7, 8]] = True
    assert res.baseline_dice == pytest.approx(dice((fg > 0.5)[m], gt[m]))
    with pytest.raises(ValueError, match="outside"):
        autotune(fg, img, (1, 1, 1), gt, mask=[99], base=P3)
    job = autotune_job(fg, img, (1, 1, 1), gt, base=P3)
    p = next(job)
    assert p.stage == "autotune" and p.total > 1
    next(job)
    job.close()
    with pytest.raises(StopIteration):
        next(job)


def test_band_without_boundary_or_uncertainty_changes_nothing_and_2d_band_works():
    img = np.random.default_rng(0).normal(size=(3, 16, 16))
    fg = np.full(img.shape, 0.01, np.float32)
    res = refine(fg, img, (1, 1, 1), CRFParams(band_mm=2.0, workers=1))
    assert res.n_changed == 0
    np.testing.assert_array_equal(res.probabilities[1], fg)
    gt, img2, fg2 = noisy_ellipsoid(16)
    band2d = refine(fg2, img2, (4, 1, 1), CRFParams(mode="2d", band_mm=1.5, workers=2))
    assert band2d.params.mode == "2d" and band2d.n_changed > 0


# ------------------------------------------------------------------ small classes (protect)
def lesion_in_organ(shape=(96, 96), seed=0):
    """CT-like slice: air, fat, a soft-tissue organ (60 HU) holding a small low-contrast lesion
    (35 HU, radius 5 px at 0.8 mm), a bone rim (air and bone set the 1..99 % intensity range,
    as in a real CT), noise 12 HU; network probabilities confident on the organ and moderately
    confident (~0.75) on the lesion. Returns labels, image (HU), probabilities (3, y, x)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cy, cx = shape[0] / 2, shape[1] / 2
    body = (yy - cy) ** 2 + (xx - cx) ** 2 <= (0.45 * shape[0]) ** 2
    organ = (yy - cy) ** 2 / (0.3 * shape[0]) ** 2 + (xx - cx) ** 2 / (0.25 * shape[1]) ** 2 <= 1
    lesion = (yy - cy - 4) ** 2 + (xx - cx + 3) ** 2 <= 5 ** 2
    bone = ((yy - cy) ** 2 + (xx - cx) ** 2 <= (0.45 * shape[0] + 2) ** 2) & ~body
    hu = np.full(shape, -1000.0)
    hu[body], hu[organ], hu[lesion], hu[bone] = -90, 60, 35, 700
    hu = hu + rng.normal(0, 12, shape)
    labels = np.zeros(shape, np.uint8)
    labels[organ], labels[lesion] = 1, 2
    logits = np.stack([3.0 * (labels == k) for k in range(3)]).astype(np.float32)
    logits[2] -= 1.9 * (labels == 2)  # lesion: p ~ 0.75 instead of ~0.9
    logits += rng.normal(0, 0.4, logits.shape).astype(np.float32)
    e = np.exp(logits - logits.max(0))
    return labels, hu, (e / e.sum(0)).astype(np.float32)


@pytest.mark.parametrize("modality", ["CT", "MR", ""])
def test_default_params_keep_a_small_low_contrast_lesion(modality):
    labels, hu, probs = lesion_in_organ()
    assert dice(probs.argmax(0) == 2, labels == 2) > 0.9  # the network found it
    prm = replace(default_params(modality), workers=1)
    assert prm.protect
    res = refine(probs, hu, (0.8, 0.8), prm)
    assert dice(res.labels == 2, labels == 2) > 0.8, modality
    assert dice(res.labels == 1, labels == 1) > 0.95
    # and as a volume (auto mode picks 2D for 2.5 mm slices; force 3D too)
    vol_p = np.repeat(probs[:, None], 3, axis=1)
    vol_i = np.repeat(hu[None], 3, axis=0)
    for mode in ("auto", "3d"):
        r3 = refine(vol_p, vol_i, (2.5, 0.8, 0.8), replace(prm, mode=mode))
        assert dice(r3.labels == 2, np.broadcast_to(labels == 2, r3.labels.shape)) > 0.8, mode


def test_protect_restores_a_class_the_crf_would_erase(caplog):
    labels, hu, probs = lesion_in_organ()
    crush = CRFParams(sxy_gaussian_mm=5, gaussian_weight=10, sxy_bilateral_mm=20,
                      srgb_bilateral=40, bilateral_weight=10, workers=1, protect=False)
    erased = refine(probs, hu, (0.8, 0.8), crush)
    n_in = int(np.count_nonzero(probs.argmax(0) == 2))
    assert np.count_nonzero(erased.labels == 2) < 0.5 * n_in  # these weights do erase it
    assert erased.protected == () and erased.warnings == ()
    with caplog.at_level("WARNING", logger="napari_attnseg.crf.dense_crf"):
        kept = refine(probs, hu, (0.8, 0.8), replace(crush, protect=True))
    assert kept.protected == (2,)
    assert len(kept.warnings) == 1 and "class 2" in kept.warnings[0]
    assert "class 2" in caplog.text
    region = probs.argmax(0) == 2
    assert np.all(kept.labels[region] == 2)  # the whole input region of the class is back
    np.testing.assert_array_equal(kept.probabilities[:, region], probs[:, region])
    # elsewhere the refinement is untouched
    np.testing.assert_array_equal(kept.labels[~region], erased.labels[~region])
    assert kept.n_changed == int(np.count_nonzero(kept.labels != probs.argmax(0)))
    # 3D without a band frees the input during the run: it is rebuilt for the restore
    vol_p = np.repeat(probs[:, None], 2, axis=1).astype(np.float64)
    vol_i = np.repeat(hu[None], 2, axis=0)
    k3 = refine(vol_p, vol_i, (1, 0.8, 0.8), replace(crush, protect=True, mode="3d",
                                                     sxy_bilateral_mm=10))
    assert 2 in k3.protected and np.all(k3.labels[:, region] == 2)
    # a class the CRF only trims a little is not protected
    mild = refine(probs, hu, (0.8, 0.8), CRFParams(gaussian_weight=1, bilateral_weight=1,
                                                   srgb_bilateral=8, workers=1))
    assert mild.protected == ()
    with pytest.raises(ValueError, match="max_shrink"):
        CRFParams(max_shrink=1.0)
