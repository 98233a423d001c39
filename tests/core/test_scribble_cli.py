"""``attnseg refine --scribbles`` (hard constraints) and ``attnseg finetune --ignore-label``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_attnseg.cli import main
from napari_attnseg.interactive.simulate import slice_dice

nib = pytest.importorskip("nibabel")
pytest.importorskip("pydensecrf.densecrf")


def _disk(shape, cy, cx, r):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


@pytest.fixture
def case(tmp_path):
    """Ring (1) around a disk (2) on 5 slices; 'model' probabilities that call the right half of
    the disk ring; scribbles (255 = none) on slice 2 only."""
    shape = (64, 64)
    gt2 = np.zeros(shape, np.uint8)
    gt2[_disk(shape, 32, 28, 18)] = 1
    gt2[_disk(shape, 32, 28, 9)] = 2
    wrong2 = gt2.copy()
    wrong2[(gt2 == 2) & (np.arange(64)[None, :] > 28)] = 1
    gt, wrong = np.stack([gt2] * 5), np.stack([wrong2] * 5)
    rng = np.random.default_rng(0)
    img = (0.1 + 0.45 * (gt == 1) + 0.9 * (gt == 2) + 0.04 * rng.standard_normal(gt.shape)).astype(np.float32)
    probs = np.full((3,) + gt.shape, 0.05, np.float32)
    np.put_along_axis(probs, wrong[None].astype(np.intp), 0.9, axis=0)
    scr = np.full(gt.shape, 255, np.uint8)
    scr[2, 31:33, 31:36] = 2
    aff = np.diag([1.0, 1.0, 4.0, 1.0])
    nib.save(nib.Nifti1Image(img.T, aff), tmp_path / "img.nii.gz")
    nib.save(nib.Nifti1Image(np.moveaxis(probs, 0, -1).transpose(2, 1, 0, 3).copy(), aff), tmp_path / "p.nii.gz")
    nib.save(nib.Nifti1Image(scr.T.copy(), aff), tmp_path / "scr.nii.gz")
    return tmp_path, gt, wrong, scr, aff


def _read(path):
    return np.asarray(nib.load(str(path)).dataobj).T


def test_refine_with_scribbles_holds_the_strokes_and_fixes_the_slice(case):
    tmp, gt, wrong, scr, aff = case
    common = ["-q", "--mode", "2d", "--workers", "1"]
    assert main(["refine", str(tmp / "p.nii.gz"), str(tmp / "img.nii.gz"), "-o", str(tmp / "plain.nii.gz"),
                 *common]) == 0
    assert main(["refine", str(tmp / "p.nii.gz"), str(tmp / "img.nii.gz"), "-o", str(tmp / "s.nii.gz"),
                 "--scribbles", str(tmp / "scr.nii.gz"), *common]) == 0
    plain, got = _read(tmp / "plain.nii.gz"), _read(tmp / "s.nii.gz")
    drawn = scr != 255
    assert (got[drawn] == scr[drawn]).all()
    assert slice_dice(got[2], gt[2]) > slice_dice(plain[2], gt[2]) + 0.1
    np.testing.assert_array_equal(got[[0, 4]], plain[[0, 4]])  # slices without strokes: as before
    np.testing.assert_allclose(nib.load(str(tmp / "s.nii.gz")).affine, aff)
    side = json.loads((tmp / "s.json").read_text())
    assert "scribbles" in json.dumps(side)


def test_refine_scribbles_errors(case, capsys):
    tmp, gt, wrong, scr, aff = case
    bad = scr.copy()
    bad[0, 0, 0] = 7  # neither a class (0..2) nor the ignore value
    nib.save(nib.Nifti1Image(bad.T.copy(), aff), tmp / "bad.nii.gz")
    assert main(["refine", str(tmp / "p.nii.gz"), str(tmp / "img.nii.gz"), "-o", str(tmp / "o.nii.gz"),
                 "--scribbles", str(tmp / "bad.nii.gz"), "-q"]) == 2
    assert "neither a class" in capsys.readouterr().err
    # with --ignore-label 7 the same file is fine (7 = not annotated, 255 would be a bad class)
    only7 = np.where(scr == 255, 7, scr).astype(np.uint8)
    nib.save(nib.Nifti1Image(only7.T.copy(), aff), tmp / "s7.nii.gz")
    assert main(["refine", str(tmp / "p.nii.gz"), str(tmp / "img.nii.gz"), "-o", str(tmp / "o7.nii.gz"),
                 "--scribbles", str(tmp / "s7.nii.gz"), "--ignore-label", "7", "-q", "--workers", "1"]) == 0
    assert main(["refine", str(tmp / "p.nii.gz"), str(tmp / "img.nii.gz"), "-o", str(tmp / "o8.nii.gz"),
                 "--scribbles", str(tmp / "scr.nii.gz"), "--ignore-label", "-3", "-q"]) == 2


def test_finetune_ignore_label_trains_on_the_strokes_only(tmp_path, monkeypatch):
    """A tiny model trained by ``attnseg train``, then fine-tuned on scribbles: the pairs the
    fine-tune gets hold the strokes as a voxel mask (slices with strokes reviewed), the loss is
    partial CE + the gated-CRF term."""
    import napari_attnseg.training.finetune as ft

    root = tmp_path / "Task01_Tiny"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    for c in range(3):
        lab = np.stack([((yy - 16 - c) ** 2 + (xx - 14 - k) ** 2 < (6 + k) ** 2) for k in range(4)]).astype(np.uint8)
        img = lab * 100.0 + rng.normal(0, 20, lab.shape)
        nib.save(nib.Nifti1Image(img.T.astype(np.float32), aff), root / "imagesTr" / f"case{c}.nii.gz")
        nib.save(nib.Nifti1Image(lab.T, aff), root / "labelsTr" / f"case{c}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"name": "Tiny", "modality": {"0": "MRI"},
                                                   "labels": {"0": "background", "1": "disc"}}))
    assert main(["train", str(root), "--name", "tiny", "--channels", "4", "8", "16", "--epochs", "1",
                 "--steps-per-epoch", "2", "--batch-size", "2", "--patch-size", "16", "16", "--threads",
                 "1", "-q"]) == 0
    lab = _read(root / "labelsTr" / "case0.nii.gz")
    scr = np.full(lab.shape, 255, np.uint8)
    scr[[0, 1, 3], 16, 12:18] = 1
    scr[[0, 1, 3], 1, :] = 0
    nib.save(nib.Nifti1Image(scr.T.copy(), aff), tmp_path / "scr.nii.gz")
    seen = {}
    real = ft.finetune_job

    def spy(base, pairs, config=None, *args, **kwargs):
        seen["pairs"], seen["config"] = pairs, config
        return real(base, pairs, config, *args, **kwargs)

    monkeypatch.setattr(ft, "finetune_job", spy)
    rc = main(["finetune", str(root / "imagesTr" / "case0.nii.gz"), str(tmp_path / "scr.nii.gz"),
               "--base", "tiny", "--ignore-label", "255", "--epochs", "1", "--steps-per-epoch", "2",
               "--batch-size", "2", "--patch-size", "16", "16", "--threads", "1", "-q"])
    assert rc == 0
    (pair,) = seen["pairs"]
    np.testing.assert_array_equal(pair.reviewed, scr != 255)
    assert set(np.unique(pair.labels.data[scr == 255])) == {0}
    assert seen["config"].dice_weight == 0.0 and seen["config"].pairwise_weight == 0.5
    # a chosen weight is passed through; every voxel ignored is a clear error
    rc = main(["finetune", str(root / "imagesTr" / "case0.nii.gz"), str(tmp_path / "scr.nii.gz"),
               "--base", "tiny", "--ignore-label", "255", "--pairwise-weight", "0.2", "--epochs", "1",
               "--steps-per-epoch", "1", "--batch-size", "2", "--patch-size", "16", "16", "-q"])
    assert rc == 0 and seen["config"].pairwise_weight == 0.2
    nib.save(nib.Nifti1Image(np.full(lab.shape, 255, np.uint8).T.copy(), aff), tmp_path / "none.nii.gz")
    assert main(["finetune", str(root / "imagesTr" / "case0.nii.gz"), str(tmp_path / "none.nii.gz"),
                 "--base", "tiny", "--ignore-label", "255", "-q"]) == 2


def test_train_from_scribbles_folder(tmp_path, train_job_spy):
    """``attnseg train --labels-dir scribblesTr --ignore-label 4``: pairs hold the strokes as the
    reviewed voxels (the ignore value becomes 0), the loss is partial CE + the gated-CRF term,
    the model records its labels; a bad scribble value and a missing folder are clear errors."""
    from napari_attnseg.benchmark.splits import write_subset
    from napari_attnseg.model.checkpoint import load_model

    root = tmp_path / "Tiny"
    for sub in ("imagesTr", "labelsTr", "scribblesTr"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    entries = []
    for c in range(3):
        lab = np.stack([((yy - 16 - c) ** 2 + (xx - 14 - k) ** 2 < (6 + k) ** 2) for k in range(4)]).astype(np.uint8)
        scr = np.full(lab.shape, 4, np.uint8)
        scr[:, 16 + c, 12:17] = 1
        scr[:, 1, :] = 0
        img = lab * 100.0 + rng.normal(0, 20, lab.shape)
        for sub, arr in (("imagesTr", img.astype(np.float32)), ("labelsTr", lab), ("scribblesTr", scr)):
            nib.save(nib.Nifti1Image(arr.T.copy(), aff), root / sub / f"case{c}.nii.gz")
        entries.append({"image": f"./imagesTr/case{c}.nii.gz", "label": f"./labelsTr/case{c}.nii.gz",
                        "scribble": f"./scribblesTr/case{c}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"name": "Tiny", "modality": {"0": "MRI"}, "training": entries,
                                                   "labels": {"0": "background", "1": "disc"}}))
    # the training subset of the benchmark's split keeps the scribbles beside the labels
    sub = write_subset(root, tmp_path / "sub", ["case0", "case1"])
    assert sorted(p.name for p in (sub / "scribblesTr").iterdir()) == ["case0.nii.gz", "case1.nii.gz"]
    seen = train_job_spy
    common = ["--channels", "4", "8", "16", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2",
              "--patch-size", "16", "16", "--threads", "1", "--val-fraction", "0.34", "-q"]
    assert main(["train", str(root), "-o", str(tmp_path / "m"), "--labels-dir", "scribblesTr",
                 "--ignore-label", "4", *common]) == 0
    assert len(seen["pairs"]) == 3
    for pair in seen["pairs"]:
        scr = _read(root / "scribblesTr" / Path(pair.image.source).name)
        np.testing.assert_array_equal(pair.reviewed, scr != 4)
        assert set(np.unique(pair.labels.data[scr == 4])) == {0}
    assert seen["config"].dice_weight == 0.0 and seen["config"].pairwise_weight == 0.5
    spec = load_model(tmp_path / "m").spec
    assert spec.provenance["labels"] == "scribblesTr" and spec.provenance["ignore_label"] == 4
    # full masks by default: Dice + CE, no pairwise term
    assert main(["train", str(root), "-o", str(tmp_path / "full"), *common]) == 0
    assert seen["config"].dice_weight == 1.0 and seen["config"].pairwise_weight == 0.0
    bad = _read(root / "scribblesTr" / "case1.nii.gz")
    bad[0, 0, 0] = 9
    nib.save(nib.Nifti1Image(bad.T.copy(), aff), root / "scribblesTr" / "case1.nii.gz")
    assert main(["train", str(root), "-o", str(tmp_path / "bad"), "--labels-dir", "scribblesTr",
                 "--ignore-label", "4", *common]) == 2
    assert main(["train", str(root), "-o", str(tmp_path / "bad2"), "--labels-dir", "nope", *common]) == 2
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad2").exists()
