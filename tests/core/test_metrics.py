"""Metrics checked against independent computations: brute-force loops and all-pairs distances
on small arrays, analytic shapes at anisotropic spacing, and MONAI when installed."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from napari_attnseg.errors import GeometryError
from napari_attnseg.metrics import (
    DEFINITIONS,
    METRICS,
    MetricsReport,
    combine_reports,
    confusion_counts,
    directed_surface_distances,
    error_overlay,
    evaluate,
    overlap_metrics,
    per_slice_dice,
    present_labels,
    surface_dice,
    surface_distances,
    surface_voxels,
    volume_metrics,
)


# ----------------------------------------------------------------------------- references
def brute_surface(mask: np.ndarray) -> np.ndarray:
    """Voxel loop: a mask voxel with a face neighbour outside the mask or the array."""
    out = np.zeros(mask.shape, bool)
    for idx in zip(*np.nonzero(mask)):
        for ax in range(mask.ndim):
            for step in (-1, 1):
                n = list(idx)
                n[ax] += step
                if not 0 <= n[ax] < mask.shape[ax] or not mask[tuple(n)]:
                    out[idx] = True
    return out


def brute_distances(p: np.ndarray, g: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """All-pairs distances between surface-voxel centres (mm)."""
    a = np.argwhere(brute_surface(p)) * np.asarray(spacing, float)
    b = np.argwhere(brute_surface(g)) * np.asarray(spacing, float)
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    return d.min(1), d.min(0)


def random_blob(rng, shape, n=3, r=(2, 5)) -> np.ndarray:
    grids = np.indices(shape)
    m = np.zeros(shape, bool)
    for _ in range(n):
        c = [rng.uniform(0, s) for s in shape]
        rad = rng.uniform(*r)
        m |= sum((gi - ci) ** 2 for gi, ci in zip(grids, c)) < rad ** 2
    return m


# ----------------------------------------------------------------------------- overlap
def test_confusion_counts_match_brute_force_multilabel():
    rng = np.random.default_rng(1)
    pred = rng.integers(0, 4, (9, 11, 7)).astype(np.uint8)
    gt = rng.integers(0, 4, (9, 11, 7)).astype(np.int32)
    for label in (1, 2, 3):
        tp = fp = fn = tn = 0
        for a, b in zip(pred.ravel(), gt.ravel()):
            pa, gb = a == label, b == label
            tp += pa and gb
            fp += pa and not gb
            fn += gb and not pa
            tn += not pa and not gb
        assert confusion_counts(pred, gt, label) == (tp, fp, fn, tn)


def test_confusion_counts_bool_and_uint8_views_agree():
    rng = np.random.default_rng(2)
    p = rng.random((20, 20)) > 0.5
    g = rng.random((20, 20)) > 0.4
    ref = confusion_counts(p, g)
    assert confusion_counts(p.astype(np.uint8), g.astype(np.uint8)) == ref
    assert confusion_counts(p.astype(np.int16), g.astype(np.float32)) == ref
    # uint8 holding label 2 only is not a 0/1 mask: the view shortcut must not apply
    assert confusion_counts((p * 2).astype(np.uint8), g.astype(np.uint8)) == (0, 0, int(g.sum()),
                                                                              int((~g).sum()))


def test_confusion_counts_blocked_path_large_arrays(monkeypatch):
    """Arrays larger than one block go through the blocked AND; compare with plain numpy."""
    import napari_attnseg.metrics.overlap as ov

    monkeypatch.setattr(ov, "_CHUNK", 1000)  # many blocks, a ragged last one
    rng = np.random.default_rng(9)
    p = rng.random((13, 17, 19)) > 0.3
    g = rng.random((13, 17, 19)) > 0.6
    tp = int((p & g).sum())
    assert confusion_counts(p, g) == (tp, int(p.sum()) - tp, int(g.sum()) - tp,
                                      int((~p & ~g).sum()))
    assert confusion_counts(p.astype(np.uint8), g.astype(np.uint8)) == confusion_counts(p, g)
    assert confusion_counts(p[:, ::2], g[:, ::2])[0] == int((p[:, ::2] & g[:, ::2]).sum())


def test_overlap_two_offset_squares():
    a = np.zeros((40, 40), bool)
    b = np.zeros((40, 40), bool)
    a[5:15, 5:15] = True  # 100 px
    b[5:15, 10:20] = True  # shifted by 5 columns: 50 px overlap
    m = overlap_metrics(a, b)
    assert m["dice"] == pytest.approx(0.5)
    assert m["jaccard"] == pytest.approx(50 / 150)
    assert m["sensitivity"] == pytest.approx(0.5)
    assert m["precision"] == pytest.approx(0.5)
    assert m["specificity"] == pytest.approx((1600 - 150) / (1600 - 100))


def test_overlap_empty_policy():
    z = np.zeros((5, 5), np.uint8)
    o = z.copy()
    o[1:3, 1:3] = 1
    both = overlap_metrics(z, z)
    assert both["dice"] == 1.0 and both["jaccard"] == 1.0
    assert math.isnan(both["sensitivity"]) and math.isnan(both["precision"])
    assert both["specificity"] == 1.0
    pe = overlap_metrics(z, o)  # empty prediction
    assert pe["dice"] == 0.0 and pe["jaccard"] == 0.0 and pe["sensitivity"] == 0.0
    assert math.isnan(pe["precision"])
    ge = overlap_metrics(o, z)  # empty ground truth
    assert ge["dice"] == 0.0 and math.isnan(ge["sensitivity"]) and ge["precision"] == 0.0


def test_shape_mismatch_refused():
    with pytest.raises(GeometryError, match="shape"):
        overlap_metrics(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(GeometryError):
        surface_distances(np.zeros((4, 4)), np.zeros((5, 4)), (1, 1))
    with pytest.raises(ValueError, match="spacing"):
        surface_distances(np.ones((4, 4)), np.ones((4, 4)), (1, 1, 1))


def test_volume_metrics():
    a = np.zeros((4, 5, 6), np.uint8)
    g = np.zeros_like(a)
    a[0, :2, :3] = 1  # 6 voxels
    g[1, :2, :2] = 1  # 4 voxels
    v = volume_metrics(a, g, (2.0, 0.5, 0.25))
    assert v["volume_pred_mm3"] == pytest.approx(6 * 0.25)
    assert v["volume_gt_mm3"] == pytest.approx(4 * 0.25)
    assert v["rel_volume_diff"] == pytest.approx(0.5)
    z = np.zeros_like(a)
    assert volume_metrics(z, z, (1, 1, 1))["rel_volume_diff"] == 0.0
    assert volume_metrics(a, z, (1, 1, 1))["rel_volume_diff"] == math.inf


def test_per_slice_dice_matches_loop_and_nan_where_both_empty():
    rng = np.random.default_rng(3)
    p = random_blob(rng, (12, 15, 13))
    g = random_blob(rng, (12, 15, 13))
    p[0] = g[0] = False
    for axis in range(3):
        got = per_slice_dice(p, g, axis=axis)
        for i in range(p.shape[axis]):
            ps, gs = np.take(p, i, axis), np.take(g, i, axis)
            den = ps.sum() + gs.sum()
            if den == 0:
                assert math.isnan(got[i])
            else:
                assert got[i] == pytest.approx(2 * (ps & gs).sum() / den)
    assert math.isnan(per_slice_dice(p, g, axis=0)[0])


def test_error_overlay():
    gt = np.array([[0, 1, 1, 2, 0]])
    pr = np.array([[1, 1, 0, 1, 0]])
    assert error_overlay(pr, gt).tolist() == [[1, 0, 2, 2, 0]]
    assert error_overlay(pr, gt, label=1).tolist() == [[1, 0, 2, 1, 0]]
    assert error_overlay(pr, gt).dtype == np.uint8


def test_present_labels():
    assert present_labels(np.array([0, 3, 3]), np.array([[5, 0]], np.uint16)) == [3, 5]
    assert present_labels(np.zeros(3, bool), np.ones(2, bool)) == [1]
    with pytest.raises(ValueError, match="integer"):
        present_labels(np.array([0.5, 1.0]))


# ----------------------------------------------------------------------------- surfaces
def test_surface_voxels_match_loop_and_erosion():
    from scipy.ndimage import binary_erosion

    rng = np.random.default_rng(4)
    for shape in [(9, 10, 11), (14, 12)]:
        m = random_blob(rng, shape, n=4)
        m[0, 0] = True  # touching the border
        s = surface_voxels(m)
        np.testing.assert_array_equal(s, brute_surface(m))
        np.testing.assert_array_equal(s, m ^ binary_erosion(m))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.7, 1.3)])
def test_surface_distances_match_all_pairs(spacing):
    rng = np.random.default_rng(5)
    for _ in range(4):
        p = random_blob(rng, (10, 12, 11))
        g = random_blob(rng, (10, 12, 11))
        ref_pg, ref_gp = brute_distances(p, g, spacing)
        d_pg, d_gp = directed_surface_distances(p, g, spacing)
        np.testing.assert_allclose(np.sort(d_pg), np.sort(ref_pg), atol=1e-9)
        np.testing.assert_allclose(np.sort(d_gp), np.sort(ref_gp), atol=1e-9)
        m = surface_distances(p, g, spacing, tolerance_mm=1.5)
        allpooled = np.concatenate([ref_pg, ref_gp])
        assert m["hd"] == pytest.approx(allpooled.max())
        assert m["hd95"] == pytest.approx(max(np.percentile(ref_pg, 95), np.percentile(ref_gp, 95)))
        assert m["assd"] == pytest.approx(allpooled.mean())
        assert m["hd_pred_to_gt"] == pytest.approx(ref_pg.max())
        assert m["hd95_gt_to_pred"] == pytest.approx(np.percentile(ref_gp, 95))
        assert m["asd_pred_to_gt"] == pytest.approx(ref_pg.mean())
        assert m["surface_dice"] == pytest.approx((allpooled <= 1.5).mean())
        assert surface_dice(p, g, spacing, 1.5) == pytest.approx(m["surface_dice"])


def test_surface_distances_2d_all_pairs():
    rng = np.random.default_rng(6)
    p = random_blob(rng, (25, 30), r=(3, 8))
    g = random_blob(rng, (25, 30), r=(3, 8))
    ref_pg, ref_gp = brute_distances(p, g, (0.3, 1.7))
    m = surface_distances(p, g, (0.3, 1.7))
    assert m["hd"] == pytest.approx(max(ref_pg.max(), ref_gp.max()))
    assert m["assd"] == pytest.approx(np.concatenate([ref_pg, ref_gp]).mean())


@pytest.mark.parametrize("axis,spacing", [(0, (2.0, 0.5, 0.8)), (2, (2.0, 0.5, 0.8)),
                                          (1, (1.0, 3.0, 1.0))])
def test_shifted_boxes_analytic(axis, spacing):
    """A box and the same box shifted by k voxels along one axis: HD = k * spacing[axis]
    both ways, Dice = (L - k) / L."""
    shape, lo, L, k = (30, 30, 30), 6, 14, 3
    a = np.zeros(shape, bool)
    box = [slice(lo, lo + L)] * 3
    a[tuple(box)] = True
    b = np.zeros(shape, bool)
    box[axis] = slice(lo + k, lo + k + L)
    b[tuple(box)] = True
    assert overlap_metrics(a, b)["dice"] == pytest.approx((L - k) / L)
    m = surface_distances(a, b, spacing)
    assert m["hd"] == pytest.approx(k * spacing[axis])
    assert m["hd_pred_to_gt"] == pytest.approx(k * spacing[axis])
    assert m["hd_gt_to_pred"] == pytest.approx(k * spacing[axis])
    assert 0 < m["assd"] < k * spacing[axis]


def test_offset_spheres_anisotropic():
    """Two balls (radius 10 mm) 4 mm apart on a 0.5 x 1 x 2 mm grid: HD ≈ 4 mm within a voxel
    diagonal, and Dice near the analytic lens volume formula."""
    sp = np.array([0.5, 1.0, 2.0])
    shape = (80, 40, 20)
    z, y, x = np.indices(shape) * sp[:, None, None, None]
    c = np.array([20.0, 20.0, 20.0])
    a = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= 100
    b = (z - c[0] - 4) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= 100
    r, d = 10.0, 4.0
    lens = math.pi * (4 * r + d) * (2 * r - d) ** 2 / 12
    dice_true = lens / (4 / 3 * math.pi * r ** 3)
    assert overlap_metrics(a, b)["dice"] == pytest.approx(dice_true, abs=0.03)
    m = surface_distances(a, b, sp)
    assert abs(m["hd"] - 4.0) <= np.linalg.norm(sp) / 2 + 1e-9
    assert m["hd"] >= m["hd95"] >= m["assd"] > 0


def test_surface_empty_policy():
    z = np.zeros((6, 6, 6), bool)
    o = z.copy()
    o[2:4, 2:4, 2:4] = True
    both = surface_distances(z, z, (1, 1, 1), tolerance_mm=1)
    assert both["hd"] == both["hd95"] == both["assd"] == 0.0 and both["surface_dice"] == 1.0
    for p, g in ((z, o), (o, z)):
        m = surface_distances(p, g, (1, 1, 1), tolerance_mm=1)
        assert m["hd"] == m["hd95"] == m["assd"] == math.inf
        assert m["surface_dice"] == 0.0
    assert surface_dice(o, o, (1, 2, 3), 0.0) == 1.0
    with pytest.raises(ValueError, match="tolerance"):
        surface_dice(o, o, (1, 1, 1), -1)


# ----------------------------------------------------------------------------- reports
def test_evaluate_multilabel_and_report_exports(tmp_path):
    rng = np.random.default_rng(7)
    gt = np.zeros((10, 12, 12), np.uint8)
    gt[random_blob(rng, gt.shape)] = 1
    gt[random_blob(rng, gt.shape)] = 2
    pred = gt.copy()
    pred[random_blob(rng, gt.shape, n=1)] = 3
    rep = evaluate(pred, gt, (2.0, 1.0, 1.0), tolerance_mm=2.0)
    assert [r["label"] for r in rep.rows] == [1, 2, 3]
    for r in rep.rows:
        lab = r["label"]
        assert r["dice"] == pytest.approx(overlap_metrics(pred, gt, lab)["dice"])
        sd = surface_distances(pred, gt, (2, 1, 1), lab, tolerance_mm=2.0)
        for k in ("hd", "hd95", "assd", "surface_dice"):
            assert r[k] == sd[k] or (math.isinf(r[k]) and math.isinf(sd[k]))
    assert rep.value("hd", 3) == math.inf  # label 3 absent from the ground truth
    assert set(METRICS) <= set(rep.columns)
    js = json.loads(rep.to_json(tmp_path / "m.json").read_text())
    assert js["definitions"]["hd95"] == DEFINITIONS["hd95"]
    assert js["spacing_mm"] == [2.0, 1.0, 1.0]
    assert js["rows"][2]["hd"] == "inf"
    text = rep.to_csv(tmp_path / "m.csv").read_text()
    assert text.splitlines()[0].startswith("label,dice,jaccard")
    assert "# hd95:" in text
    md = rep.to_markdown()
    assert md.startswith("| label | dice") and "**assd**" in md


def test_evaluate_candidates_and_combine():
    gt = np.zeros((8, 8), np.uint8)
    gt[2:6, 2:6] = 1
    a = np.roll(gt, 1, axis=1)
    rep = evaluate({"a": a, "same": gt}, gt, (1.0, 1.0))
    assert [r["candidate"] for r in rep.rows] == ["a", "same"]
    assert rep.value("dice", 1, "same") == 1.0 and rep.value("hd", 1, "same") == 0.0
    assert rep.value("dice", 1, "a") == pytest.approx(0.75)
    both = combine_reports({"x": evaluate(a, gt, (1, 1)), "y": evaluate(gt, gt, (1, 1))})
    assert [r["candidate"] for r in both.rows] == ["x", "y"]
    assert isinstance(both, MetricsReport) and both.columns[0] == "candidate"
    empty = evaluate(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), (1, 1))
    assert empty.rows[0]["dice"] == 1.0 and empty.rows[0]["hd"] == 0.0
    with pytest.raises(GeometryError, match="candidate 'bad'"):
        evaluate({"bad": np.zeros((3, 3))}, gt, (1, 1))


# ----------------------------------------------------------------------------- MONAI
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (3.0, 0.8, 0.6)])
def test_matches_monai(spacing):
    pytest.importorskip("monai")
    import torch
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
        compute_surface_dice,
    )

    rng = np.random.default_rng(8)
    for _ in range(3):
        p = random_blob(rng, (24, 30, 28), n=3, r=(4, 9))
        g = random_blob(rng, (24, 30, 28), n=3, r=(4, 9))
        if not p.any() or not g.any():
            continue
        P = torch.from_numpy(p)[None, None].float()
        G = torch.from_numpy(g)[None, None].float()
        kw = dict(include_background=True, spacing=list(spacing))
        hd = float(compute_hausdorff_distance(P, G, **kw))
        hd95 = float(compute_hausdorff_distance(P, G, percentile=95, **kw))
        assd = float(compute_average_surface_distance(P, G, symmetric=True, **kw))
        nsd = float(compute_surface_dice(P, G, [2.0], **kw))
        m = surface_distances(p, g, spacing, tolerance_mm=2.0)
        assert m["hd"] == pytest.approx(hd, abs=1e-4)
        assert m["hd95"] == pytest.approx(hd95, abs=1e-4)
        assert m["assd"] == pytest.approx(assd, abs=1e-4)
        assert m["surface_dice"] == pytest.approx(nsd, abs=1e-4)
        from monai.metrics import compute_dice

        assert overlap_metrics(p, g)["dice"] == pytest.approx(float(compute_dice(P, G)), abs=1e-6)


def test_definitions_cover_every_metric():
    for k in METRICS:
        assert k in DEFINITIONS and len(DEFINITIONS[k]) > 15


@pytest.mark.shared_data
def test_real_spleen_mask_matches_monai(shared_data):
    """The CT spleen mask (0.79 x 0.79 x 5 mm) against a shifted, eroded copy: MONAI agrees."""
    pytest.importorskip("monai")
    import nibabel as nib
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance
    from scipy.ndimage import binary_erosion

    img = nib.load(shared_data / "ct_spleen" / "spleen_mask.nii.gz")
    gt = np.asarray(img.dataobj).transpose(2, 1, 0) > 0  # (z, y, x)
    spacing = tuple(float(s) for s in img.header.get_zooms()[:3][::-1])
    pred = np.roll(binary_erosion(gt, iterations=2), 3, axis=2)
    P = torch.from_numpy(pred)[None, None].float()
    G = torch.from_numpy(gt)[None, None].float()
    kw = dict(include_background=True, spacing=list(spacing))
    m = surface_distances(pred, gt, spacing)
    assert m["hd95"] == pytest.approx(float(compute_hausdorff_distance(P, G, percentile=95, **kw)),
                                      abs=1e-4)
    assert m["assd"] == pytest.approx(
        float(compute_average_surface_distance(P, G, symmetric=True, **kw)), abs=1e-4)
    assert m["hd"] == pytest.approx(float(compute_hausdorff_distance(P, G, **kw)), abs=1e-4)
