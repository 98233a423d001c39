"""Modality and anatomy detection (io.modality) and the 2D reader's pixel-size CSV and masks:
synthetic cases, no real data, no Qt."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_attnseg.io import read_volume
from napari_attnseg.io.image2d import mask_base_name, pixel_size_from_csv, read_image2d
from napari_attnseg.io.modality import (
    anatomy_from_text,
    detect_modality,
    looks_like_ct,
    modality_from_text,
    normalize_anatomy,
)
from napari_attnseg.sample import ct_phantom, mr_phantom
from napari_attnseg.volume import Volume

nib = pytest.importorskip("nibabel")


def _ct_like(rng, shape=(8, 64, 64)) -> np.ndarray:
    hu = rng.normal(40, 30, shape)  # soft tissue
    hu[:, :6] = rng.normal(-1000, 10, (shape[0], 6, shape[2]))  # air above the body
    hu[:, 30:34, 30:34] = 1200  # bone
    return hu.astype(np.int16)


def test_hu_range_says_ct_and_other_intensities_do_not():
    rng = np.random.default_rng(0)
    assert looks_like_ct(_ct_like(rng))
    padded = _ct_like(rng)
    padded[:, :, :4] = -3024  # scanner padding outside the field of view
    assert looks_like_ct(padded)
    assert looks_like_ct(ct_phantom(0, shape=(8, 48, 48))[0].data)
    # MR: non-negative arbitrary units; z-scored MR; ultrasound 0-255; a phase image
    assert not looks_like_ct(mr_phantom(0, shape=(8, 48, 48))[0].data)
    assert not looks_like_ct(rng.normal(0, 1, (8, 32, 32)).astype(np.float32))
    assert not looks_like_ct(rng.integers(0, 256, (64, 64)).astype(np.uint8))
    assert not looks_like_ct(rng.uniform(-4096, 4096, (8, 32, 32)).astype(np.float32))
    assert not looks_like_ct(np.zeros((4, 4), np.int16) - 1000)  # nothing but "air" is not a scan
    assert not looks_like_ct(np.array([], np.int16))


def test_words_in_descriptions_and_names():
    assert modality_from_text("T2* gradient echo, 3T") == "MR"
    assert modality_from_text("CT phantom, HU, seed 0") == "CT"
    assert modality_from_text("B-mode ultrasound") == "US"
    assert modality_from_text("US cine: axis 3 (k) is time") == "US"
    assert modality_from_text("CT and MR fusion") == ""  # two modalities: no answer
    assert modality_from_text("t2star", names=True) == "MR"
    assert modality_from_text("image", names=True) == ""
    assert modality_from_text("house", names=True) == ""  # "us" inside a word is no hint
    assert anatomy_from_text("cardiac cine, short axis") == "heart"
    assert anatomy_from_text("CT phantom of the abdomen") == "phantom"
    assert normalize_anatomy("Cardiac") == "heart"
    assert normalize_anatomy("spleen") == "abdomen"
    assert normalize_anatomy("Knee") == "knee" and normalize_anatomy(None) == ""


def _nifti(path, data, descrip=""):
    img = nib.Nifti1Image(data, np.diag([0.8, 0.8, 3.0, 1.0]))
    if descrip:
        img.header["descrip"] = descrip.encode()
    nib.save(img, str(path))
    return path


def test_nifti_modality_from_description_sidecar_dataset_json_hu_and_name(tmp_path):
    rng = np.random.default_rng(1)
    mr = (rng.random((20, 20, 4)) * 800).astype(np.int16)
    # nothing says anything: unknown, not CT
    v = read_volume(_nifti(tmp_path / "scan.nii.gz", mr))
    assert v.modality == "" and "modality_source" not in v.header
    # the NIfTI description
    v = read_volume(_nifti(tmp_path / "a.nii.gz", mr, "T1-weighted MRI of the brain"))
    assert (v.modality, v.header["modality_source"]) == ("MR", "the NIfTI description")
    assert v.header["anatomy"] == "brain"
    # a BIDS-style sidecar
    _nifti(tmp_path / "sub-01_scan.nii.gz", mr)
    (tmp_path / "sub-01_scan.json").write_text(json.dumps({"MagneticFieldStrength": 3,
                                                           "BodyPart": "HEART"}))
    v = read_volume(tmp_path / "sub-01_scan.nii.gz")
    assert v.modality == "MR" and "sidecar" in v.header["modality_source"]
    assert v.header["anatomy"] == "heart"
    # a Decathlon dataset.json above imagesTr
    (tmp_path / "task" / "imagesTr").mkdir(parents=True)
    (tmp_path / "task" / "dataset.json").write_text(json.dumps(
        {"name": "Spleen", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "spleen"}}))
    v = read_volume(_nifti(tmp_path / "task" / "imagesTr" / "case_001.nii.gz", mr))
    assert (v.modality, v.header["anatomy"]) == ("CT", "abdomen")
    # Hounsfield units
    v = read_volume(_nifti(tmp_path / "b.nii.gz", np.ascontiguousarray(_ct_like(rng).T)))
    assert (v.modality, v.header["modality_source"]) == ("CT", "the HU range")
    # the file name, the weakest hint
    v = read_volume(_nifti(tmp_path / "t2star.nii.gz", mr))
    assert (v.modality, v.header["modality_source"]) == ("MR", "the file name")
    # the caller's word wins
    v = read_volume(tmp_path / "t2star.nii.gz", modality="US")
    assert v.modality == "US" and v.header["modality_source"] == "set by the user"
    # masks get no modality
    lab = read_volume(_nifti(tmp_path / "ct_mask.nii.gz", (mr > 400).astype(np.uint8)))
    assert lab.is_labels and lab.modality == ""


def test_detection_keeps_the_readers_word(tmp_path):
    vol = Volume(np.zeros((4, 4), np.uint8), (1.0, 1.0), modality="US",
                 header={"format": "dicom"}, source=str(tmp_path / "x_ct.dcm"))
    g = detect_modality(vol)
    assert (g.modality, g.source) == ("US", "the DICOM Modality tag")
    assert "US" in g.describe()


def _png(path, arr):
    import imageio.v3 as iio

    iio.imwrite(str(path), arr)
    return path


def test_pixel_size_csv_beside_the_images_and_masks_as_labels(tmp_path):
    rng = np.random.default_rng(2)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    img = _png(tmp_path / "images" / "007_HC.png", rng.integers(0, 256, (30, 40), dtype=np.uint8))
    mask = np.zeros((30, 40), np.uint8)
    mask[10:20, 10:30] = 1
    m = _png(tmp_path / "masks" / "007_HC_mask.png", mask)
    m255 = _png(tmp_path / "masks" / "008_HC_mask.png", mask * 255)
    # no CSV: 1 mm with a warning, unknown modality (a grey PNG is not CT)
    v = read_image2d(img)
    assert v.spacing == (1.0, 1.0) and any("pixel size" in w for w in v.warnings)
    assert read_volume(img).modality == ""
    (tmp_path / "pixel_size_and_hc.csv").write_text(
        "filename,pixel_size_mm,head_circumference_mm\n007_HC.png,0.125,44.3\n"
        "008_HC.png,0.25,50\n")
    v = read_volume(img)
    assert v.spacing == (0.125, 0.125) and not v.warnings
    assert v.header["pixel_size_source"] == "pixel_size_and_hc.csv"
    assert (v.modality, v.header["anatomy"]) == ("US", "fetal head")
    assert "HC18 CSV" in v.header["modality_source"]
    lab = read_volume(m)
    assert lab.is_labels and lab.spacing == (0.125, 0.125) and lab.modality == ""
    lab = read_volume(m255)
    assert lab.is_labels and set(np.unique(lab.data)) == {0, 1} and lab.spacing == (0.25, 0.25)
    assert any("0/255" in w for w in lab.warnings)
    # an explicit pixel size wins over the CSV
    assert read_image2d(img, pixel_size_mm=0.5).spacing == (0.5, 0.5)
    # a plain CSV without HC18's columns gives the size but no modality
    (tmp_path / "other").mkdir()
    other = _png(tmp_path / "other" / "a.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    (tmp_path / "other" / "sizes.csv").write_text("file,pixel_size_mm\na.png,0.3\n")
    row = pixel_size_from_csv(other)
    assert row is not None and row.pixel_size_mm == 0.3 and row.modality == ""
    assert mask_base_name("007_HC_mask.png") == "007_HC" and mask_base_name("007_HC.png") is None
    # a named mask with more than a handful of values is still labels
    many = np.arange(30 * 40, dtype=np.uint16).reshape(30, 40) % 40
    assert read_image2d(_png(tmp_path / "other" / "b_seg.png", many.astype(np.uint8))).is_labels
