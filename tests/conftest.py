"""Shared test configuration: headless Qt, data paths, small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# With several Qt bindings installed pytest-qt guesses PySide6 > PyQt6 > PyQt5 (and qtpy then
# follows the binding already imported): let qtpy's QT_API pick one for both, PyQt5 by default.
os.environ.setdefault("PYTEST_QT_API", os.environ.get("QT_API", "pyqt5").lower())

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ATTNSEG_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """Path to ../shared/data; the test skips with the reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (set ATTNSEG_DATA to use it)")
    return SHARED_DATA


@pytest.fixture
def train_job_spy(monkeypatch):
    """What ``attnseg train`` hands the training loop, the run itself unchanged: after a run,
    ``seen["pairs"]`` (training + validation pairs) and ``seen["config"]`` (its TrainConfig)."""
    import napari_attnseg.training.loop as loop

    seen: dict = {}
    real = loop.train_job

    def spy(network, spec, train_pairs, val_pairs, config, *args, **kwargs):
        seen.update(pairs=list(train_pairs) + list(val_pairs), config=config)
        return real(network, spec, train_pairs, val_pairs, config, *args, **kwargs)

    monkeypatch.setattr(loop, "train_job", spy)
    return seen


@pytest.fixture(autouse=True)
def _isolated_model_registry(tmp_path_factory, monkeypatch):
    """Tests never write to the user's model registry or cache folder (ONNX exports, DICOMweb)."""
    monkeypatch.setenv("ATTNSEG_MODELS", str(tmp_path_factory.mktemp("models")))
    monkeypatch.setenv("ATTNSEG_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def make_tiny_registry():
    """``make(label_names, modality, patch_size, spatial_dims=2, **spec)``: the isolated registry
    with an untrained "tiny" model (channels 4-8-16, seeded) added and active; returns it."""
    def make(label_names: dict, modality: str, patch_size: tuple, spatial_dims: int = 2, **spec):
        import torch

        from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
        from napari_attnseg.model.checkpoint import ModelSpec
        from napari_attnseg.model.registry import ModelRegistry

        torch.manual_seed(0)
        arch = UNetConfig(spatial_dims=spatial_dims, in_channels=1, out_channels=len(label_names), channels=(4, 8, 16))
        reg = ModelRegistry()
        entry = reg.add_version("tiny", AttentionUNet(arch), ModelSpec(
            arch=arch, label_names=label_names, modality=modality, patch_size=patch_size, name="tiny", **spec))
        reg.set_active("tiny", entry.version)
        return reg

    return make
