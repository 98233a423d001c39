"""The benchmark: bootstrap CIs against independent computations, the fixed subject split, the
per-case scoring, and a --quick run on phantoms writing every output."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from napari_attnseg.benchmark import apply_split, bootstrap_ci, fixed_split, parse_methods
from napari_attnseg.volume import Volume


# --------------------------------------------------------------------------- bootstrap
def test_bootstrap_ci_matches_normal_theory_and_scipy():
    x = np.random.default_rng(123).normal(0.8, 0.1, size=400)
    mean, lo, hi = bootstrap_ci(x, n_resamples=2000, seed=0)
    assert mean == pytest.approx(x.mean(), abs=1e-12)
    assert lo < mean < hi
    # normal-theory 95 % interval of the mean: mean +- 1.96 s / sqrt(n)
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert lo == pytest.approx(mean - half, abs=0.15 * half)
    assert hi == pytest.approx(mean + half, abs=0.15 * half)
    # scipy's percentile bootstrap (its own random stream) agrees within Monte-Carlo error
    stats = pytest.importorskip("scipy.stats")
    ref = stats.bootstrap((x,), np.mean, n_resamples=2000, method="percentile", confidence_level=0.95,
                          random_state=np.random.default_rng(5)).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.1 * half)
    assert hi == pytest.approx(ref.high, abs=0.1 * half)


def test_bootstrap_ci_exact_percentiles_of_resampled_means():
    # independent computation: enumerate resamples one by one from the documented draws
    x = np.array([0.1, 0.5, 0.9, 0.3, 0.7])
    rng = np.random.default_rng(7)
    idx = rng.integers(0, 5, size=(1000, 5))
    means = sorted(sum(x[i] for i in row) / 5 for row in idx.tolist())
    # np.percentile linear interpolation at 2.5 % and 97.5 % of 1000 sorted values
    def pct(q):
        pos = q / 100 * (len(means) - 1)
        f = math.floor(pos)
        return means[f] + (pos - f) * (means[min(f + 1, len(means) - 1)] - means[f])
    m, lo, hi = bootstrap_ci(x, n_resamples=1000, seed=7)
    assert m == pytest.approx(0.5)
    assert lo == pytest.approx(pct(2.5), abs=1e-12)
    assert hi == pytest.approx(pct(97.5), abs=1e-12)
    assert bootstrap_ci(x, 1000, seed=7) == (m, lo, hi)  # seeded: reproducible


def test_bootstrap_ci_edge_cases():
    assert bootstrap_ci([0.4, 0.4, 0.4]) == pytest.approx((0.4, 0.4, 0.4), abs=1e-12)
    assert bootstrap_ci([0.7]) == (0.7, 0.7, 0.7)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    m, lo, hi = bootstrap_ci([1.0, float("nan"), 3.0], seed=1)
    assert m == 2.0 and 1.0 <= lo <= hi <= 3.0
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci([1.0, 2.0], n_resamples=0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0, 2.0], level=1.5)


# --------------------------------------------------------------------------- split / methods / scoring
def _pairs(groups):
    from napari_attnseg.training import TrainingPair

    img = Volume(np.zeros((4, 4), np.float32), (1.0, 1.0))
    return [TrainingPair(img, img.with_data(np.zeros((4, 4), np.uint8), is_labels=True), None, g) for g in groups]


def test_fixed_split_keeps_subjects_together_and_is_deterministic():
    groups = [f"{s:03d}" for s in range(20) for _ in range(1 + s % 3)]  # 1-3 images per subject
    pairs = _pairs(groups)
    s1 = fixed_split(pairs, split_seed=0, test_fraction=0.2)
    assert s1 == fixed_split(pairs, split_seed=0, test_fraction=0.2)
    assert len(s1.test_subjects) == 4 and not set(s1.test_subjects) & set(s1.train_subjects)
    assert set(s1.test_subjects) | set(s1.train_subjects) == set(groups)
    tr, te = apply_split(pairs, s1)
    assert {p.group for p in te} == set(s1.test_subjects)
    assert len(tr) + len(te) == len(pairs)
    assert fixed_split(pairs, split_seed=1).test_subjects != s1.test_subjects
    with pytest.raises(ValueError, match="at least 3 subjects"):
        fixed_split(_pairs(["a", "b"]))


def test_parse_methods_order_aliases_and_typos():
    names = [m.name for m in parse_methods(["attention_unet", "otsu,ablation"])]
    assert names == ["otsu", "attention_unet", "ablation_no_attention", "ablation_no_deep_supervision",
                     "ablation_no_augmentation"]
    assert len(parse_methods(["all"])) == 10
    with pytest.raises(ValueError, match="attention_unet"):
        parse_methods(["atention_unet"])


def test_score_case_against_counts_and_empty_prediction():
    from napari_attnseg.benchmark.runner import score_case

    gt = np.zeros((20, 30), bool)
    gt[5:15, 5:20] = True
    pred = np.zeros_like(gt)
    pred[5:15, 10:25] = True
    m, sub = score_case(pred, gt, (0.5, 0.25))
    tp, fp, fn = (pred & gt).sum(), (pred & ~gt).sum(), (~pred & gt).sum()
    assert m["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["jaccard"] == pytest.approx(tp / (tp + fp + fn))
    assert m["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert m["precision"] == pytest.approx(tp / (tp + fp))
    assert m["hd95"] == pytest.approx(5 * 0.25)  # a pure 5-column shift along x (0.25 mm pixels)
    assert not sub
    m, sub = score_case(np.zeros_like(gt), gt, (0.5, 0.25))
    assert sub and m["dice"] == 0.0
    assert m["hd95"] == pytest.approx(math.hypot(20 * 0.5, 30 * 0.25))


# --------------------------------------------------------------------------- quick run
def test_quick_benchmark_on_phantoms_writes_every_output(tmp_path):
    pytest.importorskip("pydensecrf")
    from napari_attnseg.cli import main

    out = tmp_path / "bench"
    rc = main(["benchmark", "phantoms", "--quick", "-q", "--out", str(out), "--threads", "1",
               "--methods", "otsu", "region_growing", "active_contours", "attention_unet", "attention_unet+crf"])
    assert rc == 0
    for name in ("per_case.csv", "summary.csv", "results.md", "benchmark.png", "split.json", "config.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    with open(out / "per_case.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    methods = ["otsu", "region_growing", "active_contours", "attention_unet", "attention_unet+crf"]
    assert [r["method"] for r in rows] == [m for m in methods for _ in range(2)]  # 2 test cases each
    split = json.loads((out / "split.json").read_text())
    assert {r["subject"] for r in rows} == set(split["test_subjects"])
    assert not set(split["test_subjects"]) & set(split["train_subjects"])
    with open(out / "summary.csv", newline="") as fh:
        summary = {r["method"]: r for r in csv.DictReader(fh)}
    for m in methods:
        dice = [float(r["dice"]) for r in rows if r["method"] == m]
        assert all(0.0 <= d <= 1.0 for d in dice)
        mean, lo, hi = bootstrap_ci(dice, 1000, seed=0)  # the --quick resamples, seed 0
        s = summary[m]
        assert float(s["dice_mean"]) == pytest.approx(np.mean(dice), abs=1e-9)
        assert float(s["dice_ci_low"]) == pytest.approx(lo, abs=1e-9)
        assert float(s["dice_ci_high"]) == pytest.approx(hi, abs=1e-9)
        assert lo - 1e-12 <= mean <= hi + 1e-12
    assert float(summary["attention_unet"]["train_seconds"]) > 0
    assert summary["otsu"]["train_seconds"] == ""
    md = (out / "results.md").read_text()
    assert "| attention_unet+crf |" in md and "bootstrap" in md


def test_phantom_decathlon_folder_reads_back(tmp_path):
    from napari_attnseg.benchmark.datasets import phantom_pairs
    from napari_attnseg.training.dataset import read_dataset

    folder = write_phantom_decathlon_small(tmp_path / "ds")
    pairs, info = read_dataset(folder)
    ref = phantom_pairs("ct", 3, 4, (8, 32, 32))
    assert info.modality == "CT" and info.label_names == {0: "background", 1: "organ", 2: "lesion"}
    assert len(pairs) == 3
    for p, r in zip(pairs, ref):
        np.testing.assert_array_equal(np.asarray(p.image.data), np.asarray(r.image.data))
        np.testing.assert_array_equal(np.asarray(p.labels.data), np.asarray(r.labels.data))
        assert np.allclose(p.image.spacing, r.image.spacing)
    with pytest.raises(ValueError, match="not empty"):
        write_phantom_decathlon_small(folder)


def write_phantom_decathlon_small(folder):
    from napari_attnseg.benchmark import write_phantom_decathlon

    return write_phantom_decathlon(folder, "ct", 3, seed=4, shape=(8, 32, 32))
