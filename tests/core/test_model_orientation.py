"""2D models that declare the orientation they were trained in (``ModelSpec.orientation``): a
scan with known geometry stored the other way along an axis (DICOM's rows toward posterior,
columns toward the right) is reversed before the network and back after, in inference, the
slice preview, training and both fine-tunes; a model trained without mirrored images (labels
that name a side) gets no mirror TTA, no flip uncertainty and no flip augmentation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_attnseg._progress import drain
from napari_attnseg.errors import ModelError
from napari_attnseg.inference.predictor import (PredictConfig, as_volume, effective_tta, predict,
                                                predict_slice, tta_note)
from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
from napari_attnseg.model.checkpoint import ModelSpec, load_model, mirror_label_permutation, save_model
from napari_attnseg.model.config_check import check_config
from napari_attnseg.orientation import axis_letters, orientation_code, reorientation_to
from napari_attnseg.volume import DIRECTION_NOMINAL, SPACING_NOMINAL, Volume, direction_is_nominal

ARCH = UNetConfig(spatial_dims=2, in_channels=1, out_channels=3, channels=(4, 8, 16))
SIDED = {0: "background", 1: "right kidney", 2: "left kidney"}
CFG = PredictConfig(device="cpu", precision="fp32", tta=False)
SAL = np.diag([1.0, 1.0, -1.0])  # the shipped models' training files: columns toward the left


def _model(tmp_path, orientation="SAL", labels=None, context=0, mirror=False):
    arch = dataclasses.replace(ARCH, in_channels=2 * context + 1)
    spec = ModelSpec(arch=arch, label_names=labels or SIDED, modality="MR", normalization={"preset": "MR"},
                     patch_size=(32, 32), name="o", orientation=orientation, context_slices=context,
                     provenance={"params": {"mirror": mirror}})
    torch.manual_seed(0)
    return load_model(save_model(tmp_path / f"o-{orientation}-{context}-{mirror}", AttentionUNet(arch), spec))


def _scan(direction=SAL, nominal=False, shape=(5, 24, 32)):
    data = np.random.default_rng(0).normal(100.0, 30.0, shape).astype(np.float32)
    return Volume(data, (4.0, 1.0, 1.0), direction=direction, modality="MR",
                  header={SPACING_NOMINAL: True} if nominal else {})


def _restored(scan, axes):
    """The same patient stored reversed along ``axes`` (data flipped, direction negated)."""
    d = np.array(scan.direction, float)
    data = np.asarray(scan.data)
    for a in axes:
        d[:, a] *= -1
        data = np.flip(data, a)
    return dataclasses.replace(scan, data=np.ascontiguousarray(data), direction=d)


def test_orientation_codes_and_the_reorientations_that_reach_them():
    assert orientation_code(SAL) == "SAL"
    assert orientation_code(np.diag([1.0, -1.0, -1.0])) == "SPL"  # DICOM axial (LPS)
    assert orientation_code(np.eye(3)) == "SAR"
    assert reorientation_to(np.diag([1.0, -1.0, -1.0]), "SAL") == ((0, 1, 2), (1,))
    assert reorientation_to(np.diag([-1.0, 1.0, 1.0]), "SAL") == ((0, 1, 2), (0, 2))
    # a sagittally stored scan (PSR order): transposed to world order, then reversed
    psr = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert orientation_code(psr) == "SPR" and reorientation_to(psr, "SAL") == ((2, 0, 1), (1, 2))
    # OpenKBP's arrays: slices toward inferior, rows across the patient, columns toward posterior
    assert reorientation_to(np.diag([1.0, -1.0, -1.0]), "ILP") == ((0, 2, 1), (0,))
    assert reorientation_to(np.diag([1.0, -1.0]), "SAL") == ((0, 1), ())  # a 2D slice: A/P, R/L
    assert reorientation_to(-np.eye(2), "SAL") == ((0, 1), (0,))
    assert reorientation_to(np.diag([1.0, -1.0]), "ILP") == ((1, 0), (1,))
    for code in ("SAL", "ILP", "SRA", "IPR"):  # the result runs as asked, whatever the storage
        for d in (SAL, np.diag([1.0, -1.0, -1.0]), psr, -np.eye(3)):
            perm, flips = reorientation_to(d, code)
            out = d[:, list(perm)] * np.where(np.isin(np.arange(3), flips), -1.0, 1.0)
            assert "".join(t for t, _ in axis_letters(out)) == code, (code, d)


def test_spec_and_config_checks(tmp_path):
    spec = ModelSpec(arch=ARCH, label_names=SIDED, patch_size=(32, 32), orientation="SPL")
    d = spec.to_json_dict()
    assert d["orientation"] == "SPL" and ModelSpec.from_json_dict(d) == spec
    assert "orientation" not in dataclasses.replace(spec, orientation=None).to_json_dict()
    check_config(d, "config.json")
    assert ModelSpec(arch=ARCH, label_names=SIDED, patch_size=(32, 32), orientation="ILP").orientation == "ILP"
    for bad in ("ASL", "LAS", "SSL", "SA", "sal", "SALX", 3):
        with pytest.raises(ValueError, match="orientation"):
            ModelSpec(arch=ARCH, label_names=SIDED, patch_size=(32, 32), orientation=bad)
        with pytest.raises(ModelError, match="orientation"):
            check_config({**d, "orientation": bad}, "config.json")
    arch3d = UNetConfig(spatial_dims=3, in_channels=1, out_channels=3, channels=(4, 8, 16))
    with pytest.raises(ValueError, match="2D models only"):
        ModelSpec(arch=arch3d, label_names=SIDED, patch_size=(32, 32, 32), orientation="SAL")


@pytest.mark.parametrize("axes", [(2,), (1,), (1, 2), (0,)])
def test_a_scan_stored_the_other_way_gets_the_same_labels(tmp_path, axes):
    model = _model(tmp_path, context=1)  # 2.5D: a reversed slice axis reverses the neighbours too
    scan = _scan()
    ref = predict(model, scan, CFG)
    other = _restored(scan, axes)
    got = predict(model, other, CFG)
    np.testing.assert_array_equal(np.flip(got.labels, axes), ref.labels)
    np.testing.assert_allclose(np.flip(got.probabilities, tuple(a + 1 for a in axes)), ref.probabilities,
                               atol=1e-5)
    z = 2 if 0 not in axes else scan.shape[0] - 1 - 2
    preview = predict_slice(model, other, z, CFG)  # the slice preview cuts the same way
    np.testing.assert_array_equal(preview.labels, got.labels[z])
    # without the declaration (the shipped versions before it) the network saw a mirror image:
    # an untrained network is not flip-equivariant, so the labels differ
    plain = dataclasses.replace(model, spec=dataclasses.replace(model.spec, orientation=None))
    assert not np.array_equal(np.flip(predict(plain, other, CFG).labels, axes),
                              predict(plain, scan, CFG).labels)


def test_files_say_whether_they_know_the_orientation(tmp_path):
    nib = pytest.importorskip("nibabel")
    from napari_attnseg.io import read_volume

    data = np.random.default_rng(0).normal(size=(8, 8, 3)).astype(np.float32)
    cases = {"no_codes_real_pixdim.nii.gz": (np.diag([4.88, 4.88, 2.5, 1]), 0, True),  # OpenKBP as published
             "coded.nii.gz": (np.diag([-1.0, 1.0, 2.0, 1.0]), 1, False)}
    for name, (aff, code, unknown) in cases.items():
        img = nib.Nifti1Image(data, aff if code else None)
        img.header.set_zooms(tuple(abs(np.diag(aff)[:3])))
        nib.save(img, str(tmp_path / name))
        vol = read_volume(tmp_path / name)
        assert direction_is_nominal(vol) is unknown, name
    assert direction_is_nominal(Volume(data, (1.0, 1.0, 1.0), header={SPACING_NOMINAL: True}))
    assert not direction_is_nominal(Volume(data, (1.0, 1.0, 1.0)))
    # a file that gives no orientation is cut as stored, even by a model that declares one
    model = _model(tmp_path)
    scan = _scan(np.diag([1.0, -1.0, -1.0]))
    unknown = dataclasses.replace(scan, header={DIRECTION_NOMINAL: True})
    np.testing.assert_array_equal(predict(model, unknown, CFG).labels,
                                  predict(dataclasses.replace(model, spec=dataclasses.replace(
                                      model.spec, orientation=None)), scan, CFG).labels)


def test_a_transposed_training_orientation(tmp_path):
    """A model whose training arrays ran their rows across the patient (OpenKBP's "ILP") sees a
    DICOM-stored scan (S, P, L) transposed and reversed into that frame."""
    model = _model(tmp_path, orientation="ILP")
    ilp = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, -1.0, 0.0]])  # axis 0 -> I, 1 -> L, 2 -> P
    assert orientation_code(ilp) == "IPL" and reorientation_to(ilp, "ILP") == ((0, 1, 2), ())
    scan = _scan(ilp, shape=(5, 32, 24))
    ref = predict(model, scan, CFG)
    # the same patient as DICOM stores it: slices toward S, rows toward P, columns toward L
    data = np.flip(np.transpose(np.asarray(scan.data), (0, 2, 1)), 0)
    dicom = dataclasses.replace(scan, data=np.ascontiguousarray(data), spacing=(4.0, 1.0, 1.0),
                                direction=np.diag([1.0, -1.0, -1.0]))
    got = predict(model, dicom, CFG).labels
    np.testing.assert_array_equal(np.transpose(np.flip(got, 0), (0, 2, 1)), ref.labels)
    preview = predict_slice(model, dicom, 1, CFG)
    np.testing.assert_array_equal(preview.labels, got[1])


def test_unknown_geometry_is_used_as_stored(tmp_path):
    model = _model(tmp_path)
    seen = []
    model.network.register_forward_hook(lambda m, inp, out: seen.append(inp[0][0, 0].clone()))
    for scan in (_scan(np.eye(3), nominal=True), as_volume(model, _scan().data)):  # no geometry; a bare array
        seen.clear()
        predict(model, scan, CFG)
        first = seen[0].numpy()  # slice 0 as the network got it (normalised): not mirrored
        z0 = np.asarray(scan.data)[0]
        assert np.corrcoef(first.ravel(), z0.ravel())[0, 1] > 0.99
    seen.clear()
    predict(model, _scan(np.diag([1.0, -1.0, -1.0])), CFG)  # a known DICOM-like geometry: reversed rows
    z0 = np.asarray(_scan().data)[0]
    assert np.corrcoef(seen[0].numpy().ravel(), z0[::-1].ravel())[0, 1] > 0.99


def test_training_slices_are_cut_as_inference_cuts_them(tmp_path):
    from napari_attnseg.training.dataset import TrainingPair, prepare_pairs, training_orientation

    model = _model(tmp_path)
    scan = _scan()
    labels = np.zeros(scan.shape, np.uint8)
    labels[:, 4:12, 2:10] = 1  # the right kidney on the array's left (columns run toward the left)
    labels[:, 4:12, 20:30] = 2
    pair = TrainingPair(scan, dataclasses.replace(scan, data=labels, is_labels=True))
    dicom = _restored(scan, (1, 2))
    pair2 = TrainingPair(dicom, _restored(pair.labels, (1, 2)))
    a = prepare_pairs([pair], model.spec, 3)
    b = prepare_pairs([pair2], model.spec, 3)
    assert len(a) == len(b) == scan.shape[0]
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.image, y.image, atol=1e-5)  # (normalised: summation order)
        np.testing.assert_array_equal(x.labels, y.labels)
    assert "reversed" in b[0].source and "reversed" not in a[0].source
    # a new model declares its training files' most common orientation (known geometry only)
    assert training_orientation([pair, pair, pair2]) == "SAL"
    assert training_orientation([pair2]) == "SPR"
    nominal = TrainingPair(_scan(nominal=True), pair.labels)
    assert training_orientation([nominal]) is None


def test_train_cli_records_the_orientation(tmp_path):
    nib = pytest.importorskip("nibabel")
    import json

    from napari_attnseg.cli import main

    ds = tmp_path / "ds"
    (ds / "imagesTr").mkdir(parents=True)
    (ds / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    aff = np.diag([-1.0, -1.0, 3.0, 1.0])  # nibabel (x, y, z) = RAS: x toward the left, y toward posterior
    for i in range(2):
        img = rng.normal(100, 20, (32, 32, 4)).astype(np.float32)
        lab = np.zeros((32, 32, 4), np.uint8)
        lab[4:12, 4:12] = 1
        nib.save(nib.Nifti1Image(img, aff), str(ds / "imagesTr" / f"c{i}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, aff), str(ds / "labelsTr" / f"c{i}.nii.gz"))
    (ds / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "organ": 1}, "modality": "MR"}))
    out = tmp_path / "m"
    rc = main(["train", str(ds), "-o", str(out), "--spatial-dims", "2", "--channels", "4", "8",
               "--patch-size", "32", "32", "--batch-size", "2", "--epochs", "1", "--steps-per-epoch", "1",
               "--val-fraction", "0.5", "--threads", "1", "-q"])
    assert rc == 0
    from napari_attnseg.io import read_volume

    expected = orientation_code(read_volume(ds / "imagesTr" / "c0.nii.gz").direction)
    assert json.loads((out / "config.json").read_text())["orientation"] == expected


def test_side_names_pair_up():
    assert mirror_label_permutation({0: "bg", 1: "liver", 2: "right kidney", 3: "left kidney"}) == (0, 1, 3, 2)
    assert mirror_label_permutation({0: "bg", 1: "Parotid_L", 2: "Parotid_R", 3: "L"}) == (0, 2, 1, 3)
    assert mirror_label_permutation({0: "bg", 1: "RV", 2: "myocardium", 3: "LV"}) is None
    assert mirror_label_permutation({0: "bg", 1: "left ventricle"}) is None  # no partner


def test_a_model_trained_without_mirroring_gets_no_flips(tmp_path):
    from napari_attnseg.inference.uncertainty import flip_uncertainty_job

    sided = _model(tmp_path)
    assert not sided.spec.mirrors
    on = PredictConfig(device="cpu", precision="fp32", tta=True)
    assert effective_tta(sided, on) is False and "never saw" in tta_note(sided, on)
    scan = _scan()
    np.testing.assert_array_equal(predict(sided, scan, on).probabilities, predict(sided, scan, CFG).probabilities)
    res = drain(flip_uncertainty_job(sided, scan, CFG))
    assert res.flips == ((),) and not res.disagreement.any()
    np.testing.assert_allclose(res.probabilities, predict(sided, scan, CFG).probabilities, atol=1e-6)
    with pytest.raises(ValueError, match="without mirrored images"):
        drain(flip_uncertainty_job(sided, scan, CFG, flips=((), (-1,))))
    plain = _model(tmp_path, orientation=None, labels={0: "bg", 1: "a", 2: "b"}, mirror=True)
    assert plain.spec.mirrors and effective_tta(plain, on) and tta_note(plain, on) == ""
    flat = _model(tmp_path, orientation=None, labels={0: "bg", 1: "a", 2: "b"}, mirror=False)
    assert not flat.spec.mirrors  # its training said mirror: false


def test_fine_tunes_do_not_mirror_a_model_that_was_not(tmp_path, monkeypatch):
    import napari_attnseg.training.finetune as ft
    from napari_attnseg.model.registry import ModelRegistry
    from napari_attnseg.training import TrainConfig
    from napari_attnseg.training.dataset import TrainingPair

    seen = {}
    real = ft.train_job

    def spy(network, spec, train_pairs, val_pairs, config, *args, **kwargs):
        seen["config"] = config
        return real(network, spec, train_pairs, val_pairs, config, *args, **kwargs)

    monkeypatch.setattr(ft, "train_job", spy)
    sided = _model(tmp_path)
    scan = _scan()
    labels = np.zeros(scan.shape, np.uint8)
    labels[:, 4:12, 2:10] = 1
    pair = TrainingPair(scan, dataclasses.replace(scan, data=labels, is_labels=True))
    cfg = TrainConfig(epochs=1, steps_per_epoch=1, patch_size=(32, 32))
    assert cfg.mirror
    drain(ft.finetune_job(sided, [pair], cfg, registry=ModelRegistry(tmp_path / "reg"), name="o"))
    assert seen["config"].mirror is False


def test_heart_chambers_are_no_mirror_pair_and_the_training_record_decides(tmp_path):
    """ACDC's "right ventricle" / "left ventricle" are told apart by shape, and its model was
    trained on flipped hearts: it keeps its declared mirror TTA (its 0.904 needs it)."""
    heart = {0: "background", 1: "right ventricle", 2: "myocardium", 3: "left ventricle"}
    assert mirror_label_permutation(heart) is None
    assert mirror_label_permutation({0: "bg", 1: "Right_Atrium", 2: "Left_Atrium"}) is None
    assert mirror_label_permutation({0: "bg", 1: "right lung", 2: "left lung"}) == (0, 2, 1)
    on = PredictConfig(device="cpu", precision="fp32", tta=True)
    flipped_kidneys = _model(tmp_path, orientation=None, mirror=True)  # sided labels, trained on flips
    assert flipped_kidneys.spec.mirrors and effective_tta(flipped_kidneys, on)
    from napari_attnseg.model.registry import ModelRegistry

    acdc = load_model(ModelRegistry(root=tmp_path / "none").resolve("acdc-cardiac-mr-2d"))
    assert acdc.spec.tta and acdc.spec.mirrors and effective_tta(acdc, PredictConfig())
    for name in ("chaos-abdomen-mr-2d", "openkbp-headneck-ct-2d"):
        m = load_model(ModelRegistry(root=tmp_path / "none").resolve(name))
        assert not m.spec.mirrors and not effective_tta(m, on), name
