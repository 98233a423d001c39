"""The benchmark's equal-step budget, training seeds, paired comparisons, shared patient split,
class-mean and partial-label scoring, and ``model:`` rows (tiny synthetic data, seconds)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from napari_attnseg.benchmark import bootstrap_ci
from napari_attnseg.benchmark.scoring import class_scores, foreground_target


def _read(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- scoring
def test_class_scores_mean_over_scored_classes_and_skips_absent_ones():
    gt = np.zeros((2, 10, 10), np.uint8)
    pred = np.zeros_like(gt)
    gt[:, 1:5, 1:5] = 1                      # class 1: 32 voxels
    pred[:, 1:5, 1:3] = 1                    # half of it: Dice 2*16/(16+32) = 2/3
    gt[:, 6:9, 6:9] = 2                      # class 2: perfect
    pred[:, 6:9, 6:9] = 2
    # class 3: absent from both -> skipped
    s = class_scores(pred, gt, (1.0, 1.0, 1.0), 4)
    assert s["dice_c1"] == pytest.approx(2 / 3) and s["dice_c2"] == 1.0 and math.isnan(s["dice_c3"])
    assert s["mc_dice"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert s["mc_jaccard"] == pytest.approx((0.5 + 1.0) / 2)
    assert s["mc_sensitivity"] == pytest.approx((0.5 + 1.0) / 2)
    # a class predicted but not in the truth is scored (Dice 0, HD95 = image diagonal)
    pred[0, 0, 9] = 3
    s = class_scores(pred, gt, (1.0, 2.0, 3.0), 4)
    assert s["dice_c3"] == 0.0
    assert s["mc_dice"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
    diag = math.sqrt((2 * 1.0) ** 2 + (10 * 2.0) ** 2 + (10 * 3.0) ** 2)
    assert s["mc_hd95"] >= diag / 3 - 1e-9
    # known classes (partial annotation): class 3 not contoured -> not scored
    s = class_scores(pred, gt, (1.0, 1.0, 1.0), 4, known=(0, 1, 2))
    assert math.isnan(s["dice_c3"]) and s["mc_dice"] == pytest.approx((2 / 3 + 1.0) / 2)


def test_foreground_target_leaves_uncontoured_classes_out():
    gt = np.array([[0, 1, 1, 0, 0]])
    pred = np.array([[0, 1, 3, 3, 2]])  # class 3 not contoured: unknown, not a false positive
    p, g = foreground_target(pred, None, gt, 4, known=(0, 1, 2))
    assert p.tolist() == [[False, True, False, False, True]] and g.tolist() == [[False, True, True, False, False]]
    p, g = foreground_target(pred, None, gt, 4, None)  # fully annotated: every nonzero label
    assert p.tolist() == [[False, True, True, True, True]]
    p, _ = foreground_target(None, np.array([[1, 0, 0, 1, 1]]), gt, 4, (0, 1, 2))  # classical mask: as is
    assert p.tolist() == [[True, False, False, True, True]]


def test_downsample_keeps_known_classes():
    from napari_attnseg.benchmark.datasets import downsample_pair
    from napari_attnseg.training import TrainingPair
    from napari_attnseg.volume import Volume

    img = Volume(np.zeros((2, 8, 8), np.float32), (3.0, 1.0, 1.0))
    pair = TrainingPair(img, img.with_data(np.zeros((2, 8, 8), np.uint8), is_labels=True), None, "p1", (0, 2))
    small = downsample_pair(pair, 2)
    assert small.known == (0, 2) and small.group == "p1" and small.image.shape == (2, 4, 4)


# --------------------------------------------------------------------------- config
def test_config_rejects_bad_steps_seeds_and_split():
    from napari_attnseg.benchmark.runner import BenchmarkConfig, benchmark_job

    with pytest.raises(ValueError, match="steps"):
        BenchmarkConfig(steps=0)
    with pytest.raises(ValueError, match="seeds"):
        BenchmarkConfig(seeds=(1, 1))
    with pytest.raises(ValueError, match="seeds"):
        BenchmarkConfig(seeds=())
    with pytest.raises(ValueError, match="split"):
        BenchmarkConfig(split="kfold")
    assert BenchmarkConfig(seed=3).training_seeds == (3,)
    assert BenchmarkConfig(seeds=[2, 0]).training_seeds == (2, 0)
    with pytest.raises(ValueError, match="multiple of steps_per_epoch"):
        next(benchmark_job(BenchmarkConfig(methods=("unet",), steps=30, steps_per_epoch=20)))
    with pytest.raises(ValueError, match="shared"):
        list(benchmark_job(BenchmarkConfig(dataset="phantoms", methods=("otsu",), split="shared")))


# --------------------------------------------------------------------------- equal steps, seeds
def test_equal_steps_and_seeds_give_paired_comparisons(tmp_path):
    from napari_attnseg.cli import main

    out = tmp_path / "bench"
    rc = main(["benchmark", "phantoms", "--quick", "-q", "--out", str(out), "--threads", "1",
               "--steps", "10", "--seeds", "0", "1", "--budget-seconds", "0.001",
               "--methods", "otsu", "attention_unet", "ablation_no_attention"])
    assert rc == 0
    summary = _read(out / "summary.csv")
    trained = [r for r in summary if r["method"] != "otsu"]
    # equal steps: exactly 10 optimizer steps per network and seed, whatever the seconds
    assert sorted((r["method"], r["seed"]) for r in trained) == [
        ("ablation_no_attention", "0"), ("ablation_no_attention", "1"), ("attention_unet", "0"), ("attention_unet", "1")]
    assert all(int(r["train_steps"]) == 10 for r in trained)
    assert [r["seed"] for r in summary if r["method"] == "otsu"] == [""]
    rows = _read(out / "per_case.csv")
    cases = sorted({r["case"] for r in rows})
    assert len(cases) == 2 and len(rows) == 2 * (1 + 2 + 2)

    def dice(method, seed):
        return np.array([float(r["dice"]) for c in cases for r in rows
                         if r["method"] == method and r["seed"] == seed and r["case"] == c])

    # methods.csv: each case averaged over the seeds, then the bootstrap over cases
    methods = {r["method"]: r for r in _read(out / "methods.csv")}
    per_case = (dice("attention_unet", "0") + dice("attention_unet", "1")) / 2
    mean, lo, hi = bootstrap_ci(per_case, 1000, seed=0)
    m = methods["attention_unet"]
    assert float(m["dice_mean"]) == pytest.approx(mean) and float(m["dice_ci_low"]) == pytest.approx(lo)
    assert m["n_seeds"] == "2" and m["seeds"] == "0 1"
    sd = np.std([dice("attention_unet", "0").mean(), dice("attention_unet", "1").mean()], ddof=1)
    assert float(m["dice_seed_sd"]) == pytest.approx(sd, abs=1e-9)
    # comparisons.csv: A - B paired by seed and case, averaged over seeds, bootstrap over cases
    comp = _read(out / "comparisons.csv")
    assert [(r["a"], r["b"]) for r in comp] == [("attention_unet", "ablation_no_attention")]
    diff = ((dice("attention_unet", "0") - dice("ablation_no_attention", "0"))
            + (dice("attention_unet", "1") - dice("ablation_no_attention", "1"))) / 2
    mean, lo, hi = bootstrap_ci(diff, 1000, seed=0)
    c = comp[0]
    assert float(c["dice_diff_mean"]) == pytest.approx(mean, abs=1e-9)
    assert float(c["dice_diff_ci_low"]) == pytest.approx(lo, abs=1e-9)
    assert float(c["dice_diff_ci_high"]) == pytest.approx(hi, abs=1e-9)
    md = (out / "results.md").read_text()
    assert "10 optimizer steps each" in md and "seeds 0 1" in md and "Paired comparisons" in md
    assert "attention_unet (2 seeds)" in md
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["steps"] == 10 and cfg["config"]["seeds"] == [0, 1]


# --------------------------------------------------------------------------- shared split, model rows
def _fake_acdc(folder, n_patients=10):
    """An ACDC-named Decathlon folder: patients x 2 frames, 3 classes, 1 mm nominal pixdim."""
    import nibabel as nib

    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    training = []
    for p in range(1, n_patients + 1):
        for frame in (1, 8):
            case = f"patient{p:03d}_frame{frame:02d}"
            lab = np.zeros((32, 32, 3), np.uint8)
            r = 4 + (p + frame) % 4
            lab[16 - r:16 + r, 16 - r:16 + r] = 2
            lab[16 - r + 2:16 + r - 2, 16 - r + 2:16 + r - 2] = 3
            lab[2:8, 3:12] = 1
            img = (lab * 0.25 + rng.normal(0, 0.05, lab.shape)).astype(np.float32)
            nib.save(nib.Nifti1Image(img, np.eye(4)), str(folder / "imagesTr" / f"{case}.nii.gz"))
            nib.save(nib.Nifti1Image(lab, np.eye(4)), str(folder / "labelsTr" / f"{case}.nii.gz"))
            training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
    meta = {"name": "ACDC-test", "labels": {"0": "background", "1": "right ventricle", "2": "myocardium",
                                            "3": "left ventricle"}, "modality": {"0": "MR"},
            "training": training, "numTraining": len(training), "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def test_shared_split_class_mean_and_model_rows(tmp_path):
    import torch

    from napari_attnseg.benchmark.report import write_outputs
    from napari_attnseg.benchmark.runner import BenchmarkConfig, benchmark_job
    from napari_attnseg.benchmark.splits import split_subjects
    from napari_attnseg._progress import drain
    from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
    from napari_attnseg.model.checkpoint import ModelSpec, save_model

    data = _fake_acdc(tmp_path / "acdc")
    torch.manual_seed(0)
    arch = UNetConfig(spatial_dims=2, in_channels=1, out_channels=4, channels=(4, 8))
    spec = ModelSpec(arch=arch, label_names={0: "background", 1: "right ventricle", 2: "myocardium",
                                             3: "left ventricle"}, modality="MR",
                     normalization={"preset": "MR"}, patch_size=(32, 32), name="tiny-acdc")
    model_dir = save_model(tmp_path / "tiny-acdc", AttentionUNet(arch).eval(), spec)
    cfg = BenchmarkConfig(dataset=str(data), methods=("otsu", f"model:{model_dir}"), threads=1, n_bootstrap=200)
    result = drain(benchmark_job(cfg))
    _train, test = split_subjects(data)
    assert test == ["patient003", "patient008"]  # every fifth from the third
    assert list(result.split.test_subjects) == test and result.split.split_seed == -1
    assert {c.subject for r in result.results for c in r.cases} == set(test)
    assert len(result.results[0].cases) == 4  # 2 patients x 2 frames
    assert result.spacing_unit == "px" and result.n_classes == 4
    otsu, model = result.results
    assert all(math.isnan(c.metrics.get("mc_dice", math.nan)) for c in otsu.cases)  # binary: no classes
    for c in model.cases:  # the model's label map, scored per class against an independent count
        assert 0.0 <= c.metrics["mc_dice"] <= 1.0 and "dice_c3" in c.metrics
    files = write_outputs(result, tmp_path / "out")
    md = files["markdown"].read_text()
    assert "Mean over classes per case" in md and "HD95 (px)" in md and "split seed" not in md
    rows = _read(files["per_case"])
    assert {r["method"] for r in rows} == {"otsu", f"model:{model_dir}"} and "dice_c2" in rows[0]


def test_train_config_of_equal_steps_and_no_mirror():
    from napari_attnseg.benchmark.methods import get_method
    from napari_attnseg.benchmark.runner import BenchmarkConfig, _train_config

    m = get_method("ablation_no_augmentation")
    tc = _train_config(BenchmarkConfig(steps=300, steps_per_epoch=50), m, (64, 64), 2, mirror=False)
    assert (tc.epochs, tc.steps_per_epoch, tc.max_seconds) == (6, 50, None)
    assert tc.seed == 2 and tc.mirror is False and tc.augment is False
    tc = _train_config(BenchmarkConfig(budget_seconds=7.0), get_method("unet"), (64, 64), 0)
    assert tc.max_seconds == 7.0 and tc.mirror is True and tc.deep_supervision is False


def test_cli_maps_the_new_options(monkeypatch, tmp_path):
    import napari_attnseg.benchmark.runner as runner
    from napari_attnseg.cli import main

    seen = {}

    def fake_job(config):
        seen["config"] = config
        raise SystemExit(0)
        yield  # pragma: no cover

    monkeypatch.setattr(runner, "benchmark_job", fake_job)
    with pytest.raises(SystemExit):
        main(["benchmark", "phantoms", "-q", "--steps", "40", "--steps-per-epoch", "20", "--seeds", "0", "1", "2",
              "--split", "random", "--no-mirror", "--val-fraction", "0.1", "--ac-iterations", "7",
              "--out", str(tmp_path / "o")])
    c = seen["config"]
    assert (c.steps, c.steps_per_epoch, c.seeds, c.split, c.mirror, c.val_fraction, c.ac_iterations) == (
        40, 20, (0, 1, 2), "random", False, 0.1, 7)
