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
* Sparse labels (scribbles): :func:`partial_cross_entropy` is the cross-entropy over the
  annotated voxels only (voxels equal to the ignore value carry no loss and no gradient; in
  training the same comes from the trainable-voxel mask with ``dice_weight=0``), and
  :func:`gated_crf_loss` spreads that supervision along the image: a local pairwise Potts term
  that charges neighbouring voxels of similar intensity for disagreeing (the gated CRF loss of
  Obukhov et al. 2019, a local version of the dense-CRF loss of Tang et al., ECCV 2018).
  ``DiceCELoss(pairwise_weight=w)`` adds ``w`` times it on the full-resolution output's
  probabilities, area-averaged to half resolution in the last two axes (4x cheaper).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DiceCELoss", "deep_supervision_weights", "dice_ce_loss", "downsample_target",
           "gated_crf_loss", "partial_cross_entropy"]

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
    return combine_dice_ce(ce_sum, count, (pm * onehot).sum(dims), pm.sum(dims), onehot.sum(dims),
                           ce_weight=ce_weight, dice_weight=dice_weight, smooth=smooth, distributed=distributed)


def combine_dice_ce(ce_sum: Tensor, count: Tensor, inter: Tensor, psum: Tensor, tsum: Tensor, *,
                    ce_weight: float, dice_weight: float, smooth: float, distributed: bool) -> Tensor:
    """The loss from the batch statistics (CE sum, voxel count, per-class intersection,
    prediction and target sums), summed over the process group with ``distributed``:
    ``ce_weight * CE + dice_weight * (1 - mean foreground batch Dice)``."""
    n_classes = inter.shape[0]
    stats = torch.cat([ce_sum.reshape(1), count.reshape(1), inter, psum, tsum])
    if distributed:
        stats = _all_reduce(stats)
    ce_sum, count = stats[0], stats[1]
    inter, psum, tsum = stats[2:].reshape(3, n_classes)
    ce = ce_sum / count.clamp_min(1.0)
    fg = slice(1, None) if n_classes > 1 else slice(None)
    dice = (2.0 * inter[fg] + smooth) / (psum[fg] + tsum[fg] + smooth)
    return ce_weight * ce + dice_weight * (1.0 - dice.mean())


def partial_cross_entropy(logits: Tensor, target: Tensor, ignore_index: int = 255) -> Tensor:
    """Cross-entropy of ``logits`` (B, C, *S) over the voxels of ``target`` (B, *S) that are not
    ``ignore_index`` (a scribble's unannotated voxels): they add nothing to the value and get a
    zero gradient. Averaged over the annotated voxels (0 with a graph when there are none)."""
    annotated = target != ignore_index
    safe = torch.where(annotated, target.long(), torch.zeros_like(target, dtype=torch.long))
    return dice_ce_loss(logits, safe, annotated, ce_weight=1.0, dice_weight=0.0)


