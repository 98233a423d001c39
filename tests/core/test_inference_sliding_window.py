"""Sliding-window blending, Gaussian weights, padding, cancelling, TTA (no napari)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_attnseg._progress import Progress, drain
from napari_attnseg.inference.sliding_window import (
    compute_steps,
    count_windows,
    gaussian_importance,
    labels_from_probabilities,
    mirror_axes_sets,
    sliding_window_job,
)


def _conv_net(dims: int, cin: int = 1, k: int = 3, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
    return torch.nn.Sequential(conv(cin, 4, 3, padding=1), torch.nn.Tanh(),
                               conv(4, k, 3, padding=1)).eval()


def test_one_patch_equals_single_forward_2d_and_3d():
    for dims, shape in ((2, (32, 48)), (3, (8, 16, 16))):
        net = _conv_net(dims)
        img = np.random.default_rng(1).normal(size=(1,) + shape).astype(np.float32)
        probs = drain(sliding_window_job(net, img, shape, overlap=0.5, num_classes=3))
        with torch.inference_mode():
            ref = torch.softmax(net(torch.from_numpy(img)[None]), 1)[0].numpy()
        assert probs.dtype == np.float32 and probs.shape == (3,) + shape
        np.testing.assert_allclose(probs, ref, atol=1e-6)


def test_translation_equivariant_net_gives_same_result_with_overlap():
    # a purely local (pointwise) net: every window predicts the same per voxel, so blending with
    # any weights must reproduce the single forward exactly (up to rounding)
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 2, 1).eval()
    img = np.random.default_rng(2).normal(size=(1, 70, 53)).astype(np.float32)
    probs = drain(sliding_window_job(net, img, (32, 32), overlap=0.5, batch_size=3))
    with torch.inference_mode():
        ref = torch.softmax(net(torch.from_numpy(img)[None]), 1)[0].numpy()
    np.testing.assert_allclose(probs, ref, atol=1e-5)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)


def test_gaussian_weights_never_zero_and_peak_at_centre():
    for patch in ((64, 64), (128, 128, 128), (1, 96, 96), (5, 7)):
        w = gaussian_importance(patch)
        assert w.shape == patch and w.dtype == np.float32
        assert w.min() > 0
        assert w.max() == pytest.approx(1.0)
    w = gaussian_importance((9, 9))
    assert w[4, 4] == w.max() and w[0, 0] < w[4, 2]
    # symmetric (so mirror TTA sees the same weights)
    np.testing.assert_array_equal(w, w[::-1, ::-1])
    # sigma = patch / 8: one sigma from the centre the weight is exp(-1/2)
    w = gaussian_importance((1, 81))
    assert w[0, 40 + 10] == pytest.approx(np.exp(-0.5 * (10 / (81 / 8)) ** 2), rel=1e-5)


def test_steps_cover_the_axis():
    for size, patch, ov in ((100, 32, 0.5), (33, 32, 0.25), (32, 32, 0.5), (500, 128, 0.0)):
        steps = compute_steps(size, patch, ov)
        assert steps[0] == 0 and steps[-1] == max(0, size - patch)
        assert all(b - a <= patch * (1 - ov) + 1 for a, b in zip(steps, steps[1:]))
    assert compute_steps(100, 32, 0.5) == [0, 14, 27, 41, 54, 68]


@pytest.mark.parametrize("shape,patch,div", [
    ((13, 29), (16, 16), 8),         # smaller than the patch on one axis, odd sizes
    ((5, 23, 41), (8, 16, 16), 4),   # 3D odd shape
    ((3, 37, 19), (32, 32), 8),      # 2D model slice by slice over a volume
    ((1, 1, 1), (8, 8, 8), 8),
])
def test_odd_shapes_round_trip(shape, patch, div):
    dims = len(patch)
    seen = []

    def fn(x):
        seen.append(tuple(x.shape[2:]))
        assert all(s % div == 0 for s in x.shape[2:])
        return _conv_net(dims, k=2)(x)

    img = np.random.default_rng(0).normal(size=(1,) + shape).astype(np.float32)
    probs = drain(sliding_window_job(fn, img, patch, overlap=0.5, divisor=div))
    assert probs.shape == (2,) + shape
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    assert seen and len(seen[0]) == dims


def test_slicewise_2d_equals_per_slice_forward():
    net = _conv_net(2)
    img = np.random.default_rng(3).normal(size=(1, 6, 16, 24)).astype(np.float32)
    probs = drain(sliding_window_job(net, img, (16, 24), batch_size=4))
    with torch.inference_mode():
        ref = torch.softmax(net(torch.from_numpy(img[0])[:, None]), 1).permute(1, 0, 2, 3).numpy()
    np.testing.assert_allclose(probs, ref, atol=1e-6)
    assert count_windows((6, 16, 24), (16, 24)) == 6


def test_progress_per_batch_and_cancel_within_one_batch():
    calls = []

    def fn(x):
        calls.append(x.shape[0])
        return torch.zeros((x.shape[0], 2) + tuple(x.shape[2:]))

    img = np.zeros((1, 64, 64), np.float32)
    n = count_windows((64, 64), (16, 16), 0.5)
    job = sliding_window_job(fn, img, (16, 16), overlap=0.5, batch_size=4)
    reports = []
    for p in job:
        assert isinstance(p, Progress)
        reports.append(p)
        if p.done == 2:
            job.close()  # the cancel signal
            break
    assert len(calls) == 2  # stopped right after the second batch
    assert n > 8 and reports[-1].total == -(-n // 4)
    # the generator is finished: nothing more runs
    with pytest.raises(StopIteration):
        next(job)
    assert len(calls) == 2


def test_mirror_tta_averages_flips():
    assert len(mirror_axes_sets(2)) == 4 and len(mirror_axes_sets(3)) == 8
    net = _conv_net(2, k=2)
    img = np.random.default_rng(4).normal(size=(1, 16, 16)).astype(np.float32)
    probs = drain(sliding_window_job(net, img, (16, 16), tta=True))
    x = torch.from_numpy(img)[None]
    with torch.inference_mode():
        ref = sum(torch.flip(torch.softmax(net(torch.flip(x, d)), 1), d)
                  for d in ([], [2], [3], [2, 3])) / 4
    np.testing.assert_allclose(probs, ref[0].numpy(), atol=1e-6)


def test_fp16_accumulator_and_logits():
    torch.manual_seed(0)
    point = torch.nn.Conv3d(1, 3, 1).eval()  # pointwise: the blend weights cancel exactly
    img3 = np.random.default_rng(5).normal(size=(1, 20, 40, 40)).astype(np.float32)
    p32 = drain(sliding_window_job(point, img3, (8, 16, 16)))
    p16 = drain(sliding_window_job(point, img3, (8, 16, 16), accumulator_dtype=torch.float16))
    assert p16.dtype == np.float32
    np.testing.assert_allclose(p16, p32, atol=5e-3)
    np.testing.assert_allclose(p16.sum(0), 1.0, atol=3e-3)  # no voxel lost to underflow
    net = _conv_net(2, k=2)
    img = np.random.default_rng(5).normal(size=(1, 40, 40)).astype(np.float32)
    logits = drain(sliding_window_job(net, img, (40, 40), return_logits=True))
    with torch.inference_mode():
        ref = net(torch.from_numpy(img)[None])[0].numpy()
    np.testing.assert_allclose(logits, ref, atol=1e-5)


def test_labels_dtype():
    p = np.zeros((3, 4, 4), np.float32)
    p[2, 1, 1] = 1
    lab = labels_from_probabilities(p)
    assert lab.dtype == np.uint8 and lab[1, 1] == 2 and lab.sum() == 2
    big = np.zeros((300, 2, 2), np.float32)
    big[299, 0, 0] = 1
    lab = labels_from_probabilities(big)
    assert lab.dtype == np.uint16 and lab[0, 0] == 299


def test_bad_parameters_are_rejected():
    img = np.zeros((1, 8, 8), np.float32)
    with pytest.raises(ValueError, match="overlap"):
        drain(sliding_window_job(lambda x: x, img, (8, 8), overlap=1.0))
    with pytest.raises(ValueError, match="batch_size"):
        drain(sliding_window_job(lambda x: x, img, (8, 8), batch_size=0))
    with pytest.raises(ValueError, match="patch size"):
        drain(sliding_window_job(lambda x: x, img, (8, 8, 8, 8)))
    with pytest.raises(ValueError, match="channels-first"):
        drain(sliding_window_job(lambda x: x, np.zeros((8, 8)), (8, 8)))
