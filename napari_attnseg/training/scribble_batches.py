"""Batches of the scribble fine-tune (``training/scribble_finetune.py``): what trains, frozen
batch-norm statistics, seeded crops with augmentation (:class:`Sampler`), or whole slices
through the decoder only on cached encoder outputs (:class:`CachedSlices`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["CachedSlices", "Sampler", "boundary_band", "decode", "forward", "set_trainable", "train_mode"]


def set_trainable(net: torch.nn.Module, what: str) -> list[torch.nn.Parameter]:
    for p in net.parameters():
        p.requires_grad_(what == "all")
    if what == "decoder":
        for mod in [net.decoder, net.head] + ([net.aux_heads] if net.aux_heads is not None else []):
            for p in mod.parameters():
                p.requires_grad_(True)
    elif what == "norm":
        for mod in net.modules():
            if isinstance(mod, (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm)):
                for p in mod.parameters():
                    p.requires_grad_(True)
        for p in net.head.parameters():
            p.requires_grad_(True)
    return [p for p in net.parameters() if p.requires_grad]


def train_mode(net: torch.nn.Module) -> None:
    net.train()
    for mod in net.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.eval()  # frozen statistics


class Sampler:
    """Seeded crops of the targets (around the annotated structure) and of untouched slices."""

    def __init__(self, t: Any, config: Any, train_slices: Sequence[int],
                 div: int = 16):
        from .augment import DEFAULT

        self.t, self.cfg = t, config
        if config.patch_size is None:  # whole slices (the targets are dense everywhere)
            self.patch = tuple(max(64, -(-n // div) * div) for n in t.labels.shape[1:])
        else:
            self.patch = (int(config.patch_size),) * 2
        self.params = DEFAULT if config.mirror else _no_mirror(DEFAULT)
        self.train = list(train_slices)
        self.centres = {}
        for z in self.train:
            fg = np.argwhere((t.labels[z] > 0) & (t.weights[z] > 0))
            self.centres[z] = fg if fg.size else None
        others = [z for z in range(t.images.shape[0]) if z not in t.slices]
        self.others = others

    def batch(self, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        from .augment import random_crop

        imgs, labs, msks = [], [], []
        for _ in range(self.cfg.batch_size):
            z = self.train[int(rng.integers(len(self.train)))]
            c = self.centres[z]
            centre = None
            if c is not None and rng.random() < 0.8:  # crops around the annotation
                centre = c[int(rng.integers(len(c)))] + rng.integers(-16, 17, size=2)
            w = self.t.weights[z] > 0
            i, lab, m = random_crop(self.t.images[z], self.t.labels[z], w, self.patch, rng, centre=centre,
                                    augment=self.cfg.augment, params=self.params)
            imgs.append(i)
            labs.append(lab)
            msks.append(m)
        return np.stack(imgs), np.stack(labs), np.stack(msks)

    def consistency(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
        if not self.others or self.cfg.consistency <= 0:
            return None
        from .augment import _plain_crop, _starts

        imgs, probs = [], []
        for _ in range(self.cfg.consistency_batch):
            z = self.others[int(rng.integers(len(self.others)))]
            st = _starts(self.t.labels[z].shape, self.patch, rng, None)
            imgs.append(_plain_crop(self.t.images[z], st, self.patch, 0.0))
            probs.append(np.stack([_plain_crop(p, st, self.patch, 0.0) for p in self.t.base_probs[z]]))
        return np.stack(imgs), np.stack(probs)


class CachedSlices:
    """Whole slices, no augmentation, frozen encoder: the encoder's outputs (the skips) are
    computed once per slice and each step runs the decoder only (exact: nothing before the
    decoder changes). Same interface as :class:`Sampler`, the inputs being the skips."""

    def __init__(self, net: torch.nn.Module, t: Any, config: Any,
                 train_slices: Sequence[int], div: int = 16):
        self.t, self.cfg = t, config
        self.train = list(train_slices)
        self.others = [z for z in range(t.images.shape[0]) if z not in t.slices]
        self.pads = [(0, (-n) % div) for n in t.labels.shape[1:]]
        need = sorted(set(self.train) | (set(self.others) if config.consistency > 0 else set()))
        self.skips: dict[int, list[torch.Tensor]] = {}
        with torch.no_grad():
            for z in need:
                h = torch.from_numpy(np.pad(t.images[z], [(0, 0)] + self.pads)[None].astype(np.float32))
                if net.channels_last:
                    h = h.contiguous(memory_format=torch.channels_last)
                out = []
                for level in net.encoder:
                    h = level(h)
                    out.append(h)
                self.skips[z] = out

    def _pick(self, rng: np.random.Generator, pool: list[int], k: int) -> list[int]:
        return pool if k >= len(pool) else [pool[i] for i in rng.choice(len(pool), k, replace=False)]

    def _stack(self, zs: list[int]) -> list[torch.Tensor]:
        return [torch.cat([self.skips[z][i] for z in zs]) for i in range(len(self.skips[zs[0]]))]

    def batch(self, rng: np.random.Generator):
        zs = self._pick(rng, self.train, self.cfg.batch_size)
        lab = np.stack([np.pad(self.t.labels[z], self.pads) for z in zs])
        msk = np.stack([np.pad(self.t.weights[z] > 0, self.pads) for z in zs])
        img = np.stack([np.pad(self.t.images[z], [(0, 0)] + self.pads) for z in zs])
        return (img, self._stack(zs)), lab, msk

    def consistency(self, rng: np.random.Generator):
        if not self.others or self.cfg.consistency <= 0:
            return None
        zs = self._pick(rng, self.others, self.cfg.consistency_batch)
        probs = np.stack([np.pad(self.t.base_probs[z], [(0, 0)] + self.pads) for z in zs])
        return (None, self._stack(zs)), probs


def decode(net: torch.nn.Module, skips: list[torch.Tensor]) -> list[torch.Tensor]:
    """The decoder part of ``AttentionUNet.forward`` on cached encoder outputs (training mode:
    the full-resolution logits and the auxiliary heads' outputs)."""
    h = skips[-1]
    aux = []
    for i in range(len(net.decoder) - 1, -1, -1):
        h = net.decoder[i](h, skips[i])
        if net.aux_heads is not None and i > 0:
            aux.append(net.aux_heads[i - 1](h))
    return [net.head(h)] + list(reversed(aux))


def forward(net: torch.nn.Module, inp: Any) -> list[torch.Tensor]:
    if isinstance(inp, tuple):  # (image, cached skips)
        return decode(net, inp[1])
    out = net(torch.from_numpy(inp))
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _no_mirror(params: Any) -> Any:
    import dataclasses

    return dataclasses.replace(params, p_flip=0.0, p_rot90=0.0)


def boundary_band(labels: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` of a class boundary of ``labels`` (2D)."""
    from scipy import ndimage

    if width <= 0:
        return np.zeros(labels.shape, bool)
    fp = np.ones((3, 3), bool)
    hi = ndimage.maximum_filter(labels, footprint=fp)
    lo = ndimage.minimum_filter(labels, footprint=fp)
    edge = hi != lo
    return ndimage.binary_dilation(edge, iterations=width - 1) if width > 1 else edge
