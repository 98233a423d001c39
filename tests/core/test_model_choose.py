"""The one rule that picks a model for an image (model.choose), on synthetic registries, and
``attnseg predict`` without --model following it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_attnseg.model.choose import ModelInfo, choose_model, installed_models, mismatch
from napari_attnseg.model.registry import SHIPPED_ROOT, ModelRegistry


def _info(name, modality, anatomy="", shipped=True) -> ModelInfo:
    return ModelInfo(Path("/models") / name / "1", name, "1", shipped, modality, anatomy)


CT_DEMO = _info("ct-phantom-2d", "CT", "phantom")
US_HEAD = _info("hc18-ultrasound-2d", "US", "fetal head")
MR_HEART = _info("acdc-cardiac-mr-2d", "MR", "heart")


def test_modality_decides_and_says_plainly_when_nothing_fits():
    shipped = [CT_DEMO, US_HEAD]
    c = choose_model("US", "fetal head", models=shipped)
    assert c.status == "match" and c.info is US_HEAD
    assert choose_model("US", "", models=shipped).info is US_HEAD  # anatomy unknown: still US
    c = choose_model("MR", "spinal cord", models=shipped)
    assert c.info is None and c.status == "no-modality"
    assert "no MR model installed" in c.message and "hc18-ultrasound-2d" in c.message
    c = choose_model("", models=shipped)
    assert c.info is None and c.status == "unknown-modality" and "modality unknown" in c.message
    c = choose_model("CT", "", models=shipped)  # a real CT: the phantom demo is no answer
    assert c.info is None and c.status == "demo-only" and "demo" in c.message
    assert choose_model("CT", "phantom", models=shipped).info is CT_DEMO
    assert choose_model("CT", models=[]).status == "no-models"


def test_new_models_are_picked_up_and_anatomy_is_respected():
    models = [CT_DEMO, US_HEAD, MR_HEART]
    assert choose_model("MR", "heart", models=models).info is MR_HEART
    assert choose_model("mri", "cardiac", models=models).info is MR_HEART  # spellings
    assert choose_model("MR", "", models=models).info is MR_HEART
    c = choose_model("MR", "spinal cord", models=models)
    assert c.info is None and c.status == "anatomy" and "spinal cord" in c.message
    generic = _info("my-mr", "MR", "", shipped=False)
    assert choose_model("MR", "spinal cord", models=models + [generic]).info is generic
    # the exact anatomy beats a model that declares none; shipped before user models
    assert choose_model("MR", "heart", models=[generic, MR_HEART]).info is MR_HEART
    other = _info("mine-heart", "MR", "heart", shipped=False)
    assert choose_model("MR", "heart", models=[other, MR_HEART]).info is MR_HEART
    # for a phantom, any model of the modality beats nothing
    assert choose_model("MR", "phantom", models=models).info is MR_HEART


def test_mismatch_messages():
    assert mismatch(CT_DEMO, "MR") == "model is CT, image looks MR"
    assert "modality unknown" in mismatch(CT_DEMO, "")
    assert "demo" in mismatch(CT_DEMO, "CT", "abdomen")
    assert mismatch(CT_DEMO, "CT", "phantom") == ""
    assert mismatch(MR_HEART, "MR", "brain") == "model is for the heart, image looks like the brain"
    assert mismatch(US_HEAD, "US", "") == ""


def _copy_model(src: Path, dst: Path, **changes) -> Path:
    dst.mkdir(parents=True)
    config = json.loads((src / "config.json").read_text())
    config.update(changes)
    config.pop("config_sha256", None)  # an intended edit: the recorded config hash no longer applies
    (dst / "config.json").write_text(json.dumps(config))
    (dst / "weights.pt").write_bytes((src / "weights.pt").read_bytes())
    return dst


def test_shipped_models_declare_modality_and_anatomy_and_a_new_one_is_found(tmp_path):
    reg = ModelRegistry(root=tmp_path / "user")
    infos = {m.name: m for m in installed_models(reg)}
    assert infos["ct-phantom-2d"].demo and infos["ct-phantom-2d"].modality == "CT"
    assert infos["hc18-ultrasound-2d"].anatomy == "fetal head"
    assert all(m.modality for m in infos.values())
    # a model added to the registry (here a user model) is chosen without any code change
    assert infos["acdc-cardiac-mr-2d"].modality == "MR" and infos["acdc-cardiac-mr-2d"].anatomy == "heart"
    c = choose_model("MR", "heart", registry=reg)
    assert c.info is not None and c.info.name == "acdc-cardiac-mr-2d"
    _copy_model(SHIPPED_ROOT / "hc18-ultrasound-2d" / "1", tmp_path / "user" / "knee-mr" / "1",
                name="knee-mr", modality="MR", anatomy="knee")
    c = choose_model("MR", "knee", registry=reg)
    assert c.info is not None and c.info.name == "knee-mr"
    # a config.json without "anatomy" (older models) still loads and is chosen by modality
    from napari_attnseg.model.checkpoint import read_spec

    old = _copy_model(SHIPPED_ROOT / "hc18-ultrasound-2d" / "1", tmp_path / "user" / "old-us" / "1",
                      name="old-us")
    cfg = json.loads((old / "config.json").read_text())
    cfg.pop("anatomy")
    (old / "config.json").write_text(json.dumps(cfg))
    assert read_spec(old).anatomy == ""


def _png(path, arr):
    import imageio.v3 as iio

    iio.imwrite(str(path), arr)
    return path


def test_predict_without_model_follows_the_rule(tmp_path, capsys):
    from napari_attnseg.cli import main

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    img = _png(tmp_path / "images" / "001_HC.png", rng.integers(0, 256, (64, 96), dtype=np.uint8))
    # a grey PNG with nothing else: the CT demo model is NOT used; the error says why
    rc = main(["predict", str(img), "-o", str(tmp_path / "a.nii.gz"), "-q", "--device", "cpu"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "modality unknown" in err and "--modality" in err
    # the HC18 CSV beside the images says ultrasound, and gives the pixel size
    (tmp_path / "pixel_size_and_hc.csv").write_text(
        "filename,pixel_size_mm,head_circumference_mm\n001_HC.png,0.2,40\n")
    rc = main(["predict", str(img), "-o", str(tmp_path / "b.nii.gz"), "-q", "--device", "cpu"])
    assert rc == 0
    side = json.loads((tmp_path / "b.json").read_text())
    assert "hc18-ultrasound-2d@2" in side["provenance"]["model_id"]  # v2, the active version
    assert side["geometry"]["spacing_mm"] == [0.2, 0.2]
    # --spacing wins over the CSV; --modality MR: no MR model, said plainly
    rc = main(["predict", str(img), "-o", str(tmp_path / "c.nii.gz"), "-q", "--device", "cpu",
               "--spacing", "0.5"])
    assert rc == 0
    assert json.loads((tmp_path / "c.json").read_text())["geometry"]["spacing_mm"] == [0.5, 0.5]
    rc = main(["predict", str(img), "-o", str(tmp_path / "d.nii.gz"), "-q", "--modality", "MR"])
    err = capsys.readouterr().err  # the file name says fetal head: the shipped cardiac MR model is not used
    assert rc == 2 and "no MR model for the fetal head installed" in err and "acdc-cardiac-mr-2d" in err
    # --spacing is refused for files with a spacing of their own
    nib = pytest.importorskip("nibabel")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 2), np.float32), np.eye(4)), str(tmp_path / "s.nii"))
    rc = main(["predict", str(tmp_path / "s.nii"), "-o", str(tmp_path / "e.nii.gz"), "-q",
               "--spacing", "0.5", "--modality", "US"])
    assert rc == 2 and "own spacing" in capsys.readouterr().err
