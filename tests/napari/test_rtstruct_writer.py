"""The napari writer for RTSTRUCT: a Labels layer on a DICOM series saves as contours that
reference the series and read back, through the plugin's reader, onto the same grid with the
names the canvas showed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_attnseg._napari.reader import get_reader


def _need_rt_utils():
    """Skip without importing rt-utils: importing it (its opencv-python) unguarded would set Qt
    plugin variables in this test process; the package's own import guards them."""
    import importlib.util

    if importlib.util.find_spec("rt_utils") is None:
        pytest.skip("rt-utils is not installed (pip install 'napari-attnseg[rtstruct]')")

ROOT = Path(__file__).resolve().parents[2]


def _open(viewer, path):
    layers = []
    for data, kwargs, kind in get_reader(str(path))(str(path)):
        layers.append(getattr(viewer, f"add_{kind}")(data, **kwargs))
    return layers


def test_rtstruct_writer_round_trip_on_the_series(tmp_path, make_napari_viewer):
    _need_rt_utils()
    pytest.importorskip("pydicom")
    shutil.copytree(ROOT / "sample_data" / "ct_dicom", tmp_path / "ct")
    viewer = make_napari_viewer()
    (image,) = _open(viewer, tmp_path / "ct")
    lab = np.zeros(image.data.shape, np.uint8)
    lab[5:10, 30:70, 30:70] = 1
    lab[12:16, 60:90, 20:50] = 2
    from napari_attnseg._napari.layers import derived_layer_kwargs
    from napari_attnseg._napari.writer_formats import write_rtstruct

    kw = derived_layer_kwargs(image, "ct [attnseg]", provenance={
        "label_names": {"0": "background", "1": "liver", "2": "left kidney"}})
    labels = viewer.add_labels(lab, **kw)
    (written,) = write_rtstruct(str(tmp_path / "ct" / "result"), labels.data, labels._get_state())
    assert written.endswith("result.rtstruct.dcm")
    import pydicom

    ds = pydicom.dcmread(written)
    assert ds.Modality == "RTSTRUCT"
    assert sorted(r.ROIName for r in ds.StructureSetROISequence) == ["left kidney", "liver"]
    src_uids = {pydicom.dcmread(str(f), stop_before_pixels=True).SOPInstanceUID
                for f in (tmp_path / "ct").iterdir() if not f.name.endswith(".rtstruct.dcm")
                and not f.name.endswith(".json")}
    cited = {c.ReferencedSOPInstanceUID for roi in ds.ROIContourSequence
             for c in roi.ContourSequence for c in c.ContourImageSequence}
    assert cited and cited <= src_uids
    (back,) = _open(viewer, written)
    assert type(back).__name__ == "Labels"
    assert back.data.shape == lab.shape
    for v in (1, 2):  # numpy Dice, not the project's
        a, b = back.data == v, lab == v
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) >= 0.97
    assert np.allclose(back.scale, image.scale) and np.allclose(back.translate, image.translate)
