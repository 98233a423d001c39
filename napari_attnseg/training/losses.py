"""Dice + cross-entropy with an ignore mask, and deep supervision.

* Cross-entropy uses ``ignore_index`` on voxels outside the mask, so they contribute exactly
  nothing (value and gradient); it is averaged over the trainable voxels of the whole batch.
* Dice is the "batch Dice" over foreground classes (statistics summed over the batch, as
  nnU-Net does for 2D): ``1 - mean_c (2 I_c + s) / (P_c + T_c + s)`` with probabilities and
  one-hot targets multiplied by the mask, so masked voxels contribute exactly zero.
* Deep supervision: each auxiliary output at ``1/2**k`` resolution is compared with the target
  and mask subsampled by nearest neighbour (``[::2**k]``), so the ignore property holds at every
  scale; weights default to ``1/2**k`` normalized to sum to 1 (nnU-Net).
* Distributed runs: the batch statistics (CE sum, voxel count, Dice terms) are summed over the
  ranks with a differentiable all-reduce, so every rank computes the loss of the *global*
  batch and DistributedDataParallel's gradient average equals the single-process gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DiceCELoss", "deep_supervision_weights", "dice_ce_loss", "downsample_target"]

_IGNORE = -100


def _all_reduce(t: Tensor) -> Tensor:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(t)
    return t


def dice_ce_loss(logits: Tensor, target: Tensor, mask: Tensor | None = None, *, ce_weight: float = 1.0,
                 dice_weight: float = 1.0, smooth: float = 1e-5, distributed: bool = False) -> Tensor:
    """Dice + CE of raw ``logits`` (B, C, *S) against integer ``target`` (B, *S).

    ``mask`` (B, *S) bool: trainable voxels (None = all). A batch without any trainable voxel
    gives a zero loss (connected to the graph). With ``distributed``, statistics are summed
    over the process group (see the module docstring).
    """
    n_classes = logits.shape[1]
    logits = logits.float()
    if mask is None:
        mask = torch.ones_like(target, dtype=torch.bool)
    mask = mask.bool()
    tgt = torch.where(mask, target.long(), torch.zeros_like(target, dtype=torch.long))
    ce_target = torch.where(mask, tgt, torch.full_like(tgt, _IGNORE))
    ce_sum = F.cross_entropy(logits, ce_target, ignore_index=_IGNORE, reduction="sum")
    count = mask.sum().to(logits.dtype)
    probs = torch.softmax(logits, dim=1)
    m = mask.unsqueeze(1).to(probs.dtype)
    onehot = F.one_hot(tgt, n_classes).movedim(-1, 1).to(probs.dtype) * m
    pm = probs * m
    dims = [0] + list(range(2, logits.ndim))
    inter = (pm * onehot).sum(dims)
    psum = pm.sum(dims)
    tsum = onehot.sum(dims)
    stats = torch.cat([ce_sum.reshape(1), count.reshape(1), inter, psum, tsum])
    if distributed:
        stats = _all_reduce(stats)
    ce_sum, count = stats[0], stats[1]
    inter, psum, tsum = stats[2:].reshape(3, n_classes)
    ce = ce_sum / count.clamp_min(1.0)
    fg = slice(1, None) if n_classes > 1 else slice(None)
    dice = (2.0 * inter[fg] + smooth) / (psum[fg] + tsum[fg] + smooth)
    dice_loss = 1.0 - dice.mean()
    return ce_weight * ce + dice_weight * dice_loss


def downsample_target(target: Tensor, mask: Tensor, shape: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Nearest-neighbour subsampling of ``target`` and ``mask`` (B, *S) to ``shape``."""
    full = target.shape[1:]
    if tuple(full) == tuple(shape):
        return target, mask
    idx = [slice(None)]
    for f, s in zip(full, shape):
        if f % s:
            raise ValueError(f"cannot subsample size {f} to {s} (not an integer factor)")
        idx.append(slice(None, None, f // s))
    return target[tuple(idx)], mask[tuple(idx)]


def deep_supervision_weights(n_outputs: int, weights: Sequence[float] | None = None) -> list[float]:
    """``weights`` (truncated/checked) or ``1/2**k`` for k = 0..n-1, normalized to sum to 1."""
    if weights is None:
        w = [0.5 ** k for k in range(n_outputs)]
    else:
        w = [float(x) for x in weights][:n_outputs]
        if len(w) < n_outputs:
            w += [0.0] * (n_outputs - len(w))
        if any(x < 0 for x in w) or sum(w) <= 0:
            raise ValueError(f"deep-supervision weights must be non-negative with a positive sum, got {weights}")
    total = sum(w)
    return [x / total for x in w]


class DiceCELoss(torch.nn.Module):
    """Dice + CE over one output or a deep-supervision list ``[full, 1/2, 1/4, ...]``."""

    def __init__(self, ds_weights: Sequence[float] | None = None, ce_weight: float = 1.0,
                 dice_weight: float = 1.0, distributed: bool = False):
        super().__init__()
        self.ds_weights = None if ds_weights is None else tuple(ds_weights)
        self.ce_weight, self.dice_weight, self.distributed = ce_weight, dice_weight, distributed

    def forward(self, outputs: Tensor | Sequence[Tensor], target: Tensor, mask: Tensor | None = None) -> Tensor:
        from .partial_labels import marginal_dice_ce_loss

        if mask is None:
            mask = torch.ones_like(target, dtype=torch.bool)
        if isinstance(outputs, Tensor):
            outputs = [outputs]
        weights = deep_supervision_weights(len(outputs), self.ds_weights)
        total = None
        for w, out in zip(weights, outputs):
            if w == 0.0:  # keep the head in the graph (DistributedDataParallel needs every parameter used)
                term = out.sum() * 0.0
                total = term if total is None else total + term
                continue
            t, m = downsample_target(target, mask, out.shape[2:])
            # partially annotated cases (training/partial_labels.py): values >= C are ambiguous
            loss = marginal_dice_ce_loss if bool(((t >= out.shape[1]) & m.bool()).any()) else dice_ce_loss
            term = w * loss(out, t, m, ce_weight=self.ce_weight, dice_weight=self.dice_weight,
                            distributed=self.distributed)
            total = term if total is None else total + term
        return total
