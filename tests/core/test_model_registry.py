"""ModelRegistry: versions, active version, resolve, shipped models, ATTNSEG_MODELS."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from napari_attnseg.errors import ModelError
from napari_attnseg.model.attention_unet import AttentionUNet
from napari_attnseg.model.checkpoint import ModelSpec, load_model, save_model
from napari_attnseg.model.registry import ModelRegistry


@pytest.fixture
def net_spec():
    torch.manual_seed(0)
    net = AttentionUNet(channels=(4, 8)).eval()
    spec = ModelSpec(arch=net.config, label_names={0: "background", 1: "organ"}, patch_size=(32, 32), name="tmp")
    return net, spec


def test_env_var_is_honoured():
    reg = ModelRegistry()
    assert reg.root == Path(os.environ["ATTNSEG_MODELS"])
    assert reg.root != Path("~/.napari-attnseg/models").expanduser()


def test_versions_active_and_get(tmp_path, net_spec):
    net, spec = net_spec
    reg = ModelRegistry(tmp_path / "reg", shipped_root=tmp_path / "none")
    assert reg.list_models() == [] and reg.default_model() is None
    e1 = reg.add_version("liver", net, spec)
    e2 = reg.add_version("liver", net, spec, parent="liver@1")
    assert (e1.version, e2.version) == ("1", "2")
    assert e2.parent == "liver@1" and e1.parent is None and not e2.shipped
    assert e2.path == tmp_path / "reg" / "liver" / "2"
    loaded = load_model(e2.path)
    assert (loaded.spec.name, loaded.spec.version, loaded.spec.parent) == ("liver", "2", "liver@1")
    assert [e.version for e in reg.versions("liver")] == ["1", "2"]
    # adding a version does not change what "liver" means: the implicit choice (the only
    # version) was recorded in active.json before version 2 appeared
    assert reg.get("liver").version == "1" and reg.active("liver").version == "1"
    reg.set_active("liver", 2)
    assert reg.active("liver").version == "2" and reg.get("liver").version == "2"
    e3 = reg.add_version("liver", net, spec, activate=True)
    assert e3.version == "3" and reg.get("liver").version == "3"
    assert not (e3.path / ".activate").exists()
    reg.set_active("liver", 1)
    assert reg.active("liver").version == "1"
    assert reg.get("liver").version == "1"
    assert reg.get("liver", "2").version == "2"
    reg.add_version("kidney", net, spec)
    assert reg.active("kidney") is None and reg.get("kidney").version == "1"  # one version: no file needed
    assert [e.ref for e in reg.list_models()] == ["kidney@1", "liver@1", "liver@2", "liver@3"]


def test_versions_sort_numerically_and_skip_stray_folders(tmp_path, net_spec):
    net, spec = net_spec
    reg = ModelRegistry(tmp_path, shipped_root=tmp_path / "none")
    for _ in range(10):
        reg.add_version("m", net, spec)
    (tmp_path / "m" / "11").mkdir()  # stray folder without config.json
    assert [e.version for e in reg.versions("m")][-3:] == ["8", "9", "10"]
    assert reg.get("m").version == "1"  # never activated: still the first
    assert reg.add_version("m", net, spec).version == "12"


def test_errors(tmp_path, net_spec):
    net, spec = net_spec
    reg = ModelRegistry(tmp_path, shipped_root=tmp_path / "none")
    reg.add_version("liver", net, spec)
    with pytest.raises(ModelError, match="did you mean 'liver'"):
        reg.get("livr")
    with pytest.raises(ModelError, match=r"no version 7 \(versions: 1\)"):
        reg.get("liver", 7)
    with pytest.raises(ModelError, match="no version 5"):
        reg.set_active("liver", 5)
    with pytest.raises(ModelError, match="invalid model name"):
        reg.add_version("../evil", net, spec)
    with pytest.raises(ModelError, match="does not exist"):
        reg.resolve(str(tmp_path / "missing" / "folder"))


def test_resolve(tmp_path, net_spec):
    net, spec = net_spec
    reg = ModelRegistry(tmp_path / "reg", shipped_root=tmp_path / "none")
    reg.add_version("liver", net, spec)
    reg.add_version("liver", net, spec, activate=True)
    assert reg.resolve("liver") == tmp_path / "reg" / "liver" / "2"
    assert reg.resolve("liver@1") == tmp_path / "reg" / "liver" / "1"
    folder = save_model(tmp_path / "elsewhere", net, spec)
    assert reg.resolve(str(folder)) == folder
    assert reg.resolve(folder) == folder
    with pytest.raises(ModelError, match="give a version"):
        reg.resolve("liver@")


def test_shipped_models_are_listed_read_only(tmp_path, net_spec):
    net, spec = net_spec
    shipped = tmp_path / "shipped"
    save_model(shipped / "abdomen" / "1", net, spec)
    reg = ModelRegistry(tmp_path / "user", shipped_root=shipped)
    assert [(e.ref, e.shipped) for e in reg.list_models()] == [("abdomen@1", True)]
    assert reg.default_model().path == shipped / "abdomen" / "1"
    assert reg.resolve("abdomen") == shipped / "abdomen" / "1"
    # fine-tuning a shipped model continues its numbering in the user root
    entry = reg.add_version("abdomen", net, spec, parent="abdomen@1")
    assert entry.version == "2" and entry.path.parent == tmp_path / "user" / "abdomen"
    assert [(e.version, e.shipped) for e in reg.versions("abdomen")] == [("1", True), ("2", False)]
    reg.set_active("abdomen", 1)
    assert reg.get("abdomen").shipped
    assert not any((shipped / "abdomen").glob("*.json"))  # nothing written into shipped models


def test_package_shipped_folder_is_optional():
    reg = ModelRegistry()
    default = reg.default_model()
    assert default is None or default.shipped


def test_default_model_prefers_the_modality(tmp_path, net_spec):
    from dataclasses import replace

    net, spec = net_spec
    shipped = tmp_path / "shipped"
    save_model(shipped / "a-mr" / "1", net, replace(spec, modality="MR"))
    save_model(shipped / "b-us" / "1", net, replace(spec, modality="US"))
    save_model(shipped / "b-us" / "2", net, replace(spec, modality="US"))
    save_model(shipped / "ct-phantom-2d" / "1", net, replace(spec, modality="CT"))
    reg = ModelRegistry(tmp_path / "user", shipped_root=shipped)
    assert reg.default_model().name == "ct-phantom-2d"  # the named default, not the first name
    assert reg.default_model("us").path == shipped / "b-us" / "2"
    assert reg.default_model("MR").name == "a-mr"
    assert reg.default_model("PET").name == "ct-phantom-2d"  # no match: the default
    assert reg.default_model("").name == "ct-phantom-2d"
    assert ModelRegistry(tmp_path / "user", shipped_root=tmp_path / "none").default_model("US") is None


def test_default_model_follows_the_activated_fine_tune(tmp_path, net_spec):
    """A fine-tuned version becomes the default only once activated (it beat its parent)."""
    from dataclasses import replace

    net, spec = net_spec
    shipped = tmp_path / "shipped"
    save_model(shipped / "b-us" / "1", net, replace(spec, modality="US"))
    save_model(shipped / "ct-phantom-2d" / "1", net, replace(spec, modality="CT"))
    reg = ModelRegistry(tmp_path / "user", shipped_root=shipped)
    tuned = reg.add_version("b-us", net, replace(spec, modality="US"), parent="b-us@1")
    assert tuned.version == "2" and not tuned.shipped
    assert reg.default_model("US").path == shipped / "b-us" / "1"  # not activated: shipped
    reg.set_active("b-us", "2")
    assert reg.default_model("US").path == tuned.path
    assert reg.default_model().path == shipped / "ct-phantom-2d" / "1"  # other names unchanged
    reg.set_active("ct-phantom-2d", "1")
    assert reg.default_model().path == shipped / "ct-phantom-2d" / "1"
