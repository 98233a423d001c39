"""Uncertainty maps and slice ranking against independent numpy / scipy computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import entropy as scipy_entropy

from napari_attnseg.inference.uncertainty import (
    entropy_map,
    flip_disagreement,
    rank_slices,
    slice_scores,
)


def _random_probs(rng, c, shape):
    logits = rng.normal(size=(c, *shape))
    e = np.exp(logits - logits.max(axis=0))
    return (e / e.sum(axis=0)).astype(np.float32)


@pytest.mark.parametrize("c", [2, 3, 5])
def test_entropy_matches_scipy(c):
    rng = np.random.default_rng(c)
    p = _random_probs(rng, c, (3, 5, 4))
    got = entropy_map(p)
    ref = scipy_entropy(p.astype(np.float64), axis=0) / np.log(c)
    assert got.dtype == np.float32 and got.shape == (3, 5, 4)
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_entropy_extremes_and_zero_vectors():
    p = np.zeros((2, 4, 4), np.float32)
    p[0, :2] = 1.0           # certain background
    p[1, 2:3] = 1.0          # certain foreground
    p[:, 3] = 0.5            # uniform
    h = entropy_map(p)
    np.testing.assert_allclose(h[:2], 0.0)
    np.testing.assert_allclose(h[2], 0.0)
    np.testing.assert_allclose(h[3], 1.0, atol=1e-6)
    # an all-zero vector counts as uniform; unnormalised vectors are renormalised
    q = np.zeros((3, 1, 2), np.float32)
    q[:, 0, 1] = [2.0, 2.0, 2.0]
    np.testing.assert_allclose(entropy_map(q), 1.0, atol=1e-6)


def test_entropy_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        entropy_map(np.ones((1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="floating"):
        entropy_map(np.ones((2, 4, 4), np.int32))


def test_flip_disagreement_matches_explicit_variance():
    rng = np.random.default_rng(0)
    c = 3
    members = [_random_probs(rng, c, (2, 6, 5)) for _ in range(4)]
    got = flip_disagreement(members)
    stack = np.stack([m.astype(np.float64) for m in members])  # (M, C, ...)
    mean = stack.mean(axis=0)
    ref = (((stack - mean) ** 2).mean(axis=0)).sum(axis=0) / (1 - 1 / c)
    assert got.dtype == np.float32 and got.shape == (2, 6, 5)
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_flip_disagreement_bounds():
    a = np.zeros((2, 3, 3), np.float32)
    a[0] = 1
    b = np.zeros((2, 3, 3), np.float32)
    b[1] = 1
    np.testing.assert_allclose(flip_disagreement([a, a, a]), 0.0)
    np.testing.assert_allclose(flip_disagreement([a, b]), 1.0)   # one-hot, evenly split
    with pytest.raises(ValueError, match="at least 2"):
        flip_disagreement([a])
    with pytest.raises(ValueError, match="shape"):
        flip_disagreement([a, a[:, :2]])


def test_rank_slices_mean_and_reviewed():
    rng = np.random.default_rng(3)
    u = rng.random((7, 8, 9)).astype(np.float32)
    means = [float(u[i].astype(np.float64).mean()) for i in range(7)]
    expected = sorted(range(7), key=lambda i: -means[i])
    ranked = rank_slices(u)
    assert [i for i, _ in ranked] == expected
    np.testing.assert_allclose([s for _, s in ranked], [means[i] for i in expected], rtol=1e-6)
    # reviewed given as indices or as flags: those slices disappear
    top = expected[0]
    skip = [top, expected[3]]
    by_idx = rank_slices(u, reviewed=skip)
    flags = np.zeros(7, bool)
    flags[skip] = True
    by_flags = rank_slices(u, reviewed=flags)
    assert by_idx == by_flags
    assert [i for i, _ in by_idx] == [i for i in expected if i not in skip]
    assert len(rank_slices(u, reviewed=skip, top_k=2)) == 2
    assert rank_slices(u, reviewed=np.ones(7, bool)) == []


def test_rank_slices_quantile_axis_and_ties():
    rng = np.random.default_rng(4)
    u = rng.random((4, 5, 6))
    scores = slice_scores(u, axis=2, statistic="quantile", q=0.9)
    ref = [np.quantile(u[:, :, i], 0.9) for i in range(6)]
    np.testing.assert_allclose(scores, ref)
    ranked = rank_slices(u, axis=2, statistic="quantile")
    assert [i for i, _ in ranked] == list(np.argsort(-np.asarray(ref), kind="stable"))
    # ties: lower index first
    flat = np.zeros((3, 2, 2))
    assert [i for i, _ in rank_slices(flat)] == [0, 1, 2]


def test_rank_slices_errors():
    u = np.zeros((3, 4, 4))
    with pytest.raises(ValueError, match="outside"):
        rank_slices(u, reviewed=[5])
    with pytest.raises(ValueError, match="one per slice"):
        rank_slices(u, reviewed=np.zeros(4, bool))
    with pytest.raises(ValueError, match="did you mean"):
        rank_slices(u, statistic="meen")
    with pytest.raises(ValueError, match="axis"):
        rank_slices(u, axis=3)


def test_flip_uncertainty_job_matches_manual_flips(tmp_path):
    """The job's members equal predictions of flipped inputs flipped back (computed here)."""
    torch = pytest.importorskip("torch")
    from napari_attnseg._progress import drain
    from napari_attnseg.inference.predictor import PredictConfig, intensity_for, predict_job
    from napari_attnseg.inference.uncertainty import flip_uncertainty_job
    from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
    from napari_attnseg.model.checkpoint import ModelSpec, load_model, save_model
    from napari_attnseg.volume import Volume

    torch.manual_seed(0)
    cfg = UNetConfig(spatial_dims=2, out_channels=2, channels=(4, 8, 16))
    spec = ModelSpec(arch=cfg, label_names={0: "bg", 1: "fg"}, modality="CT", patch_size=(32, 32))
    model = load_model(save_model(tmp_path / "m", AttentionUNet(cfg), spec))
    rng = np.random.default_rng(1)
    vol = Volume(rng.normal(0, 300, (3, 24, 20)).astype(np.float32), spacing=(2.0, 1.0, 1.0),
                 modality="CT")
    pc = PredictConfig(device="cpu")
    flips = ((), (-1,), (-2, -1))
    job = flip_uncertainty_job(model, vol, pc, flips=flips)
    res = drain(job)
    ip = intensity_for(model, vol, pc)
    members = []
    for f in flips:
        v = vol.with_data(np.ascontiguousarray(np.flip(vol.data, f)) if f else vol.data)
        p = drain(predict_job(model, v, pc, intensity=ip)).probabilities
        members.append(np.flip(p, tuple(a for a in f)) if f else p)
    np.testing.assert_allclose(res.probabilities, np.mean(members, axis=0), atol=1e-5)
    np.testing.assert_allclose(res.disagreement, flip_disagreement(members), atol=1e-5)
    np.testing.assert_allclose(res.entropy, entropy_map(np.mean(members, axis=0)), atol=1e-5)
    assert res.entropy.shape == vol.shape and res.entropy.dtype == np.float32
    # an untrained net is not flip-equivariant: the members really differ
    assert float(res.disagreement.max()) > 0