def _unit_range(image: Tensor) -> Tensor:
    """Each sample of ``image`` (B, 1, *S) mapped to about 0..1 by its 1st..99th percentile."""
    flat = image.detach().float().reshape(image.shape[0], -1)
    if flat.shape[1] > 4096:  # a regular subsample is plenty for two percentiles
        flat = flat[:, :: flat.shape[1] // 4096 + 1]
    lo = torch.quantile(flat, 0.01, dim=1)
    hi = torch.quantile(flat, 0.99, dim=1)
    shape = (-1,) + (1,) * (image.ndim - 1)
    scale = (hi - lo).clamp_min(1e-6).reshape(shape)
    return (image.float() - lo.reshape(shape)) / scale


def gated_crf_loss(probabilities: Tensor, image: Tensor, *, radius: int = 2, sigma_xy: float = 2.0,
                   sigma_intensity: float = 0.1, valid: Tensor | None = None) -> Tensor:
    """Local pairwise (Potts) CRF loss of ``probabilities`` (B, C, *S, softmax) on ``image``
    (B, 1, *S): the mean over voxel pairs up to ``radius`` apart in the last two axes of
    ``w_ij (1 - sum_c p_ic p_jc)``, ``w_ij = exp(-d_ij^2 / 2 sigma_xy^2 - (I_i - I_j)^2 / 2
    sigma_intensity^2)`` (distances in voxels, intensities scaled per sample to 0..1 by their
    1..99th percentiles). Neighbours that look alike are pushed to one class; across an edge the
    weight vanishes. ``valid`` (B, *S) bool leaves out pairs touching invalid voxels (padding).
    """
    if probabilities.ndim != image.ndim or image.shape[1] != 1 or \
            probabilities.shape[2:] != image.shape[2:] or probabilities.ndim < 4:
        raise ValueError(f"need probabilities (B, C, *S) and an image (B, 1, *S) with 2 or 3 "
                         f"spatial axes; got {tuple(probabilities.shape)} and {tuple(image.shape)}")
    if int(radius) != radius or radius < 1:
        raise ValueError(f"radius must be an integer >= 1, got {radius!r}")
    p = probabilities.float()
    img = _unit_range(image)
    v = None if valid is None else valid.unsqueeze(1).to(p.dtype)
    offsets = [(dy, dx) for dy in range(0, radius + 1) for dx in range(-radius, radius + 1)
               if (dy > 0 or dx > 0) and dy * dy + dx * dx <= radius * radius]
    h, w = p.shape[-2:]
    total = p.sum() * 0.0
    count = p.new_zeros(())
    for dy, dx in offsets:
        ya, yb = slice(0, h - dy), slice(dy, h)
        xa, xb = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        pa, pb = p[..., ya, xa], p[..., yb, xb]
        ia, ib = img[..., ya, xa], img[..., yb, xb]
        wt = torch.exp(-(dy * dy + dx * dx) / (2.0 * sigma_xy ** 2)
                       - (ia - ib) ** 2 / (2.0 * sigma_intensity ** 2))
        if v is None:
            pairs = float(wt.numel())
        else:
            both = v[..., ya, xa] * v[..., yb, xb]
            wt = wt * both
            pairs = both.sum()
        disagree = 1.0 - (pa * pb).sum(dim=1, keepdim=True)
        total = total + (wt * disagree).sum()
        count = count + pairs
    return total / count.clamp_min(1.0)


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
                 dice_weight: float = 1.0, distributed: bool = False, pairwise_weight: float = 0.0,
                 pairwise_radius: int = 2, pairwise_sigma_xy: float = 2.0,
                 pairwise_sigma_intensity: float = 0.1, pairwise_downsample: int = 2):
        super().__init__()
        self.ds_weights = None if ds_weights is None else tuple(ds_weights)
        self.ce_weight, self.dice_weight, self.distributed = ce_weight, dice_weight, distributed
        if not pairwise_weight >= 0:
            raise ValueError(f"pairwise_weight must be >= 0, got {pairwise_weight!r}")
        self.pairwise_weight = float(pairwise_weight)
        self.pairwise_downsample = int(pairwise_downsample)
        self.pairwise = {"radius": int(pairwise_radius), "sigma_xy": float(pairwise_sigma_xy),
                         "sigma_intensity": float(pairwise_sigma_intensity)}

    def forward(self, outputs: Tensor | Sequence[Tensor], target: Tensor, mask: Tensor | None = None,
                image: Tensor | None = None) -> Tensor:
        """The loss; ``image`` (B, 1, *S), the network's input, is needed with a pairwise term."""
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
        if self.pairwise_weight > 0:
            if image is None:
                raise ValueError("the pairwise (gated CRF) term needs the input image: loss(outputs, target, "
                                 "mask, image=x)")
            probs = torch.softmax(outputs[0].float(), dim=1)
            img = image.float()
            if img.shape[1] > 1:  # a 2.5D stack: the edges of the slice being segmented (the middle)
                mid = img.shape[1] // 2
                img = img[:, mid:mid + 1]
            if self.pairwise_downsample > 1 and min(probs.shape[-2:]) >= 8 * self.pairwise_downsample:
                # at half resolution (as Tang et al.): 4x cheaper, the gradient still reaches the output
                size = tuple(probs.shape[2:-2]) + tuple(n // self.pairwise_downsample for n in probs.shape[-2:])
                probs = F.interpolate(probs, size=size, mode="area")
                img = F.interpolate(img, size=size, mode="area")
            total = total + self.pairwise_weight * gated_crf_loss(probs, img, **self.pairwise)
        return total
