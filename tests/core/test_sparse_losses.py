"""Sparse labels: partial cross-entropy (ignore voxels carry no loss and no gradient), the
gated-CRF pairwise term, and a training run on scribbles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_attnseg.training.losses import DiceCELoss, dice_ce_loss, gated_crf_loss, partial_cross_entropy


def test_partial_ce_ignores_the_ignore_label():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.full((2, 8, 8), 255, dtype=torch.long)
    target[0, 2, 1:6] = 1
    target[1, 5, 3] = 2
    target[1, 0, 0] = 0
    loss = partial_cross_entropy(logits, target, ignore_index=255)
    annotated = target != 255
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[annotated], target[annotated])
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    loss.backward()
    g = logits.grad.abs().sum(dim=1)
    assert (g[~annotated] == 0).all()  # no gradient where nothing is annotated
    assert (g[annotated] > 0).all()
    # the value does not depend on the logits of ignored voxels
    other = logits.detach().clone()
    other[:, :, ~annotated[0]] += 5.0
    assert float(partial_cross_entropy(other, target)) == pytest.approx(float(loss), rel=1e-5)
    # no annotation at all: zero, still differentiable
    none = partial_cross_entropy(logits, torch.full_like(target, 255))
    assert float(none) == 0.0 and none.requires_grad


def test_masked_dice_ce_with_no_dice_is_partial_ce():
    torch.manual_seed(1)
    logits = torch.randn(1, 2, 6, 6)
    target = torch.randint(0, 2, (1, 6, 6))
    mask = torch.rand(1, 6, 6) > 0.7
    sparse = torch.where(mask, target, torch.full_like(target, 255))
    assert float(dice_ce_loss(logits, target, mask, dice_weight=0.0)) == pytest.approx(
        float(partial_cross_entropy(logits, sparse)), rel=1e-6)


def _edge_image():
    img = torch.zeros(1, 1, 32, 32)
    img[..., 16:] = 1.0
    return img + 0.01 * torch.randn_like(img)


def test_gated_crf_loss_follows_image_edges():
    torch.manual_seed(0)
    img = _edge_image()
    along = torch.zeros(1, 2, 32, 32)
    along[:, 0, :, :16] = 1
    along[:, 1, :, 16:] = 1  # boundary on the image edge
    across = torch.zeros(1, 2, 32, 32)
    across[:, 0, :16] = 1
    across[:, 1, 16:] = 1  # boundary through the two homogeneous halves
    l_along = float(gated_crf_loss(along, img))
    l_across = float(gated_crf_loss(across, img))
    assert l_along < 1e-6 < l_across
    assert float(gated_crf_loss(torch.full((1, 2, 32, 32), 0.5), img)) > l_across  # undecided costs
    valid = torch.zeros(1, 32, 32, dtype=torch.bool)
    valid[:, 20:] = True  # the 'across' boundary sits at row 16: outside the valid rows
    assert float(gated_crf_loss(across, img, valid=valid)) < 1e-6
    logits = torch.randn(1, 2, 32, 32, requires_grad=True)
    gated_crf_loss(torch.softmax(logits, 1), img).backward()
    assert logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="need probabilities"):
        gated_crf_loss(along, img[:, :, :8])


def test_dice_ce_loss_with_pairwise_term():
    torch.manual_seed(0)
    img = _edge_image()
    logits = [torch.randn(1, 2, 32, 32, requires_grad=True), torch.randn(1, 2, 16, 16)]
    target = torch.zeros(1, 32, 32, dtype=torch.long)
    mask = torch.zeros(1, 32, 32, dtype=torch.bool)
    mask[0, 5, 5] = True
    plain = DiceCELoss(dice_weight=0.0)(logits, target, mask)
    with pytest.raises(ValueError, match="needs the input image"):
        DiceCELoss(pairwise_weight=1.0)(logits, target, mask)
    withp = DiceCELoss(dice_weight=0.0, pairwise_weight=1.0)(logits, target, mask, image=img)
    assert float(withp) > float(plain)
    withp.backward()
    unannotated = ~mask[0]
    assert logits[0].grad.abs().sum(dim=1)[0][unannotated].sum() > 0  # the pairwise term reaches them
    with pytest.raises(ValueError, match="pairwise_weight"):
        DiceCELoss(pairwise_weight=-1.0)


def test_train_config_checks_the_sparse_weights():
    from napari_attnseg.training.loop import TrainConfig

    assert TrainConfig(dice_weight=0.0, pairwise_weight=0.5).to_dict()["pairwise_weight"] == 0.5
    for bad in ({"dice_weight": -1.0}, {"pairwise_weight": float("nan")}):
        with pytest.raises(ValueError, match="must be a number >= 0"):
            TrainConfig(**bad)


def test_training_on_scribbles_learns_the_unannotated_voxels():
    """Strokes cover a few % of six discs; partial CE trains a tiny U-Net to segment the whole
    discs, and the pairwise term does better than partial CE alone (same seed, same steps)."""
    from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
    from napari_attnseg.model.checkpoint import ModelSpec
    from napari_attnseg.training.dataset import TrainingPair
    from napari_attnseg.training.loop import TrainConfig, train
    from napari_attnseg.volume import Volume

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    gt = np.stack([((yy - 16) ** 2 + (xx - 12 - k) ** 2 < 64) for k in range(6)]).astype(np.uint8)
    img = (gt * 1.0 + rng.normal(0, 0.1, gt.shape)).astype(np.float32)
    scr = np.full(gt.shape, 255, np.uint8)
    scr[:, 16, 8:20] = 1  # a line through each disc
    scr[:, 2, :] = 0  # a background line
    mask = scr != 255
    labels = np.where(mask, scr, 0).astype(np.uint8)
    assert mask.mean() < 0.1
    arch = UNetConfig(spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8, 16))
    spec = ModelSpec(arch=arch, label_names={0: "background", 1: "disc"}, modality="",
                     normalization={}, patch_size=(32, 32), name="t")
    pair = TrainingPair(Volume(img, (1.0, 1.0, 1.0)), Volume(labels, (1.0, 1.0, 1.0), is_labels=True), mask)
    val = TrainingPair(Volume(img, (1.0, 1.0, 1.0)), Volume(gt, (1.0, 1.0, 1.0), is_labels=True), None)
    dice = {}
    for weight in (0.0, 0.5):
        torch.manual_seed(0)
        net = AttentionUNet(arch)
        cfg = TrainConfig(epochs=6, steps_per_epoch=10, batch_size=4, patch_size=(32, 32), lr=3e-3,
                          augment=False, early_stopping_patience=0, dice_weight=0.0,
                          pairwise_weight=weight, num_threads=1)
        dice[weight] = train(net, spec, [pair], [val], cfg).best_val_dice  # Dice on the full discs
    assert dice[0.0] > 0.55, dice
    assert dice[0.5] > dice[0.0] + 0.03, dice
