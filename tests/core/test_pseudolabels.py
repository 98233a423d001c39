"""Dense pseudo-labels from scribbles (random walker) and ``attnseg pseudolabel`` -> ``train``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_attnseg.cli import main
from napari_attnseg.interactive.pseudolabels import (
    PseudoLabelParams,
    pseudo_labels,
    pseudo_labels_job,
    pseudo_labels_slice,
)

nib = pytest.importorskip("nibabel")


def _scene(rng, shift=0):
    """A bright disk (2) inside a grey ring (1) on a dark background, noisy, with a short stroke
    per class (255 elsewhere) and the truth."""
    yy, xx = np.mgrid[:64, :64]
    r2 = (yy - 32 - shift) ** 2 + (xx - 30) ** 2
    gt = np.where(r2 < 10 ** 2, 2, np.where(r2 < 20 ** 2, 1, 0)).astype(np.uint8)
    img = (0.1 + 0.4 * (gt == 1) + 0.9 * (gt == 2) + 0.05 * rng.standard_normal(gt.shape)).astype(np.float32)
    scr = np.full(gt.shape, 255, np.uint8)
    scr[32 + shift, 25:36] = 2                                  # across the disk
    arc = (np.abs(np.sqrt(r2) - 15) < 0.5) & (yy < 32 + shift)  # along the ring's upper half
    scr[arc] = 1
    scr[2, 2:62] = 0                                            # along two sides of the background
    scr[2:62, 61] = 0
    return img, scr, gt


def _dice(a, b, c, where):
    a, b = (a == c) & where, (b == c) & where
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_a_slice_is_completed_along_its_edges_and_keeps_its_strokes():
    img, scr, gt = _scene(np.random.default_rng(0))
    out = pseudo_labels_slice(img, scr, 3, 255)
    labelled = out != 255
    drawn = scr != 255
    assert (out[drawn] == scr[drawn]).all()
    assert labelled.mean() > 0.6                          # strokes cover 4 %: the walk fills most of the rest
    assert (out[labelled] == gt[labelled]).mean() > 0.99  # checked against the truth it never saw
    # without a threshold every pixel gets a class, the same where the threshold kept one
    full = pseudo_labels_slice(img, scr, 3, 255, PseudoLabelParams(confidence=0.0))
    assert (full != 255).all() and (full == gt).mean() > 0.97
    assert (full[labelled] == out[labelled]).all()
    # a larger beta (sharper edges) leaves fewer pixels uncertain
    sharp = pseudo_labels_slice(img, scr, 3, 255, PseudoLabelParams(beta=1000))
    assert (sharp != 255).mean() > labelled.mean() and (sharp == gt).mean() > 0.97


def test_a_volume_per_slice_with_unscribbled_and_one_class_slices_left_sparse():
    rng = np.random.default_rng(1)
    slices = [_scene(rng, shift) for shift in (0, 2, 4)]
    img = np.stack([s[0] for s in slices])
    scr = np.stack([s[1] for s in slices])
    gt = np.stack([s[2] for s in slices])
    scr[1] = 255                                           # slice 1: nobody drew on it
    scr[2][scr[2] != 0] = 255                              # slice 2: background strokes only
    scr = np.where(scr == 255, 7, scr).astype(np.uint8)   # any ignore value, here 7
    job = pseudo_labels_job(img, scr, 3, 7, spacing=(4.0, 1.0, 1.0))
    reports = []
    try:
        while True:
            reports.append(next(job))
    except StopIteration as stop:
        result = stop.value
    assert [p.done for p in reports] == [1, 2, 3] and reports[-1].total == 3
    out = result.labels
    assert out.shape == img.shape and result.slices == 1
    assert (out[1] == 255).all()
    np.testing.assert_array_equal(out[2] != 255, scr[2] == 0)
    assert _dice(out[0], gt[0], 2, out[0] != 255) > 0.97 and _dice(out[0], gt[0], 1, out[0] != 255) > 0.97
    assert result.labelled_fraction == pytest.approx(np.mean(out != 255))
    assert pseudo_labels(img, scr, 3, 7, spacing=(4.0, 1.0, 1.0)).labels.tolist() == out.tolist()


def test_bad_input_is_refused_with_a_reason():
    img, scr, _ = _scene(np.random.default_rng(2))
    with pytest.raises(ValueError, match="neither a class"):
        pseudo_labels_slice(img, np.where(scr == 2, 5, scr).astype(np.uint8), 3, 255)
    with pytest.raises(ValueError, match="shape"):
        pseudo_labels_slice(img, scr[:10], 3, 255)
    with pytest.raises(ValueError, match="is a class"):
        pseudo_labels_slice(img, scr, 3, 255, out_ignore=1)
    with pytest.raises(ValueError, match="confidence"):
        PseudoLabelParams(confidence=1.5)
    with pytest.raises(ValueError, match="beta"):
        PseudoLabelParams(beta=-1)


def _dataset(root: Path) -> Path:
    for sub in ("imagesTr", "labelsTr", "scribblesTr"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(3)
    aff = np.diag([1.0, 1.0, 3.0, 1.0])
    entries = []
    for c in range(3):
        scenes = [_scene(rng, k) for k in range(3)]
        img = np.stack([s[0] for s in scenes]) * 200.0
        scr = np.where(np.stack([s[1] for s in scenes]) == 255, 4, np.stack([s[1] for s in scenes])).astype(np.uint8)
        gt = np.stack([s[2] for s in scenes])
        for sub, arr in (("imagesTr", img.astype(np.float32)), ("labelsTr", gt), ("scribblesTr", scr)):
            nib.save(nib.Nifti1Image(arr.T.copy(), aff), root / sub / f"case{c}.nii.gz")
        entries.append({"image": f"./imagesTr/case{c}.nii.gz", "label": f"./labelsTr/case{c}.nii.gz",
                        "scribble": f"./scribblesTr/case{c}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({
        "name": "Rings", "modality": {"0": "MRI"}, "training": entries,
        "labels": {"0": "background", "1": "ring", "2": "disk"}}))
    return root


def test_pseudolabel_cli_writes_dense_labels_that_train_with_a_dice_term(tmp_path, train_job_spy):
    root = _dataset(tmp_path / "Rings")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    out = tmp_path / "pseudo"
    assert main(["pseudolabel", str(root), "-o", str(out), "--ignore-label", "4", "-q"]) == 0
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before   # inputs untouched
    summary = json.loads((out / "pseudolabels.json").read_text())
    assert [c["case"] for c in summary["cases"]] == [f"case{c}.nii.gz" for c in range(3)]
    for c in range(3):
        got = nib.load(str(out / f"case{c}.nii.gz"))
        ref = nib.load(str(root / "scribblesTr" / f"case{c}.nii.gz"))
        np.testing.assert_allclose(got.affine, ref.affine)
        lab = np.asarray(got.dataobj)
        gt = np.asarray(nib.load(str(root / "labelsTr" / f"case{c}.nii.gz")).dataobj)
        assert set(np.unique(lab)) <= {0, 1, 2, 255}
        keep = lab != 255
        assert keep.mean() > 0.5 and (lab[keep] == gt[keep]).mean() > 0.98
    # the output folder is never reused and never the scribbles' own folder
    assert main(["pseudolabel", str(root), "-o", str(out), "--ignore-label", "4", "-q"]) == 2
    assert main(["pseudolabel", str(root), "-o", str(root / "scribblesTr"), "--ignore-label", "4", "-q"]) == 2
    assert main(["pseudolabel", str(root), "-o", str(tmp_path / "p2"), "--ignore-label", "4",
                 "--out-ignore", "1", "-q"]) == 2

    seen = train_job_spy
    assert main(["train", str(root), "-o", str(tmp_path / "m"), "--labels-dir", str(out.resolve()),
                 "--ignore-label", "255", "--dice-weight", "1", "--pairwise-weight", "0",
                 "--channels", "4", "8", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2",
                 "--patch-size", "32", "32", "--threads", "1", "--val-fraction", "0.34", "-q"]) == 0
    assert seen["config"].dice_weight == 1.0 and seen["config"].pairwise_weight == 0.0
    for pair in seen["pairs"]:
        lab = np.asarray(nib.load(str(out / Path(pair.image.source).name)).dataobj).T
        np.testing.assert_array_equal(pair.reviewed, lab != 255)
