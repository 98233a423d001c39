"""Scribble correction, propagation, fill-between interpolation and the simulated user."""

from __future__ import annotations

import numpy as np
import pytest

from napari_attnseg.interactive import (
    IGNORE, ScribbleParams, apply_scribbles, correct_slice, enforce_scribbles, fill_between,
    geodesic_distance, interpolate_labels, probabilities_from_labels, propagate,
)
from napari_attnseg.interactive.simulate import error_regions, next_brush, next_scribble, slice_dice

pytest.importorskip("pydensecrf")


def disk(shape, cy, cx, r):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def scene(seed=0, shape=(96, 96)):
    """Ring (class 1) around a disk (class 2) on a noisy image; the 'model' misses the right
    half of the disk (calls it ring) and adds a false blob of class 1 in the background."""
    rng = np.random.default_rng(seed)
    gt = np.zeros(shape, np.uint8)
    gt[disk(shape, 48, 40, 26)] = 1
    gt[disk(shape, 48, 40, 13)] = 2
    img = (0.1 + 0.45 * (gt == 1) + 0.9 * (gt == 2) + 0.04 * rng.standard_normal(shape)).astype(np.float32)
    wrong = gt.copy()
    wrong[(gt == 2) & (np.arange(shape[1])[None, :] > 40)] = 1
    wrong[disk(shape, 48, 80, 9) & (gt == 0)] = 1
    probs = probabilities_from_labels(wrong, 3, confidence=0.9)
    return img, gt, wrong, probs


def test_correct_slice_raises_dice_and_keeps_constraints():
    img, gt, wrong, probs = scene()
    before = slice_dice(wrong, gt)
    scr = np.full(gt.shape, IGNORE, np.uint8)
    pred = wrong
    for _ in range(3):
        stroke = next_scribble(pred, gt)
        if stroke is None:
            break
        scr[stroke.mask] = stroke.label
        pred = correct_slice(probs, img, scr, (1.0, 1.0), base_labels=wrong).labels
    after = slice_dice(pred, gt)
    assert after > before + 0.1, (before, after)
    assert after > 0.9
    drawn = scr != IGNORE
    assert drawn.sum() > 10
    np.testing.assert_array_equal(pred[drawn], scr[drawn])


def test_hard_constraint_beats_a_confident_model():
    img, gt, wrong, _ = scene()
    probs = probabilities_from_labels(np.zeros_like(gt), 3, confidence=0.999)  # all background
    scr = np.full(gt.shape, IGNORE, np.uint8)
    scr[10, 10:30] = 2  # a stroke of class 2 on plain background: the image disagrees
    res = correct_slice(probs, img, scr, (1.0, 1.0))
    assert (res.labels[10, 10:30] == 2).all()


def test_keep_and_locality():
    img, gt, wrong, probs = scene()
    scr = np.full(gt.shape, IGNORE, np.uint8)
    scr[46:50, 50:56] = 2  # inside the missed half of the disk
    keep = np.zeros(gt.shape, bool)
    keep[40:56, 44:54] = True  # "painted by hand" right where the stroke would spread
    params = ScribbleParams(tau_mm=5.0)
    res = correct_slice(probs, img, scr, (1.0, 1.0), params, base_labels=wrong, keep=keep)
    np.testing.assert_array_equal(res.labels[keep], wrong[keep])
    far = ~res.region
    assert far.any()
    np.testing.assert_array_equal(res.labels[far], wrong[far])  # nothing outside the reach
    assert res.n_changed == int((res.labels != wrong).sum()) > 0


def test_geodesic_distance_follows_edges():
    img = np.zeros((40, 40), np.float32)
    img[:, 20:] = 1.0  # a vertical edge
    seeds = np.zeros(img.shape, bool)
    seeds[20, 10] = True
    d = geodesic_distance(img, seeds, (1.0, 1.0), edge_weight=50.0, smooth_px=0.0)
    assert d[20, 10] == 0
    assert d[20, 18] == pytest.approx(8.0, abs=0.5)  # same side: Euclidean
    assert d[20, 26] > 16.0 + 30.0  # 16 px away but across the edge
    d0 = geodesic_distance(img, seeds, (1.0, 1.0), edge_weight=0.0)
    assert d0[20, 26] == pytest.approx(16.0, abs=0.5)
    d2 = geodesic_distance(img, seeds, (2.0, 2.0), edge_weight=0.0)  # spacing in mm
    assert d2[20, 18] == pytest.approx(16.0, abs=0.5)


