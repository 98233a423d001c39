"""Label names and colours through every save/load: the label table formats (Slicer .ctbl,
ITK-SNAP), NIfTI + sidecar, 3D Slicer .seg.nrrd (one layer and layered/overlapping)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_attnseg.io import labeltable as lt
from napari_attnseg.io import read_volume, write_volume
from napari_attnseg.volume import Volume

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_LABELS = ROOT / "sample_data" / "ct_phantom_labels.nii.gz"
NAMES = {"0": "background", "1": "organ", "2": "lesion core"}


def _prov(**extra):
    return {"label_names": dict(NAMES), **extra}


# ---------------------------------------------------------------------- tables
def test_parse_color_forms():
    assert lt.parse_color("#e6194b") == (230, 25, 75)
    assert lt.parse_color([230, 25, 75]) == (230, 25, 75)
    assert lt.parse_color([1.0, 0.0, 0.0, 1.0]) == (255, 0, 0)
    assert lt.parse_color([0.5, 0.5, 0.5]) == (128, 128, 128)
    assert lt.parse_color("red") is None and lt.parse_color([300, 0, 0]) is None


def test_labels_from_metadata_fills_unnamed_and_skips_background():
    labels = lt.labels_from_metadata({"label_names": NAMES, "label_colors": {"2": "#010203"}},
                                     values=[1, 5])
    assert [(lb.value, lb.name) for lb in labels] == [(1, "organ"), (2, "lesion core"),
                                                      (5, "label 5")]
    assert labels[1].color == (1, 2, 3) and labels[0].color == lt.default_color(1)


@pytest.mark.parametrize("fmt", ["ctbl", "itksnap"])
def test_table_text_round_trip(fmt):
    labels = [lt.Label(1, "organ", (10, 20, 30)), lt.Label(7, "lesion", (200, 0, 5))]
    text = lt.format_ctbl(labels) if fmt == "ctbl" else lt.format_itksnap(labels)
    back = lt.parse_ctbl(text) if fmt == "ctbl" else lt.parse_itksnap(text)
    assert back == labels


def test_ctbl_names_with_spaces_become_underscores_as_slicer_writes():
    text = lt.format_ctbl([lt.Label(2, "lesion core", (1, 2, 3))])
    assert "2 lesion_core 1 2 3 255" in text
    assert lt.parse_ctbl(text)[0].name == "lesion_core"


def test_itksnap_file_written_by_itksnap_is_read():
    text = ('################################################\n# ITK-SnAP Label Description File\n'
            '    0     0    0    0        0  0  0    "Clear Label"\n'
            '    1   255    0    0        1  1  1    "Liver"\n'
            '    3     0    0  255      0.5  1  0    "Left kidney"\n')
    assert lt.parse_itksnap(text) == [lt.Label(1, "Liver", (255, 0, 0)),
                                      lt.Label(3, "Left kidney", (0, 0, 255))]


# ---------------------------------------------------------------------- NIfTI
def test_nifti_round_trip_keeps_names_and_colours(tmp_path):
    vol = read_volume(SAMPLE_LABELS)
    out = write_volume(vol, tmp_path / "seg.nii.gz",
                       provenance=_prov(label_colors={"1": "#112233"}))
    assert (tmp_path / "seg.ctbl").is_file() and (tmp_path / "seg_labels.txt").is_file()
    rows = json.loads((tmp_path / "seg.json").read_text())["labels"]
    assert [(r["label"], r["name"]) for r in rows] == [(1, "organ"), (2, "lesion core")]
    back = read_volume(out)
    assert back.metadata["label_names"] == {"1": "organ", "2": "lesion core"}
    assert back.metadata["label_colors"]["1"] == "#112233"
    assert np.array_equal(back.data, vol.data)
    # and a second round trip keeps them (names now come from the volume's own metadata)
    again = read_volume(write_volume(back, tmp_path / "seg2.nii.gz"))
    assert again.metadata["label_names"] == back.metadata["label_names"]
    assert again.metadata["label_colors"] == back.metadata["label_colors"]


@pytest.mark.parametrize("table", ["ctbl", "itksnap"])
def test_nifti_without_sidecar_reads_a_label_table_beside_it(tmp_path, table):
    vol = read_volume(SAMPLE_LABELS)
    out = write_volume(vol, tmp_path / "m.nii.gz", provenance=_prov())
    (tmp_path / "m.json").unlink()
    keep = lt.ctbl_path(out) if table == "ctbl" else lt.itksnap_path(out)
    for p in (lt.ctbl_path(out), lt.itksnap_path(out)):
        if p != keep:
            p.unlink()
    names = read_volume(out).metadata["label_names"]
    assert names["1"] == "organ"
    assert names["2"] == ("lesion_core" if table == "ctbl" else "lesion core")


def test_masks_without_names_write_no_tables(tmp_path):
    vol = read_volume(SAMPLE_LABELS)
    write_volume(vol, tmp_path / "plain.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.json", "plain.nii.gz"]
    assert "label_names" not in read_volume(tmp_path / "plain.nii.gz").metadata


# ---------------------------------------------------------------------- seg.nrrd
def test_seg_nrrd_round_trip_with_names_colours_and_geometry(tmp_path):
    pytest.importorskip("slicerio")
    vol = read_volume(SAMPLE_LABELS)
    out = write_volume(vol, tmp_path / "r.seg.nrrd", provenance=_prov(label_colors={"2": [0, 0, 1.0]}))
    back = read_volume(out)
    assert back.is_labels and back.header["format"] == "seg.nrrd"
    assert np.array_equal(back.data, vol.data)
    assert np.allclose(back.affine, vol.affine, atol=1e-5)
    assert back.metadata["label_names"] == {"1": "organ", "2": "lesion core"}
    assert back.metadata["label_colors"]["2"] == "#0000ff"
    assert json.loads((tmp_path / "r.json").read_text())["format"] == "seg.nrrd"


def test_seg_nrrd_header_is_what_slicer_reads(tmp_path):
    nrrd = pytest.importorskip("nrrd")
    pytest.importorskip("slicerio")
    vol = read_volume(SAMPLE_LABELS)
    write_volume(vol, tmp_path / "s.seg.nrrd", provenance=_prov())
    h = nrrd.read_header(str(tmp_path / "s.seg.nrrd"))
    assert h["space"] == "left-posterior-superior"
    assert h["Segment0_Name"] == "organ" and h["Segment1_Name"] == "lesion core"
    assert h["Segment1_LabelValue"] == "2" and h["Segment0_Layer"] == "0"
    # LPS: the RAS x axis of the phantom flips sign
    nib_aff = np.diag([-1, -1, 1, 1]) @ np.block([[h["space directions"].T,
                                                   h["space origin"][:, None]],
                                                  [np.zeros((1, 3)), np.ones((1, 1))]])
    from napari_attnseg.volume import nifti_affine_from_zyx

    assert np.allclose(nib_aff, nifti_affine_from_zyx(vol.affine), atol=1e-5)


def _layered(tmp_path):
    slicerio = pytest.importorskip("slicerio")
    aff = np.array([[-0.7, 0, 0, 10.0], [0, -0.8, 0, 20.0], [0, 0, 2.0, -5.0], [0, 0, 0, 1]])
    seg = slicerio.create_segmentation((12, 10, 6), aff)
    a = np.zeros((12, 10, 6), bool)
    a[2:8, 2:8, 1:5] = True
    b = np.zeros_like(a)
    b[5:11, 4:9, 2:6] = True  # overlaps a
    c = np.zeros_like(a)
    c[0:2, 0:2, 0:2] = True
    slicerio.add_segment(seg, a, {"id": "liver", "name": "liver", "color": [1.0, 0, 0]})
    slicerio.add_segment(seg, b, {"id": "tumour", "name": "tumour", "color": [0, 1.0, 0]})
    slicerio.add_segment(seg, c, {"id": "cyst", "name": "cyst", "color": [0, 0, 1.0]})
    path = tmp_path / "layered.seg.nrrd"
    slicerio.write_segmentation(str(path), seg)
    return path, a, b, c


def test_layered_seg_nrrd_reads_one_volume_per_layer(tmp_path):
    from napari_attnseg.io.seg_nrrd import read_seg_nrrd_layers

    path, a, b, c = _layered(tmp_path)
    layers = read_seg_nrrd_layers(path)
    assert len(layers) == 2
    names = [lay.metadata["label_names"] for lay in layers]
    assert sorted(v for n in names for v in n.values()) == ["cyst", "liver", "tumour"]
    by_name = {}
    for lay in layers:
        for k, n in lay.metadata["label_names"].items():
            by_name[n] = lay.data == int(k)
    for name, mask in (("liver", a), ("tumour", b), ("cyst", c)):
        assert np.array_equal(by_name[name], mask.T)
    assert layers[1].metadata["label_colors"][next(k for k, n in layers[1].metadata[
        "label_names"].items())] in ("#00ff00", "#0000ff", "#ff0000")


def test_layered_seg_nrrd_collapses_with_a_warning_counting_overlap(tmp_path):
    path, a, b, c = _layered(tmp_path)
    vol = read_volume(path)
    assert vol.metadata["label_names"] == {"1": "liver", "2": "tumour", "3": "cyst"}
    assert np.array_equal(vol.data == 2, b.T)
    overlap = int(np.count_nonzero(a & b))
    assert overlap and any(f"{overlap} voxels" in w for w in vol.warnings)


def test_seg_nrrd_refuses_2d_and_non_integer(tmp_path):
    pytest.importorskip("slicerio")
    from napari_attnseg.errors import AttnsegError

    with pytest.raises(AttnsegError, match="3D"):
        write_volume(Volume(np.zeros((4, 4), np.uint8), (1, 1), is_labels=True),
                     tmp_path / "a.seg.nrrd")
    with pytest.raises(AttnsegError, match="integer"):
        write_volume(Volume(np.full((2, 4, 4), 0.5), (1, 1, 1)), tmp_path / "b.seg.nrrd")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.shared_data
@pytest.mark.parametrize("rel", ["mri_spinalcord/t2_cord_mask.nii.gz",
                                 "mri_brain_tumour/brain1_tumour_mask.nrrd"])
def test_real_masks_round_trip_through_seg_nrrd(shared_data, tmp_path, rel):
    pytest.importorskip("slicerio")
    src = shared_data / rel
    if not src.is_file():
        pytest.skip(f"{src} is absent")
    vol = read_volume(src)
    mask = vol.data.astype(np.uint8)
    vol = vol.with_data(mask, is_labels=True)
    back = read_volume(write_volume(vol, tmp_path / "real.seg.nrrd",
                                    provenance={"label_names": {"1": "cord"}}))
    assert np.array_equal(back.data, mask)
    assert np.allclose(back.affine, vol.affine, atol=1e-4)
    assert back.metadata["label_names"] == {"1": "cord"}
