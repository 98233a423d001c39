"""The Attention U-Net, its self-describing model folders and the local model registry.

Names are imported lazily (``from napari_attnseg.model import AttentionUNet`` loads torch;
``import napari_attnseg.model`` alone does not).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AttentionUNet": "attention_unet",
    "UNetConfig": "attention_unet",
    "count_parameters": "attention_unet",
    "ModelSpec": "checkpoint",
    "LoadedModel": "checkpoint",
    "save_model": "checkpoint",
    "load_model": "checkpoint",
    "read_spec": "checkpoint",
    "ModelRegistry": "registry",
    "ModelEntry": "registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