def test_a_large_slice_searches_a_coarser_grid_with_the_same_correction():
    """A slice with more pixels than ``geodesic_max_pixels`` (here the scene at 384 x 384 with
    0.25 mm pixels, against a limit of 96 x 96) runs the geodesic search on a grid coarsened 4x:
    the distances still stay small inside the stroke's region and grow across its edge, and the
    corrected labels are nearly those of the full-resolution search; strokes stay hard
    constraints."""
    from napari_attnseg.interactive.scribbles import _coarsen, _cost, _geodesic

    _, gt, wrong, _ = scene()
    up = lambda a: np.repeat(np.repeat(a, 4, axis=0), 4, axis=1)  # noqa: E731
    gt4, wrong4 = up(gt), up(wrong)
    rng = np.random.default_rng(0)
    img4 = (0.1 + 0.45 * (gt4 == 1) + 0.9 * (gt4 == 2) + 0.04 * rng.standard_normal(gt4.shape)).astype(np.float32)
    probs4 = probabilities_from_labels(wrong4, 3, confidence=0.9)
    scr = np.full(gt4.shape, IGNORE, np.uint8)
    scr[190:194, 170:220] = 2                      # across the missed half of the disk
    seeds = scr == 2
    cost, _ = _cost(img4 * 255.0, (0.25, 0.25), 100.0, 1.0)
    for limit in (0, 96 * 96):
        d = _geodesic(cost, seeds, (0.25, 0.25), None, limit)
        assert (d[seeds] == 0).all() and np.isfinite(d).all()
        assert np.median(d[gt4 == 1]) > 2.5 * np.median(d[(gt4 == 2) & ~seeds])
    c, s = _coarsen(cost[:383, :383], seeds[:383, :383], 4)  # ragged edges are padded
    assert c.shape == (96, 96) and s.sum() == 2 * 13
    exact = correct_slice(probs4, img4, scr, (0.25, 0.25), ScribbleParams(tau_mm=5.0, geodesic_max_pixels=0))
    fast = correct_slice(probs4, img4, scr, (0.25, 0.25), ScribbleParams(tau_mm=5.0, geodesic_max_pixels=96 * 96))
    assert slice_dice(fast.labels, gt4) > slice_dice(wrong4, gt4) + 0.1
    assert slice_dice(fast.labels, gt4) > slice_dice(exact.labels, gt4) - 0.02
    assert (fast.labels == exact.labels).mean() > 0.99
    assert (fast.labels[seeds] == 2).all()
    with pytest.raises(ValueError, match="geodesic_max_pixels"):
        ScribbleParams(geodesic_max_pixels=-1)


def test_bad_inputs_are_rejected():
    img, gt, wrong, probs = scene()
    scr = np.full(gt.shape, IGNORE, np.uint8)
    scr[0, 0] = 7
    with pytest.raises(ValueError, match="neither a class"):
        correct_slice(probs, img, scr)
    with pytest.raises(ValueError, match="shape"):
        correct_slice(probs, img, scr[:10])
    with pytest.raises(ValueError, match="tau_mm"):
        ScribbleParams(tau_mm=0)


def test_apply_and_enforce_scribbles():
    img, gt, wrong, probs = scene()
    scr = np.full(gt.shape, IGNORE, np.uint8)
    scr[46:50, 50:56] = 2
    fused = apply_scribbles(probs, img, scr, (1.0, 1.0))
    assert fused.shape == probs.shape
    np.testing.assert_allclose(fused.sum(axis=0), 1.0, atol=1e-5)
    assert (fused.argmax(axis=0)[scr == 2] == 2).all()
    assert (fused[2] > probs[2] + 1e-3).sum() > scr.size * 0.01  # evidence spread beyond the stroke
    lab = enforce_scribbles(wrong, scr)
    assert (lab[scr == 2] == 2).all() and (lab[scr == IGNORE] == wrong[scr == IGNORE]).all()


def volume(n=9):
    img, gt, wrong, probs = scene()
    return (np.stack([img] * n), np.stack([gt] * n), np.stack([wrong] * n),
            np.stack([probs] * n, axis=1))


