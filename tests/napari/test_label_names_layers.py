"""Label names and colours on napari Labels layers: the reader shows them (direct colormap, a
features table the status bar reads), the writers save what the layer shows (colours edited in
napari included), and a layered .seg.nrrd opens as one labels layer per layer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_attnseg._napari.reader import get_reader
from napari_attnseg.io import read_volume, write_volume

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_LABELS = ROOT / "sample_data" / "ct_phantom_labels.nii.gz"
PROV = {"label_names": {"0": "background", "1": "organ", "2": "lesion"},
        "label_colors": {"1": "#ff0000", "2": "#00ff00"}}


def _open(viewer, path):
    reader = get_reader(str(path))
    assert reader is not None
    layers = []
    for data, kwargs, kind in reader(str(path)):
        layers.append(getattr(viewer, f"add_{kind}")(data, **kwargs))
    return layers


def test_reader_shows_names_and_colours(tmp_path, make_napari_viewer):
    out = write_volume(read_volume(SAMPLE_LABELS), tmp_path / "m.nii.gz", provenance=PROV)
    viewer = make_napari_viewer()
    (layer,) = _open(viewer, out)
    assert type(layer).__name__ == "Labels"
    assert np.allclose(layer.colormap.map(1), [1, 0, 0, 1])
    assert np.allclose(layer.colormap.map(2), [0, 1, 0, 1])
    assert layer.colormap.map(0)[3] == 0  # background transparent
    z, y, x = np.round(np.argwhere(layer.data == 2).mean(0)).astype(int)  # inside the lesion
    assert layer.data[z, y, x] == 2
    status = layer.get_status(layer.data_to_world((z, y, x)), world=True)
    assert "lesion" in str(status)


def test_writer_saves_the_layer_colours_and_names(tmp_path, make_napari_viewer):
    out = write_volume(read_volume(SAMPLE_LABELS), tmp_path / "m.nii.gz", provenance=PROV)
    viewer = make_napari_viewer()
    (layer,) = _open(viewer, out)
    cmap = dict(layer.colormap.color_dict)
    cmap[2] = np.array([0.0, 0.0, 1.0, 1.0])  # the user recolours the lesion in napari
    from napari.utils.colormaps import DirectLabelColormap

    layer.colormap = DirectLabelColormap(color_dict=cmap)
    target = tmp_path / "saved.nii.gz"
    viewer.layers.save(str(target), selected=False, plugin="napari-attnseg")
    back = read_volume(target)
    assert back.metadata["label_names"] == {"1": "organ", "2": "lesion"}
    assert back.metadata["label_colors"]["2"] == "#0000ff"
    assert "2 lesion 0 0 255 255" in (tmp_path / "saved.ctbl").read_text()


def test_seg_nrrd_writer_and_reader_in_napari(tmp_path, make_napari_viewer):
    pytest.importorskip("slicerio")
    out = write_volume(read_volume(SAMPLE_LABELS), tmp_path / "m.nii.gz", provenance=PROV)
    viewer = make_napari_viewer()
    (layer,) = _open(viewer, out)
    from napari_attnseg._napari.writer_formats import write_seg_nrrd

    (written,) = write_seg_nrrd(str(tmp_path / "slicer"), layer.data, layer._get_state())
    assert written.endswith("slicer.seg.nrrd")
    (again,) = _open(viewer, written)
    assert again.name == "slicer"
    assert np.array_equal(again.data, layer.data)
    assert np.allclose(again.colormap.map(1), [1, 0, 0, 1])
    assert json.loads((tmp_path / "slicer.json").read_text())["labels"][1]["name"] == "lesion"


def test_layered_seg_nrrd_opens_as_one_layer_per_layer(tmp_path, make_napari_viewer):
    slicerio = pytest.importorskip("slicerio")
    seg = slicerio.create_segmentation((8, 8, 4), np.diag([-1.0, -1.0, 2.0, 1.0]))
    a = np.zeros((8, 8, 4), bool)
    a[1:6, 1:6, :] = True
    b = np.zeros_like(a)
    b[4:8, 4:8, 1:3] = True
    slicerio.add_segment(seg, a, {"name": "vessel", "color": [1.0, 0.0, 0.0]})
    slicerio.add_segment(seg, b, {"name": "stent", "color": [0.0, 0.0, 1.0]})
    slicerio.write_segmentation(str(tmp_path / "v.seg.nrrd"), seg)
    viewer = make_napari_viewer()
    layers = _open(viewer, tmp_path / "v.seg.nrrd")
    assert [lay.name for lay in layers] == ["v [layer 1]", "v [layer 2]"]
    assert np.allclose(layers[1].colormap.map(1), [0, 0, 1, 1])
    assert np.array_equal(layers[1].data == 1, b.T)
    assert np.allclose(layers[0].scale, layers[1].scale)


def test_dicom_seg_writer_and_reader_sit_on_the_series(tmp_path, make_napari_viewer):
    pytest.importorskip("highdicom")
    import shutil

    shutil.copytree(ROOT / "sample_data" / "ct_dicom", tmp_path / "ct")
    viewer = make_napari_viewer()
    (image,) = _open(viewer, tmp_path / "ct")
    lab = np.zeros(image.data.shape, np.uint8)
    lab[5:10, 30:70, 30:70] = 1
    from napari_attnseg._napari.layers import derived_layer_kwargs
    from napari_attnseg._napari.writer_formats import write_dicom_seg

    kw = derived_layer_kwargs(image, "ct [attnseg]",
                              provenance={"label_names": {"0": "background", "1": "organ"}})
    labels = viewer.add_labels(lab, **kw)
    (written,) = write_dicom_seg(str(tmp_path / "result"), labels.data, labels._get_state())
    assert written.endswith("result.dcm")
    (seg,) = _open(viewer, written)
    assert type(seg).__name__ == "Labels" and seg.name == "result"
    assert np.array_equal(seg.data, lab)
    assert np.allclose(seg.scale, image.scale) and np.allclose(seg.translate, image.translate)
    where = seg.data_to_world((7, 50, 50))
    viewer.dims.set_point(0, where[0])  # show that slice: the status reads the shown slice
    assert "organ" in str(seg.get_status(where, world=True))


def _sagittal_series(src: Path, dst: Path) -> Path:
    """The sample CT files relabelled as a sagittal series (rows along A, columns along -S):
    a layer shows it with permuted axes, the files keep their slice order."""
    import pydicom

    dst.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        ds = pydicom.dcmread(str(f))
        k = int(ds.InstanceNumber)
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [-30.0 + 2.5 * k, -50.8, 50.8]
        if "SliceLocation" in ds:
            del ds.SliceLocation
        ds.save_as(str(dst / f.name))
    return dst


def test_dicom_seg_from_a_permuted_layer_cites_the_right_instances(tmp_path, make_napari_viewer):
    hd = pytest.importorskip("highdicom")
    from napari_attnseg._napari.layers import derived_layer_kwargs
    from napari_attnseg._napari.writer_formats import write_dicom_seg

    folder = _sagittal_series(ROOT / "sample_data" / "ct_dicom", tmp_path / "sag")
    stored = read_volume(folder)
    viewer = make_napari_viewer()
    (image,) = _open(viewer, folder)
    lab_stored = np.zeros(stored.shape, np.uint8)  # in the files' order: (slice, row, col)
    lab_stored[3:6, 20:40, 60:90] = 1
    from napari_attnseg._napari.layers import layer_data_tuple

    shown, _, _ = layer_data_tuple(stored.with_data(lab_stored, is_labels=True))
    kw = derived_layer_kwargs(image, "sag [attnseg]",
                              provenance={"label_names": {"1": "organ"}})
    labels = viewer.add_labels(np.ascontiguousarray(shown), **kw)
    (written,) = write_dicom_seg(str(tmp_path / "sag_seg.dcm"), labels.data, labels._get_state())
    seg = hd.seg.segread(written)
    got = seg.get_pixels_by_source_instance(stored.header["sop_instance_uids"],
                                            combine_segments=True,
                                            assert_missing_frames_are_empty=True)
    assert np.array_equal(got, lab_stored)
