"""Attention U-Net for 2D and 3D segmentation (our own implementation).

Reference: O. Oktay et al., "Attention U-Net: Learning Where to Look for the Pancreas",
MIDL 2018, arXiv:1804.03999. The network is a U-Net (Ronneberger et al., 2015) whose skip
connections pass through *additive attention gates*: the coarser decoder feature map (the
gating signal ``g``) decides, per voxel, how much of the encoder feature map (the skip ``x``)
reaches the decoder. Multi-scale deep supervision (Lee et al., 2015; as in Oktay's paper and
nnU-Net) adds 1x1 "auxiliary" heads on the lower-resolution decoder levels during training.

Shapes (``S`` = spatial sizes, ``(H, W)`` in 2D or ``(D, H, W)`` in 3D):

* input: ``(N, in_channels, *S)``, float; every size in ``S`` a multiple of
  :attr:`AttentionUNet.divisor` (``2 ** (len(channels) - 1)``, 16 for the default).
* output (eval, or training without deep supervision): raw logits ``(N, out_channels, *S)``
  (no softmax).
* output (training with ``deep_supervision=True``): a list
  ``[logits at S, logits at S/2, logits at S/4, ...]`` -- one tensor per decoder level except
  the coarsest, each at its own resolution.

Speed on the CPU (inference): in eval mode *without* autograd (``torch.inference_mode()`` or
``torch.no_grad()``), batch-norm is folded into the preceding convolution (weights cached and
recomputed automatically whenever a parameter or running statistic changes), ReLUs run in
place, and activations use the channels-last memory format. The attention gate works at the
coarse (gating) resolution, as in the paper, so it costs little. The model also runs under
``torch.autocast("cpu", dtype=torch.bfloat16)`` (the opt-in reduced-precision path).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._options import choose
from ..errors import ModelError

logger = logging.getLogger(__name__)

NORMS = ("batch", "instance", "group")
FUSIONS = ("add", "concat")

__all__ = ["FUSIONS", "NORMS", "AttentionUNet", "UNetConfig", "count_parameters"]


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of an :class:`AttentionUNet` (everything needed to rebuild it).

    ``channels[i]`` is the number of feature maps at resolution level ``i`` (level 0 is the
    input resolution; each further level halves every spatial size), so ``len(channels) - 1``
    stride-2 downsamplings. ``out_channels`` counts classes *including* background.
    ``norm``: "batch", "instance" or "group". ``attention``: gate the skip connections.
    ``deep_supervision``: auxiliary 1x1 heads on the lower decoder levels (training only).
    ``skip_fusion``: how a decoder level joins the (gated) skip with the upsampled coarser
    features: "add" (sum, then two 3x3 convs at ``c`` channels; the default, ~35% fewer
    decoder FLOPs) or "concat" (the original U-Net: concatenate, then convs ``2c -> c -> c``).
    """

    spatial_dims: int = 2
    in_channels: int = 1
    out_channels: int = 2
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    norm: str = "batch"
    attention: bool = True
    deep_supervision: bool = True
    dropout: float = 0.0
    skip_fusion: str = "add"

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims!r}")
        for name in ("in_channels", "out_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        chans = tuple(self.channels)
        if len(chans) < 2 or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in chans):
            raise ValueError(
                f"channels must be at least two positive integers (one per resolution level), got {self.channels!r}"
            )
        object.__setattr__(self, "channels", chans)
        object.__setattr__(self, "norm", choose(self.norm, NORMS, "normalisation"))
        object.__setattr__(self, "skip_fusion", choose(self.skip_fusion, FUSIONS, "skip fusion"))
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        object.__setattr__(self, "dropout", float(self.dropout))
        object.__setattr__(self, "attention", bool(self.attention))
        object.__setattr__(self, "deep_supervision", bool(self.deep_supervision))

    @property
    def divisor(self) -> int:
        """Every spatial input size must be a multiple of this (``2 ** (levels - 1)``)."""
        return 2 ** (len(self.channels) - 1)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys raise ``ValueError`` naming them."""
        if not isinstance(d, dict):
            raise ValueError(f"architecture must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown architecture key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}"
            )
        kw = dict(d)
        if "channels" in kw:
            if not isinstance(kw["channels"], (list, tuple)):
                raise ValueError(f"channels must be a list of integers, got {kw['channels']!r}")
            kw["channels"] = tuple(kw["channels"])
        return cls(**kw)


# --------------------------------------------------------------------------- building blocks


def _conv_cls(dims: int) -> type[nn.Module]:
    return nn.Conv2d if dims == 2 else nn.Conv3d


def _memory_format(dims: int) -> torch.memory_format:
    return torch.channels_last if dims == 2 else torch.channels_last_3d


def _make_norm(kind: str, dims: int, channels: int) -> nn.Module:
    if kind == "batch":
        return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(channels)
    if kind == "instance":
        return (nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d)(channels, affine=True)
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class ConvNormAct(nn.Module):
    """3x3(x3) convolution -> normalisation -> ReLU (-> dropout), the U-Net's basic unit.

    ``(N, cin, *S) -> (N, cout, *S / stride)``. The convolution has no bias (the
    normalisation removes it). With batch-norm, in eval mode and with autograd off, the
    normalisation is folded into the convolution's weights and bias (cached; the cache is
    keyed on the tensors' version counters, so loading new weights or changing running
    statistics refreshes it).
    """

    def __init__(self, dims: int, cin: int, cout: int, stride: int = 1, norm: str = "batch", dropout: float = 0.0):
        super().__init__()
        self.dims = dims
        self.conv = _conv_cls(dims)(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)
        self.norm = _make_norm(norm, dims, cout)
        self.drop = nn.Dropout(dropout) if dropout > 0 else None
        self._is_bn = norm == "batch"
        self._fused_key: tuple | None = None
        self._fused: tuple[Tensor, Tensor] | None = None

    def _fused_params(self) -> tuple[Tensor, Tensor]:
        conv, bn = self.conv, self.norm
        # the batch-norm kernel updates running statistics without bumping their version
        # counters, but it always bumps num_batches_tracked's; train() also clears the cache
        tensors = (conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.num_batches_tracked)
        key = None
        if not any(t.is_inference() for t in tensors):
            key = tuple((t._version, t.data_ptr()) for t in tensors) + (float(bn.eps),)
            if key == self._fused_key and self._fused is not None:
                return self._fused
        with torch.inference_mode(False), torch.no_grad():
            scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
            w = conv.weight * scale.reshape((-1,) + (1,) * (self.dims + 1))
            b = bn.bias - bn.running_mean * scale
            w = w.contiguous(memory_format=_memory_format(self.dims))
        self._fused, self._fused_key = (w, b), key
        return w, b

    def train(self, mode: bool = True) -> ConvNormAct:
        if mode:
            self._fused = self._fused_key = None
        return super().train(mode)

    def forward(self, x: Tensor) -> Tensor:
        if self._is_bn and not self.training and not torch.is_grad_enabled():
            w, b = self._fused_params()
            conv = F.conv2d if self.dims == 2 else F.conv3d
            y = conv(x, w, b, self.conv.stride, self.conv.padding)
        else:
            y = self.norm(self.conv(x))
        y = F.relu(y, inplace=True)
        if self.drop is not None:
            y = self.drop(y)
        return y


class EncoderLevel(nn.Module):
    """Two :class:`ConvNormAct`; the first has stride 2 on every level but the first.

    ``(N, cin, *S) -> (N, cout, *S / stride)``.
    """

    def __init__(self, dims: int, cin: int, cout: int, stride: int, norm: str, dropout: float):
        super().__init__()
        self.conv1 = ConvNormAct(dims, cin, cout, stride, norm, dropout)
        self.conv2 = ConvNormAct(dims, cout, cout, 1, norm, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018, Fig. 2) on a skip connection.

    ``x``: skip features ``(N, cx, *S)``; ``g``: gating signal, the coarser decoder features
    ``(N, cg, *S/2)``. Computed at the coarse resolution, as in the paper::

        q = ReLU(theta(x) + phi(g))      theta: 2x2(x2) conv, stride 2, no bias; phi: 1x1 conv
        alpha = sigmoid(psi(q))          psi: 1x1 conv to one channel, (N, 1, *S/2)
        return x * upsample(alpha)       (bi/tri-linear upsampling to S) -> (N, cx, *S)

    The paper's output 1x1 transform ``W`` is left out: the gated skip feeds straight into
    the decoder's convolution, which is already a learned linear map of it.
    """

    def __init__(self, dims: int, cx: int, cg: int, inter: int | None = None):
        super().__init__()
        inter = inter or max(cx // 2, 1)
        conv = _conv_cls(dims)
        self.theta = conv(cx, inter, kernel_size=2, stride=2, bias=False)
        self.phi = conv(cg, inter, kernel_size=1, bias=True)
        self.psi = conv(inter, 1, kernel_size=1, bias=True)
        self._mode = "bilinear" if dims == 2 else "trilinear"

    def attention(self, x: Tensor, g: Tensor) -> Tensor:
        """The attention coefficients ``alpha`` in [0, 1] at the skip's resolution, ``(N, 1, *S)``."""
        q = F.relu(self.theta(x) + self.phi(g), inplace=True)
        alpha = torch.sigmoid(self.psi(q))
        return F.interpolate(alpha, size=x.shape[2:], mode=self._mode, align_corners=False)

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        return x * self.attention(x, g)


class DecoderLevel(nn.Module):
    """Upsample the coarser features, gate the skip, fuse them, two :class:`ConvNormAct`.

    ``coarse``: ``(N, cin, *S/2)``, ``skip``: ``(N, cout, *S)`` -> ``(N, cout, *S)``. The
    upsampling is a 2x2(x2) transposed convolution with stride 2 (``cin -> cout``); the
    attention gate (if any) uses ``coarse`` as its gating signal. Fusion "add":
    ``conv2(conv1(gated_skip + up))`` with ``c -> c`` convs; "concat":
    ``conv2(conv1(cat[gated_skip, up]))`` with ``conv1: 2c -> c``.
    """

    def __init__(
        self, dims: int, cin: int, cout: int, norm: str, dropout: float, attention: bool, fusion: str = "add"
    ):
        super().__init__()
        tconv = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
        self.up = tconv(cin, cout, kernel_size=2, stride=2, bias=True)
        self.gate = AttentionGate(dims, cout, cin) if attention else None
        self.concat = fusion == "concat"
        self.conv1 = ConvNormAct(dims, 2 * cout if self.concat else cout, cout, 1, norm, dropout)
        self.conv2 = ConvNormAct(dims, cout, cout, 1, norm, dropout)

    def forward(self, coarse: Tensor, skip: Tensor) -> Tensor:
        if self.gate is not None:
            skip = self.gate(skip, coarse)
        up = self.up(coarse)
        h = torch.cat([skip, up], dim=1) if self.concat else up.add_(skip)
        return self.conv2(self.conv1(h))


# --------------------------------------------------------------------------- the network


class AttentionUNet(nn.Module):
    """Attention U-Net (Oktay et al., MIDL 2018, arXiv:1804.03999) for 2D or 3D images.

    ``AttentionUNet(config=None, **overrides)``: ``overrides`` replace fields of ``config``
    (default :class:`UNetConfig`), e.g. ``AttentionUNet(spatial_dims=3, out_channels=4)``.

    Input ``(N, in_channels, *S)`` with every size in ``S`` a multiple of :attr:`divisor`;
    output raw logits ``(N, out_channels, *S)``, or in training mode with deep supervision a
    list ``[full-resolution logits, logits at S/2, S/4, ...]``.
    Bad inputs raise :class:`~napari_attnseg.errors.ModelError` saying how to fix them.
    """

    def __init__(self, config: UNetConfig | None = None, **overrides: Any):
        super().__init__()
        config = config if config is not None else UNetConfig()
        if not isinstance(config, UNetConfig):
            raise ValueError(f"config must be a UNetConfig, got {type(config).__name__}")
        if overrides:
            known = {f.name for f in dataclasses.fields(UNetConfig)}
            unknown = sorted(set(overrides) - known)
            if unknown:
                raise ValueError(f"unknown AttentionUNet option(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}")
            config = dataclasses.replace(config, **overrides)
        self.config = config
        #: Use the channels-last memory format for activations on the CPU (faster convolutions).
        self.channels_last = True
        dims, ch, norm, p = config.spatial_dims, config.channels, config.norm, config.dropout
        self.encoder = nn.ModuleList(
            EncoderLevel(dims, config.in_channels if i == 0 else ch[i - 1], ch[i], 1 if i == 0 else 2, norm, p)
            for i in range(len(ch))
        )
        # decoder[i] produces level i from level i + 1
        self.decoder = nn.ModuleList(
            DecoderLevel(dims, ch[i + 1], ch[i], norm, p, config.attention, config.skip_fusion)
            for i in range(len(ch) - 1)
        )
        conv = _conv_cls(dims)
        self.head = conv(ch[0], config.out_channels, kernel_size=1, bias=True)
        # aux_heads[i - 1] reads decoder level i (resolution S / 2**i), i = 1 .. levels - 2
        self.aux_heads = (
            nn.ModuleList(conv(ch[i], config.out_channels, kernel_size=1, bias=True) for i in range(1, len(ch) - 1))
            if config.deep_supervision
            else None
        )
        self._init_weights()
        # channels-last weights: the CPU convolutions then need no per-call weight reorder
        self.to(memory_format=_memory_format(dims))

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def divisor(self) -> int:
        """Spatial input sizes must be multiples of this: ``2 ** (len(channels) - 1)``."""
        return self.config.divisor

    def check_input(self, x: Tensor) -> None:
        """Raise :class:`ModelError` with a fix-it message unless ``x`` fits the network."""
        cfg = self.config
        if not isinstance(x, Tensor):
            raise ModelError(f"the network expects a torch.Tensor, got {type(x).__name__}")
        want = cfg.spatial_dims + 2
        axes = "(N, C, H, W)" if cfg.spatial_dims == 2 else "(N, C, D, H, W)"
        if x.ndim != want:
            raise ModelError(
                f"input has {x.ndim} dimensions (shape {tuple(x.shape)}) but this {cfg.spatial_dims}D network "
                f"expects {want}: {axes}; add the batch and channel axes, e.g. x[None, None]"
            )
        if x.shape[1] != cfg.in_channels:
            raise ModelError(
                f"input has {x.shape[1]} channel(s) (shape {tuple(x.shape)}) but the network expects "
                f"{cfg.in_channels}; axis 1 must be the channel axis {axes}"
            )
        spatial = tuple(x.shape[2:])
        d = self.divisor
        if any(s % d for s in spatial) or any(s == 0 for s in spatial):
            padded = tuple(max(d, -(-s // d) * d) for s in spatial)
            raise ModelError(
                f"input spatial size {spatial} is not a multiple of {d}: pad to a multiple of {d} "
                f"(e.g. {padded}) or use napari_attnseg.inference.sliding_window, which pads and crops"
            )

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        """``(N, in_channels, *S) -> (N, out_channels, *S)`` raw logits (see the class docstring)."""
        self.check_input(x)
        if self.channels_last and x.device.type == "cpu":
            x = x.contiguous(memory_format=_memory_format(self.config.spatial_dims))
        skips = []
        h = x
        for level in self.encoder:
            h = level(h)
            skips.append(h)
        want_aux = self.training and self.aux_heads is not None
        aux: list[Tensor] = []
        for i in range(len(self.decoder) - 1, -1, -1):
            h = self.decoder[i](h, skips[i])
            if want_aux and i > 0:
                aux.append(self.aux_heads[i - 1](h))
        out = self.head(h).contiguous()
        if want_aux:
            return [out] + [a.contiguous() for a in reversed(aux)]
        return out

    def fuse_for_inference(self) -> AttentionUNet:
        """Prepare for fast inference: eval mode, channels-last weights, batch-norm folded now.

        The parameters and ``state_dict`` are unchanged (folded weights are a cache), so the
        model can still be saved or trained afterwards. Returns ``self``.
        """
        self.eval()
        if next(self.parameters()).device.type == "cpu":
            self.to(memory_format=_memory_format(self.config.spatial_dims))
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, ConvNormAct) and m._is_bn:
                    m._fused_params()
        return self

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"spatial_dims={c.spatial_dims}, in={c.in_channels}, out={c.out_channels}, channels={c.channels}, "
            f"norm={c.norm}, attention={c.attention}, deep_supervision={c.deep_supervision}, "
            f"skip_fusion={c.skip_fusion}"
        )


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters of ``model`` (trainable or not)."""
    return int(sum(p.numel() for p in model.parameters()))