def test_propagate_carries_a_correction_to_neighbours():
    img, gt, wrong, probs = volume()
    scr = np.full(gt.shape, IGNORE, np.uint8)
    pred = wrong[4]
    for _ in range(3):
        stroke = next_scribble(pred, gt[4])
        if stroke is None:
            break
        scr[4][stroke.mask] = stroke.label
        pred = correct_slice(probs[:, 4], img[4], scr[4], base_labels=wrong[4]).labels
    keep = np.zeros(gt.shape, bool)
    keep[5, :, :20] = True
    params = ScribbleParams(max_distance=2)
    res = propagate(probs, img, scr, (5.0, 1.0, 1.0), params, base_labels=wrong, keep=keep,
                    targets=range(9))
    for z in (3, 5, 6):
        assert slice_dice(res.labels[z], gt[z]) > slice_dice(wrong[z], gt[z]) + 0.05, z
    assert res.skipped == (0, 1, 7, 8)  # beyond max_distance: untouched
    for z in res.skipped:
        np.testing.assert_array_equal(res.labels[z], wrong[z])
    np.testing.assert_array_equal(res.labels[keep], wrong[keep])
    assert 4 in res.changed  # its own strokes are hard constraints
    assert (res.labels[4][scr[4] != IGNORE] == scr[4][scr[4] != IGNORE]).all()


def test_interpolate_discs():
    a = disk((64, 64), 32, 32, 10).astype(np.uint8)
    b = disk((64, 64), 32, 32, 20).astype(np.uint8)
    mid = interpolate_labels(a, b, 3)
    radii = [np.sqrt(m.sum() / np.pi) for m in mid]
    np.testing.assert_allclose(radii, [12.5, 15.0, 17.5], atol=0.6)
    # a label on one side only shrinks to a point
    c = np.zeros_like(a)
    taper = interpolate_labels(b, c, 3)
    areas = [int(t.sum()) for t in taper]
    assert areas[0] > areas[1] > areas[2] >= 0 and areas[0] < b.sum()


def test_interpolate_keeps_nested_labels():
    a = np.zeros((64, 64), np.uint8)
    a[disk(a.shape, 32, 32, 20)] = 1
    a[disk(a.shape, 32, 32, 10)] = 2
    b = np.zeros_like(a)
    b[disk(a.shape, 30, 34, 24)] = 1
    b[disk(a.shape, 30, 34, 12)] = 2
    mid = interpolate_labels(a, b, 1)[0]
    assert mid[31, 33] == 2 and mid[31, 33 + 17] == 1 and mid[0, 0] == 0
    assert 10 ** 2 * np.pi < (mid == 2).sum() < 12 ** 2 * np.pi


def test_fill_between():
    vol = np.zeros((7, 32, 32), np.uint8)
    vol[1][disk((32, 32), 16, 16, 4)] = 1
    vol[5][disk((32, 32), 16, 16, 8)] = 1
    vol[3, 0, 0] = 1  # junk the fill replaces
    keep = np.zeros(vol.shape, bool)
    keep[3, 0, 0] = True  # ... unless it was painted by hand
    out, filled = fill_between(vol, [1, 5], (3.0, 1.0, 1.0), keep=keep)
    assert filled == (2, 3, 4)
    assert out[3, 0, 0] == 1 and out[3, 16, 16] == 1
    areas = [out[z].sum() for z in (1, 2, 3, 4, 5)]
    assert all(x < y for x, y in zip(areas, areas[1:]))
    np.testing.assert_array_equal(out[[0, 1, 5, 6]], vol[[0, 1, 5, 6]])
    with pytest.raises(ValueError, match="outside"):
        fill_between(vol, [1, 9])


def test_simulated_user_targets_the_largest_error():
    img, gt, wrong, _ = scene()
    regions = error_regions(wrong, gt)
    assert regions[0][0].sum() >= regions[-1][0].sum()
    s = next_scribble(wrong, gt)
    region, label = regions[0]
    assert s.label == label and s.mask.any() and not (s.mask & ~region).any()
    b = next_brush(wrong, gt)
    assert b.label == label and b.mask.sum() >= s.mask.sum()
    assert not (b.mask & (gt != label)).any()  # the brush radius fits the region
    assert next_scribble(gt, gt) is None


def test_interactive_core_imports_without_gui_packages():
    import subprocess
    import sys

    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('napari', 'qtpy', 'magicgui', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6'):\n"
            "            raise ImportError('blocked: ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import napari_attnseg.interactive, napari_attnseg.interactive.simulate\n"
            "import napari_attnseg.commands._scribbles\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"  # no torch either
