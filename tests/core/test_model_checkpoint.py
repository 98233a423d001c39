"""Model folders: save/load round trip, spec validation, and clear errors for broken folders."""

from __future__ import annotations

import json

import pytest
import torch

from napari_attnseg.errors import ModelError, WriteError
from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
from napari_attnseg.model.checkpoint import ModelSpec, load_model, read_spec, save_model

SMALL = (4, 8, 16)


def _net_and_spec(**arch):
    torch.manual_seed(0)
    net = AttentionUNet(channels=SMALL, **arch).train()
    with torch.no_grad():
        shape = (2, 1) + (8,) * net.config.spatial_dims
        net(torch.randn(shape) + 0.5)  # non-default batch-norm statistics
    spec = ModelSpec(
        arch=net.config,
        label_names={i: ("background" if i == 0 else f"class{i}") for i in range(net.config.out_channels)},
        modality="CT",
        normalization={"preset": "CT", "clip": [-200, 300]},
        target_spacing=(1.0, 0.8) if net.config.spatial_dims == 2 else (2.0, 1.0, 1.0),
        patch_size=(64, 64) if net.config.spatial_dims == 2 else (16, 32, 32),
        name="liver",
        version="3",
        parent="liver@2:abc",
        provenance={"data": "synthetic", "dice": 0.5},
    )
    return net.eval(), spec


def test_round_trip_reproduces_outputs_exactly(tmp_path):
    net, spec = _net_and_spec()
    folder = save_model(tmp_path / "m", net, spec)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "weights.pt"]
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folders left behind
    loaded = load_model(folder)
    assert loaded.spec == spec
    assert not loaded.network.training
    assert loaded.folder == folder
    assert loaded.model_id == f"liver@3:{loaded.weights_sha256[:12]}"
    x = torch.randn(1, 1, 32, 32)
    with torch.inference_mode():
        assert torch.equal(loaded.network(x), net(x))
    assert torch.equal(loaded.network(x), net(x))  # the unfolded eval path too
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[k], v), k


def test_round_trip_3d_and_spec_json(tmp_path):
    net, spec = _net_and_spec(spatial_dims=3, out_channels=3, norm="group")
    folder = save_model(tmp_path / "m3", net, spec)
    config = json.loads((folder / "config.json").read_text())
    assert config["label_names"] == {"0": "background", "1": "class1", "2": "class2"}
    assert config["arch"]["spatial_dims"] == 3 and config["format"] == "napari-attnseg-model"
    assert read_spec(folder) == spec
    assert ModelSpec.from_json_dict(spec.to_json_dict()) == spec
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.inference_mode():
        assert torch.equal(load_model(folder).network(x), net(x))


def test_overwrite_refused_unless_asked(tmp_path):
    net, spec = _net_and_spec()
    folder = save_model(tmp_path / "m", net, spec)
    with pytest.raises(WriteError, match="overwrite=True"):
        save_model(folder, net, spec)
    other = AttentionUNet(channels=SMALL).eval()
    save_model(folder, other, spec, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    x = torch.randn(1, 1, 16, 16)
    with torch.inference_mode():
        assert torch.equal(load_model(folder).network(x), other(x))


def test_spec_must_match_network(tmp_path):
    net, spec = _net_and_spec()
    wrong = ModelSpec(arch=UNetConfig(channels=(4, 8)), label_names={0: "bg", 1: "x"}, patch_size=(64, 64))
    with pytest.raises(ModelError, match="differs from the spec"):
        save_model(tmp_path / "m", net, wrong)
    assert not (tmp_path / "m").exists()


def test_spec_validation():
    arch = UNetConfig(channels=SMALL)
    with pytest.raises(ValueError, match=r"every class 0\.\.1"):
        ModelSpec(arch=arch, label_names={0: "bg"})
    with pytest.raises(ValueError, match="multiples of the network's divisor 4"):
        ModelSpec(arch=arch, label_names={0: "bg", 1: "x"}, patch_size=(30, 32))
    with pytest.raises(ValueError, match="patch_size must be 3"):
        ModelSpec(arch=UNetConfig(spatial_dims=3, channels=SMALL), label_names={0: "bg", 1: "x"})
    with pytest.raises(ValueError, match="target_spacing"):
        ModelSpec(arch=arch, label_names={0: "bg", 1: "x"}, target_spacing=(1.0, -1.0))
    spec = ModelSpec(arch=arch, label_names={"1": "x", "0": "bg"}, patch_size=[32, 32])
    assert spec.label_names == {0: "bg", 1: "x"} and spec.patch_size == (32, 32)


def test_missing_folder_and_config(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="config.json is missing"):
        load_model(tmp_path / "empty")


def test_corrupt_config(tmp_path):
    net, spec = _net_and_spec()
    folder = save_model(tmp_path / "m", net, spec)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="config.json is corrupt"):
        load_model(folder)
    (folder / "config.json").write_text(json.dumps({"arch": {"channels": [4, 8]}}))
    with pytest.raises(ModelError, match="'label_names' is missing"):
        load_model(folder)


def test_missing_and_corrupted_weights(tmp_path):
    net, spec = _net_and_spec()
    folder = save_model(tmp_path / "m", net, spec)
    weights = folder / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="corrupted or was replaced"):
        load_model(folder)
    # without a recorded checksum the damage is still reported, by torch.load
    config = json.loads((folder / "config.json").read_text())
    del config["weights_sha256"], config["config_sha256"]  # an intended edit drops the config hash
    (folder / "config.json").write_text(json.dumps(config))
    weights.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(ModelError, match="weights.pt is corrupted"):
        load_model(folder)
    weights.unlink()
    with pytest.raises(ModelError, match="weights file .* is missing"):
        load_model(folder)


def test_weights_not_matching_architecture_names_keys(tmp_path):
    net, spec = _net_and_spec()
    folder = save_model(tmp_path / "m", net, spec)
    config = json.loads((folder / "config.json").read_text())
    config["arch"]["channels"] = [4, 8, 32]  # edited by hand: no longer the saved network
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="config.json was changed after the model was saved"):
        load_model(folder)
    del config["config_sha256"]  # the edit made "intended": the weights check then names the keys
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"do not match the architecture.*shape mismatches.*encoder\.2\.conv1"):
        load_model(folder)
    config["arch"]["channels"] = [4, 8, 16]
    config["arch"]["attention"] = False
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"unexpected keys: decoder\.0\.gate"):
        load_model(folder)


def test_weights_file_must_be_a_state_dict(tmp_path):
    net, spec = _net_and_spec()
    folder = save_model(tmp_path / "m", net, spec)
    torch.save([1, 2, 3], folder / "weights.pt")
    config = json.loads((folder / "config.json").read_text())
    del config["weights_sha256"], config["config_sha256"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="does not hold a state_dict"):
        load_model(folder)
