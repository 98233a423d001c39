"""The machinery of benchmarks/bench_annotation_efficiency.py on a tiny phantom (fast)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_annotation_efficiency.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_annotation_efficiency", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_select_slices_evenly_spaced_over_foreground(bench):
    gt = np.zeros((20, 4, 4), np.uint8)
    gt[5:15, 1, 1] = 1  # foreground on slices 5..14
    assert bench.select_slices(gt, 0) == []
    assert bench.select_slices(gt, 1) == [10]
    assert bench.select_slices(gt, 2) == [7, 12]
    assert bench.select_slices(gt, 5) == [6, 8, 10, 12, 14]
    assert bench.select_slices(gt, 10) == list(range(5, 15))
    with pytest.raises(ValueError, match="only 10 slices"):
        bench.select_slices(gt, 11)


def test_score_excludes_reviewed_slices(bench):
    gt = np.zeros((6, 8, 8), np.uint8)
    gt[1:5, 2:6, 2:6] = 1  # 16 voxels on slices 1..4
    pred = gt.copy()
    pred[1] = 0  # slice 1 missed completely
    pred[2, 2:4, 2:6] = 0  # slice 2: half missed (8 of 16)
    pred[5, 0, 0] = 1  # one false positive on the empty, unreviewed slice 5
    # reviewed slice 1 is excluded: scored slices 2, 3, 4
    s = bench.score_unreviewed(pred, gt, [1])
    assert s["scored_slices"] == [2, 3, 4]
    tp, fn = 8 + 16 + 16, 8
    assert s["dice_3d"] == pytest.approx(2 * tp / (2 * tp + fn))
    assert s["dice_slice_mean"] == pytest.approx(np.mean([2 * 8 / (8 + 16), 1.0, 1.0]))
    assert s["fp_voxels_empty"] == 1
    # not excluding it would score the missed slice: the result must differ
    s0 = bench.score_unreviewed(pred, gt, [])
    assert s0["n_scored"] == 4 and s0["dice_3d"] < s["dice_3d"]
    with pytest.raises(ValueError, match="no unreviewed slice"):
        bench.score_unreviewed(pred, gt, [1, 2, 3, 4])


def _tiny_base(registry):
    from napari_attnseg.model import AttentionUNet, ModelSpec, UNetConfig, load_model

    torch.manual_seed(0)
    arch = UNetConfig(out_channels=3, channels=(4, 8, 16))
    spec = ModelSpec(arch=arch, label_names={0: "background", 1: "organ", 2: "lesion"}, modality="CT",
                     normalization={"preset": "CT"}, patch_size=(32, 32), name="tiny-base")
    entry = registry.add_version("tiny-base", AttentionUNet(arch), spec)
    return load_model(entry.path)


def _tiny_case():
    from napari_attnseg.sample.phantoms import ct_phantom

    image, labels = ct_phantom(seed=3, shape=(10, 40, 40), spacing=(2.5, 2.0, 2.0))
    return image, (np.asarray(labels.data) > 0).astype(np.uint8)


def test_curve_machinery_on_phantom(bench, tmp_path):
    from napari_attnseg.inference.predictor import PredictConfig, predict
    from napari_attnseg.model import ModelRegistry
    image, gt = _tiny_case()
    registry = ModelRegistry(root=tmp_path / "reg", shipped_root=tmp_path / "none")
    base = _tiny_base(registry)
    before = {k: v.clone() for k, v in base.network.state_dict().items()}
    rows = bench.run_curve(base, image, gt, [0, 1, 2], seconds=0.5, registry=registry, case="tiny",
                           val_mode="split", threads=1, batch_size=2, log=lambda _s: None)
    assert [r["k"] for r in rows] == [0, 1, 2]
    r0, r1, r2 = rows
    # k = 0: no training, the base model's prediction scored on every foreground slice
    assert r0["steps"] == 0 and r0["reviewed"] == [] and r0["n_train"] == 0
    fg = np.flatnonzero(gt.reshape(gt.shape[0], -1).any(1))
    assert r0["scored_slices"] == fg.tolist()
    p = predict(base, image, PredictConfig(device="cpu")).labels[fg] > 0
    g = gt[fg] > 0
    assert r0["dice_3d"] == pytest.approx(2 * (p & g).sum() / (p.sum() + g.sum()))
    # k >= 1: trained from the same base, reviewed slices never scored
    for r in (r1, r2):
        assert r["steps"] >= 1 and r["stopped"] == "time_budget"
        assert len(r["reviewed"]) == r["k"]
        assert not set(r["reviewed"]) & set(r["scored_slices"])
        assert sorted(r["scored_slices"] + r["reviewed"]) == fg.tolist()
    assert (r1["n_train"], r1["n_val"]) == (1, 1)  # one slice: trains and validates on it
    assert (r2["n_train"], r2["n_val"]) == (1, 1)  # the plugin's own split: one held out
    # the fixed "common" set: foreground slices reviewed at no k; same size for every row
    ever = set(r1["reviewed"]) | set(r2["reviewed"])
    common = [s for s in fg.tolist() if s not in ever]
    assert {r["n_common"] for r in rows} == {len(common)}
    pc = predict(base, image, PredictConfig(device="cpu")).labels[common] > 0
    gc = gt[common] > 0
    assert r0["dice_common"] == pytest.approx(2 * (pc & gc).sum() / (pc.sum() + gc.sum()))
    # the base was never modified; a new version was saved (in the given registry only) for each
    # k whose fine-tune beat the base, none for the others
    for k, v in base.network.state_dict().items():
        assert torch.equal(v, before[k]), k
    saved = sum(r["saved"] for r in rows)
    assert [e.version for e in registry.versions("annotation-efficiency")] == [str(i + 1) for i in range(saved)]
    for r in rows[1:]:  # (Dice rounded to 4 digits in the rows)
        assert r["val_after"] >= r["val_before"] if r["saved"] else r["val_after"] <= r["val_before"]
    # outputs
    path = bench.write_csv(rows, tmp_path / "out" / "curve.csv")
    with open(path, newline="") as fh:
        got = list(csv.DictReader(fh))
    assert [int(x["k"]) for x in got] == [0, 1, 2]
    assert float(got[2]["dice_3d"]) == pytest.approx(r2["dice_3d"])
    png = bench.plot(rows, tmp_path / "out" / "curve.png", "tiny")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_val_all_trains_and_validates_on_every_corrected_slice(bench, tmp_path):
    import json

    from napari_attnseg.model import ModelRegistry
    from napari_attnseg.training import finetune as ft_mod

    image, gt = _tiny_case()
    registry = ModelRegistry(root=tmp_path / "reg", shipped_root=tmp_path / "none")
    base = _tiny_base(registry)
    labels = image.with_data(gt, is_labels=True)
    reviewed = bench.select_slices(gt, 3)
    split = ft_mod.split_reviewed_slices
    res, model = bench.finetune_once(base, image, labels, reviewed, 0.3, registry, val_mode="all", threads=1,
                                     batch_size=2)
    assert ft_mod.split_reviewed_slices is split  # the temporary split override is undone
    prov = res.split
    assert [p["slices"] for p in prov["train"]] == [reviewed]
    assert [p["slices"] for p in prov["validation"]] == [reviewed]
    assert res.train_result.steps >= 1
    if res.entry is not None:  # saved (it beat the base): the provenance records the same split
        assert json.loads((Path(res.entry.path) / "config.json").read_text())["provenance"]["split"] == prov
        assert model.spec.parent == base.model_id
    else:  # no improvement: nothing saved, the curve uses the base itself
        assert model is base and res.unchanged
