"""``attnseg train`` and ``attnseg finetune`` end to end on a tiny Decathlon-layout dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_attnseg.cli import main
from napari_attnseg.model.checkpoint import load_model
from napari_attnseg.model.registry import ModelRegistry


@pytest.fixture
def tiny_dataset(tmp_path):
    nib = pytest.importorskip("nibabel")
    root = tmp_path / "Task01_Tiny"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    for c in range(3):
        lab = np.stack([((yy - 16 - c) ** 2 + (xx - 14 - k) ** 2 < (6 + k) ** 2) for k in range(4)]).astype(np.uint8)
        img = lab * 100.0 + rng.normal(0, 20, lab.shape)
        aff = np.diag([1.0, 1.0, 2.0, 1.0])
        nib.save(nib.Nifti1Image(img.T.astype(np.float32), aff), root / "imagesTr" / f"case{c}.nii.gz")
        nib.save(nib.Nifti1Image(lab.T, aff), root / "labelsTr" / f"case{c}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "name": "Tiny", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "disc"},
        "licence": "CC0", "reference": "synthetic discs"}))
    return root


COMMON = ["--channels", "4", "8", "16", "--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "2",
          "--patch-size", "16", "16", "--threads", "1", "-q"]


def test_train_writes_model_card_log_and_registry_version(tiny_dataset, tmp_path):
    out = tmp_path / "model"
    assert main(["train", str(tiny_dataset), "-o", str(out), "--name", "tiny", *COMMON]) == 0
    for f in ("config.json", "weights.pt", "README.md", "history.csv", "curves.png"):
        assert (out / f).is_file(), f
    card = (out / "README.md").read_text()
    assert "CC0" in card and "synthetic discs" in card and "Validation Dice" in card
    rows = (out / "history.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step,loss,val_dice") and len(rows) == 4
    reg = ModelRegistry()
    entry = reg.get("tiny")
    assert entry.version == "1" and (entry.path / "README.md").is_file()
    model = load_model(out)
    assert model.spec.modality == "MR" and model.spec.provenance["kind"] == "train"
    assert len(model.spec.provenance["val_cases"]) == 1

    img = tiny_dataset / "imagesTr" / "case0.nii.gz"
    lab = tiny_dataset / "labelsTr" / "case0.nii.gz"
    ft_out = tmp_path / "ft"
    assert main(["finetune", str(img), str(lab), "--base", "tiny", "-o", str(ft_out), "--reviewed-slices", "0,1,3",
                 "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--patch-size", "16", "16",
                 "--threads", "1", "-q"]) == 0
    ft = load_model(ft_out)
    assert ft.spec.parent == load_model(entry.path).model_id and ft.spec.version == "2"
    assert [e.version for e in reg.versions("tiny")] == ["1", "2"]
    # too few reviewed slices: a one-line error, exit code 2
    assert main(["finetune", str(img), str(lab), "--base", "tiny", "--reviewed-slices", "2", "-q"]) == 2


def test_train_resume_reaches_the_same_model(tiny_dataset, tmp_path, monkeypatch):
    import torch

    from napari_attnseg.commands import _common

    a = tmp_path / "a"
    assert main(["train", str(tiny_dataset), "-o", str(a), *COMMON]) == 0
    b, ck = tmp_path / "b", tmp_path / "ck"
    real = _common.run_with_progress

    def interrupted(job, desc="", quiet=False):
        for p in job:
            if p.stage == "validate" and p.info["epoch"] == 1:
                job.close()
                raise KeyboardInterrupt
        raise AssertionError("the job should have been interrupted")

    monkeypatch.setattr(_common, "run_with_progress", interrupted)
    assert main(["train", str(tiny_dataset), "-o", str(b), "--checkpoint-dir", str(ck), *COMMON]) == 130
    assert not b.exists() and (ck / "checkpoint.pt").is_file()
    monkeypatch.setattr(_common, "run_with_progress", real)
    assert main(["train", str(tiny_dataset), "-o", str(b), "--checkpoint-dir", str(ck), "--resume", *COMMON]) == 0
    drop_time = [r.rsplit(",", 1)[0] for r in (a / "history.csv").read_text().splitlines()]
    assert drop_time == [r.rsplit(",", 1)[0] for r in (b / "history.csv").read_text().splitlines()]
    wa, wb = load_model(a), load_model(b)
    for k, v in wa.network.state_dict().items():
        assert torch.allclose(v.float(), wb.network.state_dict()[k].float(), atol=1e-6), k


def test_train_init_model_starts_from_its_weights_and_checks_the_architecture(tiny_dataset, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", str(tiny_dataset), "-o", str(a), *COMMON]) == 0
    first = load_model(a).spec.provenance
    # warm start: before its first step, b scores a's weights on the same validation case
    assert main(["train", str(tiny_dataset), "-o", str(b), "--init-model", str(a), *COMMON]) == 0
    second = load_model(b).spec.provenance
    assert second["init_model"] == load_model(a).model_id
    assert second["initial_val_dice"] == pytest.approx(first["best_val_dice"], abs=1e-6)
    assert first["initial_val_dice"] != pytest.approx(first["best_val_dice"], abs=1e-6)  # random init differs
    wide = [x if x != "16" or i != 3 else "32" for i, x in enumerate(COMMON)]  # channels 4 8 32
    capsys.readouterr()
    assert main(["train", str(tiny_dataset), "-o", str(tmp_path / "c"), "--init-model", str(a), *wide]) != 0
    err = capsys.readouterr().err
    assert "--init-model" in err and "architecture" in err and "Traceback" not in err
    assert not (tmp_path / "c").exists()


def _relabel(dataset, name):
    meta = json.loads((dataset / "dataset.json").read_text())
    meta["labels"]["1"] = name
    (dataset / "dataset.json").write_text(json.dumps(meta))


def test_train_init_model_compares_label_meanings_not_spelling(tiny_dataset, tmp_path, capsys):
    """A shipped model's tidied names ('spinal cord') match the dataset's ('SpinalCord'); another
    structure is refused before any training."""
    a = tmp_path / "a"
    _relabel(tiny_dataset, "Intervertebral Disc (L4-L5)")
    assert main(["train", str(tiny_dataset), "-o", str(a), *COMMON]) == 0
    _relabel(tiny_dataset, "intervertebral_disc")
    assert main(["train", str(tiny_dataset), "-o", str(tmp_path / "b"), "--init-model", str(a), *COMMON]) == 0
    assert load_model(tmp_path / "b").spec.provenance["init_model"] == load_model(a).model_id
    _relabel(tiny_dataset, "vertebra")
    capsys.readouterr()
    assert main(["train", str(tiny_dataset), "-o", str(tmp_path / "c"), "--init-model", str(a), *COMMON]) != 0
    err = capsys.readouterr().err
    assert "labels" in err and "vertebra" in err and "Traceback" not in err
    assert not (tmp_path / "c").exists()


def test_train_context_slices_starts_from_a_one_slice_model_where_it_was(tiny_dataset, tmp_path, capsys):
    nib = pytest.importorskip("nibabel")
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", str(tiny_dataset), "-o", str(a), *COMMON]) == 0
    assert main(["train", str(tiny_dataset), "-o", str(b), "--init-model", str(a), "--context-slices", "1",
                 *COMMON]) == 0
    first, second = load_model(a), load_model(b)
    assert second.spec.context_slices == 1 and second.spec.arch.in_channels == 3
    # the neighbours start at weight 0: before its first step, b scores what a scored
    assert second.spec.provenance["initial_val_dice"] == pytest.approx(first.spec.provenance["best_val_dice"],
                                                                       abs=1e-6)
    out = tmp_path / "pred.nii.gz"
    assert main(["predict", str(tiny_dataset / "imagesTr" / "case0.nii.gz"), "-o", str(out),
                 "--model", str(b)]) == 0
    assert nib.load(out).shape == nib.load(tiny_dataset / "imagesTr" / "case0.nii.gz").shape
    capsys.readouterr()
    for bad, why in ((["--context-slices", "-1"], "0..8"),
                     (["--context-slices", "1", "--spatial-dims", "3", "--patch-size", "16", "16", "16"], "2D models")):
        assert main(["train", str(tiny_dataset), "-o", str(tmp_path / "c"), *COMMON, *bad]) != 0
        err = capsys.readouterr().err
        assert why in err and "Traceback" not in err
    assert not (tmp_path / "c").exists()
