"""Partially annotated cases (uncontoured = unknown, not background) and mirror-free augmentation."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_attnseg.training.dataset import BatchSampler, prepare_pairs, read_decathlon
from napari_attnseg.training.losses import DiceCELoss, dice_ce_loss
from napari_attnseg.training.partial_labels import (
    ambiguity_bits, encode_partial, marginal_dice_ce_loss, unknown_mask,
)


def test_encoding_marks_only_background_of_partial_cases():
    lab = np.array([[0, 1], [2, 0]])
    assert encode_partial(lab, None, 4) is lab
    assert encode_partial(lab, (0, 1, 2, 3), 4) is lab
    enc = encode_partial(lab, (0, 1, 2), 4)  # class 3 not contoured
    assert enc.tolist() == [[4 + 8, 1], [2, 4 + 8]]
    assert ambiguity_bits((0, 2), 4) == 2 + 8
    assert unknown_mask(enc, 4, 3).tolist() == [[True, False], [False, True]]
    assert not unknown_mask(enc, 4, 1).any()


def test_marginal_loss_equals_plain_loss_without_ambiguity():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, generator=g)
    target = torch.randint(0, 4, (2, 8, 8), generator=g)
    mask = torch.ones_like(target, dtype=torch.bool)
    a = marginal_dice_ce_loss(logits, target, mask)
    b = dice_ce_loss(logits, target, mask)
    assert float(a) == pytest.approx(float(b), rel=1e-5)


def test_predicting_an_uncontoured_organ_is_not_penalised():
    # one voxel row: truth "background or class 2" (class 2 not contoured)
    n = 4
    target = torch.full((1, 4, 4), n + (1 << 2))
    mask = torch.ones_like(target, dtype=torch.bool)
    says_2 = torch.full((1, n, 4, 4), -10.0)
    says_2[:, 2] = 10.0
    says_1 = torch.full((1, n, 4, 4), -10.0)
    says_1[:, 1] = 10.0
    ce_2 = marginal_dice_ce_loss(says_2, target, mask, dice_weight=0.0)
    ce_1 = marginal_dice_ce_loss(says_1, target, mask, dice_weight=0.0)
    assert float(ce_2) < 1e-3  # class 2 is a possibility there
    assert float(ce_1) > 5.0  # class 1 was contoured elsewhere in this case: it is wrong here
    # gradients flow and deep supervision dispatches to the marginal loss
    logits = torch.zeros(1, n, 4, 4, requires_grad=True)
    DiceCELoss((1.0,))([logits], target, mask).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def _write_case(folder, name, lab):
    aff = np.eye(4)
    img = (np.random.default_rng(0).random(lab.shape) * 100).astype(np.float32)
    nib.save(nib.Nifti1Image(img, aff), str(folder / "imagesTr" / f"{name}.nii.gz"))
    nib.save(nib.Nifti1Image(lab.astype(np.uint8), aff), str(folder / "labelsTr" / f"{name}.nii.gz"))


def test_decathlon_contoured_lists_reach_training(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    lab = np.zeros((16, 16, 3), np.uint8)
    lab[2:6, 2:6] = 1
    _write_case(tmp_path, "a", lab)
    _write_case(tmp_path, "b", lab)
    meta = {"name": "t", "labels": {"0": "background", "1": "x", "2": "y"}, "modality": {"0": "CT"},
            "training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz", "contoured": [1]},
                         {"image": "./imagesTr/b.nii.gz", "label": "./labelsTr/b.nii.gz"}]}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    pairs, _ = read_decathlon(tmp_path)
    by = {p.image.source.split("/")[-1]: p for p in pairs}
    assert by["a.nii.gz"].known == (0, 1) and by["b.nii.gz"].known is None

    class Spec:
        class arch:
            spatial_dims = 2
        normalization = {"preset": "CT"}
        modality = "CT"
        target_spacing = None

    items = prepare_pairs([by["a.nii.gz"]], Spec, 3)
    assert all((it.labels[it.labels != 1] == 3 + 4).all() for it in items)
    meta["training"][0]["contoured"] = [5]
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(Exception, match="contoured"):
        read_decathlon(tmp_path)


def test_no_mirror_never_flips():
    img = np.arange(32 * 32, dtype=np.float32).reshape(32, 32)
    lab = np.zeros((32, 32), np.int64)
    lab[:, :4] = 1  # a class on the image's left only

    class It:
        pass

    it = It()
    it.image, it.labels, it.mask, it.source, it.fg_coords = img, lab, np.ones_like(lab, bool), "", None
    rng = np.random.default_rng(0)
    s = BatchSampler([it], (32, 32), augment=True, mirror=False)
    _, labs, _ = s.build(s.sample_seeds(rng, 64))
    left = labs[:, :, :8].sum(axis=(1, 2))
    right = labs[:, :, -8:].sum(axis=(1, 2))
    assert (right <= left).all()  # class 1 never lands on the right
    s2 = BatchSampler([it], (32, 32), augment=True, mirror=True)
    _, labs2, _ = s2.build(s2.sample_seeds(np.random.default_rng(0), 64))
    assert (labs2[:, :, -8:].sum(axis=(1, 2)) > labs2[:, :, :8].sum(axis=(1, 2))).any()
