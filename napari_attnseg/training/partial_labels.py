"""Training on partially annotated cases: structures a case did not contour are *unknown*, not
background (OpenKBP's clinical contours; any dataset whose ``dataset.json`` lists per case the
structures that were contoured).

Encoding (so crops, augmentation and deep-supervision subsampling carry it unchanged, as they
carry any label value by nearest neighbour): in a case whose uncontoured foreground classes are
``U`` (non-empty), each background voxel gets the value ``n_classes + bits(U)`` with
``bits(U) = sum(1 << c for c in U)``: "background or one of U". Contoured voxels keep their class.

Loss (the marginal loss of Shi et al., *Marginal loss and exclusion loss for partially supervised
multi-organ segmentation*, MedIA 2021): for an ambiguous voxel the cross-entropy is
``-log(p_0 + sum_{u in U} p_u)``; the Dice statistics of class ``c`` leave out the ambiguous voxels
whose ``U`` holds ``c`` (their ``p_c`` is no false positive), while every other voxel counts as
usual. Validation Dice leaves out the same voxels for the same classes.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ambiguity_bits", "encode_partial", "marginal_dice_ce_loss", "unknown_mask"]


def ambiguity_bits(known: Iterable[int], n_classes: int) -> int:
    """``bits(U)`` for the foreground classes not in ``known``."""
    known = {int(k) for k in known}
    return sum(1 << c for c in range(1, n_classes) if c not in known)


def encode_partial(labels: np.ndarray, known: Iterable[int] | None, n_classes: int) -> np.ndarray:
    """Labels with the background of a partially annotated case marked ambiguous (a new array
    when anything changes; ``labels`` itself when every class is known)."""
    if known is None:
        return labels
    bits = ambiguity_bits(known, n_classes)
    if bits == 0:
        return labels
    out = np.asarray(labels, dtype=np.int64).copy()
    out[out == 0] = n_classes + bits
    return out


def unknown_mask(labels: np.ndarray, n_classes: int, c: int) -> np.ndarray:
    """Voxels where class ``c`` is unknown (ambiguous voxels whose set holds ``c``)."""
    amb = labels >= n_classes
    bits = np.where(amb, labels - n_classes, 0)
    return amb & (((bits >> c) & 1) > 0)


def marginal_dice_ce_loss(logits: Tensor, target: Tensor, mask: Tensor, *, ce_weight: float = 1.0,
                          dice_weight: float = 1.0, smooth: float = 1e-5, distributed: bool = False) -> Tensor:
    """Dice + marginal CE of ``logits`` (B, C, *S) against an encoded ``target`` (B, *S)."""
    from .losses import combine_dice_ce

    n_classes = logits.shape[1]
    logits = logits.float()
    mask = mask.bool()
    target = target.long()
    amb = target >= n_classes
    bits = torch.where(amb, target - n_classes, torch.zeros_like(target))
    cls = torch.arange(n_classes, device=target.device).view(1, n_classes, *([1] * (target.ndim - 1)))
    in_set = ((bits.unsqueeze(1) >> cls) & 1).bool() & amb.unsqueeze(1)  # (B, C, *S): c in U
    in_set[:, 0] |= amb  # background is always a possibility
    logp = torch.log_softmax(logits, dim=1)
    sure = torch.where(amb, torch.zeros_like(target), target)
    ce_sure = -logp.gather(1, sure.unsqueeze(1)).squeeze(1)
    ce_amb = -torch.logsumexp(logp.masked_fill(~in_set, float("-inf")), dim=1)
    ce_vox = torch.where(amb, ce_amb, ce_sure)
    ce_sum = (ce_vox * mask).sum()
    count = mask.sum().to(logits.dtype)
    probs = logp.exp()
    unknown = in_set.clone()
    unknown[:, 0] = False
    m = (mask.unsqueeze(1) & ~unknown).to(probs.dtype)  # per class: voxels whose class c is known
    onehot = F.one_hot(sure, n_classes).movedim(-1, 1).to(probs.dtype) * (~amb).unsqueeze(1).to(probs.dtype)
    pm = probs * m
    dims = [0] + list(range(2, logits.ndim))
    return combine_dice_ce(ce_sum, count, (pm * onehot).sum(dims), pm.sum(dims), (onehot * m).sum(dims),
                           ce_weight=ce_weight, dice_weight=dice_weight, smooth=smooth, distributed=distributed)
