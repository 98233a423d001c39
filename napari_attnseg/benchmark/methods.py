"""The benchmark's methods: classical baselines, our (attention) U-Net variants, the CRF, and
MONAI's ``AttentionUnet`` as an external reference, all behind one small interface.

No method sees the ground truth of a test case. Classical baselines (binary: 1 = object):

* ``otsu``: Otsu's threshold of the whole image (the brighter class is the object).
* ``region_growing``: Gaussian smoothing (sigma 1 px), then seeded region growing from the
  **image centre** (centre voxel/pixel; no ground truth is used) with a tolerance of 10 % of
  the smoothed image's intensity range, face connectivity.
* ``active_contours``: morphological Chan-Vese (scikit-image), checkerboard initialisation,
  the brighter phase is the object; 100 iterations (20 in ``--quick``).

Neural methods are trained by :func:`napari_attnseg.training.train_job` (the loop behind
``attnseg train``: Dice + CE, AdamW, polynomial LR decay, foreground oversampling, validation
every epoch keeping the best weights) for the same wall-clock budget each, and predict through
:func:`napari_attnseg.inference.predictor.predict` (Gaussian sliding window, slice by slice for
3D volumes). ``monai_attention_unet`` wraps ``monai.networks.nets.AttentionUnet`` (same channels,
stride 2 per level) so that the same ``train_job`` drives it with the same loss, optimizer,
augmentation and budget; MONAI's network has no deep supervision, so it trains without.

``model:REF`` (e.g. ``model:ct-phantom-2d``) evaluates an already trained registry model (name,
``name@version`` or folder) on the same test cases at the benchmark resolution, without training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._options import choose
from ..errors import MissingDependencyError

__all__ = ["ABLATIONS", "ALL_METHODS", "CLASSICAL", "Method", "get_method", "parse_methods", "run_classical"]


@dataclass(frozen=True)
class Method:
    """One row of the benchmark table."""

    name: str
    kind: str  # "classical" or "neural"
    description: str
    attention: bool = True
    deep_supervision: bool = True
    augment: bool = True
    crf: bool = False
    arch: str = "ours"  # "ours" or "monai"
    ablation: bool = False

    @property
    def model_key(self) -> tuple:
        """Methods with the same key share one trained network (e.g. attention_unet and +crf)."""
        return (self.arch, self.attention, self.deep_supervision, self.augment)


CLASSICAL = (
    Method("otsu", "classical", "Otsu threshold (brighter class)"),
    Method("region_growing", "classical", "region growing from the image centre (10 % tolerance, smoothed)"),
    Method("active_contours", "classical", "morphological Chan-Vese (brighter phase)"),
)
NEURAL = (
    Method("unet", "neural", "plain U-Net (no attention gates, no deep supervision)", attention=False,
           deep_supervision=False),
    Method("attention_unet", "neural", "attention U-Net (gates + deep supervision + augmentation)"),
    Method("attention_unet+crf", "neural", "attention U-Net + dense CRF (modality preset)", crf=True),
    Method("monai_attention_unet", "neural", "MONAI AttentionUnet, same loop/loss/budget", deep_supervision=False,
           arch="monai"),
)
ABLATIONS = (
    Method("ablation_no_attention", "neural", "attention U-Net without attention gates", attention=False,
           ablation=True),
    Method("ablation_no_deep_supervision", "neural", "attention U-Net without deep supervision",
           deep_supervision=False, ablation=True),
    Method("ablation_no_augmentation", "neural", "attention U-Net without augmentation", augment=False,
           ablation=True),
)
ALL_METHODS = CLASSICAL + NEURAL + ABLATIONS
_BY_NAME = {m.name: m for m in ALL_METHODS}
_ALIASES = {"ablation": [m.name for m in ABLATIONS], "classical": [m.name for m in CLASSICAL],
            "all": [m.name for m in ALL_METHODS]}


def get_method(name: str) -> Method:
    """A method by name; ``model:REF`` (a registry name, ``name@version`` or a model folder) is a
    trained model evaluated as is (no training, e.g. a shipped model)."""
    name = str(name).strip()
    if name.startswith("model:") and len(name) > 6:
        return Method(name, "pretrained", f"pretrained model {name[6:]} (not trained by the benchmark)")
    return _BY_NAME[choose(name, list(_BY_NAME), "benchmark method")]


def parse_methods(names) -> list[Method]:
    """Method names (also ``all``, ``classical``, ``ablation``; comma- or space-separated) in
    table order, without duplicates."""
    wanted: list[str] = []
    for item in names or ["all"]:
        for n in str(item).replace(",", " ").split():
            wanted.extend(_ALIASES[n.lower()] if n.lower() in _ALIASES else [get_method(n).name])
    ordered = [m for m in ALL_METHODS if m.name in set(wanted)]
    return ordered + [get_method(n) for n in dict.fromkeys(wanted) if n.startswith("model:")]


def run_classical(method: Method, image: np.ndarray, iterations: int = 100) -> np.ndarray:
    """Binary uint8 mask of a classical baseline on ``image`` (2D or 3D); no ground truth."""
    from scipy import ndimage

    from ..baselines import active_contours, otsu, region_growing

    img = np.asarray(image, dtype=np.float32)
    if method.name == "otsu":
        return otsu(img)
    if method.name == "region_growing":
        smooth = ndimage.gaussian_filter(img, 1.0)
        seed = tuple(s // 2 for s in smooth.shape)
        tol = 0.1 * float(smooth.max() - smooth.min())
        return region_growing(smooth, seed, tol)
    if method.name == "active_contours":
        return active_contours(img, "chan_vese", iterations=iterations)
    raise ValueError(f"{method.name} is not a classical method")


def build_network(method: Method, n_classes: int, channels: tuple[int, ...], spatial_dims: int = 2):
    """``(network, arch)``: our AttentionUNet or a wrapped MONAI AttentionUnet, and the
    :class:`~napari_attnseg.model.UNetConfig` that describes it to the training loop."""
    import torch

    from ..model.attention_unet import AttentionUNet, UNetConfig

    arch = UNetConfig(spatial_dims=spatial_dims, in_channels=1, out_channels=n_classes, channels=tuple(channels),
                      attention=method.attention, deep_supervision=method.deep_supervision)
    if method.arch == "ours":
        return AttentionUNet(arch), arch
    try:
        from monai.networks.nets import AttentionUnet
    except ImportError as exc:
        raise MissingDependencyError("monai", purpose="the monai_attention_unet benchmark method") from exc

    class _Monai(torch.nn.Module):
        """MONAI AttentionUnet with the attributes the training loop and predictor use."""

        def __init__(self) -> None:
            super().__init__()
            self.net = AttentionUnet(spatial_dims=spatial_dims, in_channels=1, out_channels=n_classes,
                                     channels=tuple(channels), strides=(2,) * (len(channels) - 1))
            self.divisor = 2 ** (len(channels) - 1)

        def forward(self, x):
            return self.net(x)

    return _Monai(), arch
