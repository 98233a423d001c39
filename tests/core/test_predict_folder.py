"""``attnseg predict IN_DIR -o OUT_DIR``: every scan of a folder (NIfTI files, nested folders,
MetaImage, DICOM series subfolders found explicitly), one output per case with its name,
nnU-Net-style sharding, resume, a failing case not stopping the rest, and the refusals."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_attnseg.cli import main
from napari_attnseg.io import read_volume
from napari_attnseg.io.cohort import DICOM_KIND, find_cases, shard


def _need_rt_utils():
    """Skip without importing rt-utils: importing it (its opencv-python) unguarded would set Qt
    plugin variables in this test process; the package's own import guards them."""
    import importlib.util

    if importlib.util.find_spec("rt_utils") is None:
        pytest.skip("rt-utils is not installed (pip install 'napari-attnseg[rtstruct]')")

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data"
MHA = ROOT / "tests" / "data" / "metaimage" / "oblique_ct.mha"


def _crop(src: Path, dst: Path, z0: int, z1: int) -> Path:
    img = nib.load(str(src))
    sub = img.slicer[:, :, z0:z1]
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(sub, str(dst))
    return dst


@pytest.fixture
def cohort(tmp_path):
    root = tmp_path / "cohort"
    _crop(SAMPLE / "ct_phantom.nii.gz", root / "case_a.nii.gz", 20, 26)
    _crop(SAMPLE / "ct_phantom.nii.gz", root / "site2" / "case_b.nii.gz", 14, 18)
    shutil.copytree(SAMPLE / "ct_dicom", root / "patient_dcm")
    shutil.copy(MHA, root / "small.mha")
    (root / "notes.json").write_text("{}")
    (root / ".hidden.nii.gz").write_bytes(b"")
    return root


def test_find_cases_lists_every_scan_and_the_dicom_series_explicitly(cohort):
    cases = find_cases(cohort)
    assert [(c.name, c.kind) for c in cases] == [
        ("case_a", "NIfTI"), ("patient_dcm", DICOM_KIND), ("site2/case_b", "NIfTI"),
        ("small", "MetaImage")]
    dcm = cases[1]
    assert dcm.n_slices == 24 and dcm.series_uid and "DICOM series in patient_dcm/" in dcm.describe()


def test_shards_cover_every_case_once(cohort):
    cases = find_cases(cohort)
    parts = [shard(cases, i, 3) for i in range(3)]
    names = [c.name for p in parts for c in p]
    assert sorted(names) == sorted(c.name for c in cases) and len(set(names)) == len(cases)
    assert [c.name for c in parts[1]] == [cases[1].name]
    with pytest.raises(ValueError, match="0..2"):
        shard(cases, 3, 3)


def test_same_output_name_twice_is_an_error(cohort):
    shutil.copy(MHA, cohort / "case_a.mha")
    with pytest.raises(Exception, match="same output name"):
        find_cases(cohort)


def test_folder_prediction_one_output_per_case_names_kept(cohort, tmp_path, caplog):
    out = tmp_path / "out"
    caplog.set_level(logging.INFO)
    assert main(["predict", str(cohort), "-o", str(out), "--model", "ct-phantom-2d", "-q", "--threads", "1"]) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.nii.gz"))
    assert written == ["case_a.nii.gz", "patient_dcm.nii.gz", "site2/case_b.nii.gz",
                       "small.nii.gz"]
    dcm = read_volume(out / "patient_dcm.nii.gz")
    assert dcm.shape == (24, 128, 128) and dcm.data.any()
    assert dcm.same_grid(read_volume(SAMPLE / "ct_dicom"), atol=1e-3)
    side = json.loads((out / "site2" / "case_b.json").read_text())
    assert side["provenance"]["case"] == "site2/case_b"
    assert read_volume(out / "case_a.nii.gz").metadata["label_names"]["1"] == "organ"
    assert "DICOM series in patient_dcm/ (24 slices" in caplog.text
    # a second run keeps what is there (resume after a preempted job)
    caplog.clear()
    assert main(["predict", str(cohort), "-o", str(out), "--model", "ct-phantom-2d", "-q", "--threads", "1"]) == 0
    assert caplog.text.count("exists, kept") == 4


def test_parts_split_the_work_and_dicom_seg_format(cohort, tmp_path, capsys):
    shutil.rmtree(cohort / "site2")
    (cohort / "small.mha").unlink()
    out = tmp_path / "out"
    for part in ("0", "1"):
        assert main(["predict", str(cohort), "-o", str(out), "--model", "ct-phantom-2d", "-q", "--threads", "1",
                     "--part-id", part, "--num-parts", "2", "--format", "dcm"]) in (0, 2)
    err = capsys.readouterr().err
    # part 0: case_a (NIfTI: no DICOM-SEG possible, reported); part 1: the DICOM series
    assert "0 segmented, 0 kept, 1 failed (case_a)" in err
    assert "1 segmented, 0 kept, 0 failed" in err
    pytest.importorskip("highdicom")
    assert read_volume(out / "patient_dcm.dcm").header["format"] == "dicom-seg"


def test_a_broken_case_does_not_stop_the_others(cohort, tmp_path, capsys):
    shutil.rmtree(cohort / "patient_dcm")
    (cohort / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    out = tmp_path / "out"
    assert main(["predict", str(cohort), "-o", str(out), "--model", "ct-phantom-2d", "-q", "--threads", "1"]) == 2
    assert "3 segmented, 0 kept, 1 failed (broken)" in capsys.readouterr().err
    assert (out / "case_a.nii.gz").is_file()


def test_refusals(cohort, tmp_path, capsys):
    # a folder of scans with one output file: it would segment one and ignore the rest
    assert main(["predict", str(cohort), "-o", str(tmp_path / "one.nii.gz")]) == 2
    assert "give an output folder" in capsys.readouterr().err
    assert main(["predict", str(cohort / "case_a.nii.gz"), "-o", str(tmp_path / "x.nii.gz"),
                 "--part-id", "0", "--num-parts", "2"]) == 2
    assert "IN_DIR" in capsys.readouterr().err
    assert main(["predict", str(cohort), "-o", str(cohort / "results")]) == 2
    assert "inside the input folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", str(empty), "-o", str(tmp_path / "o")]) == 2
    assert "no scans found" in capsys.readouterr().err


def test_a_dicom_folder_with_a_file_output_is_still_one_scan(tmp_path):
    out = tmp_path / "seg.nii.gz"
    assert main(["predict", str(SAMPLE / "ct_dicom"), "-o", str(out), "--model",
                 "ct-phantom-2d", "-q", "--threads", "1"]) == 0
    assert read_volume(out).shape == (24, 128, 128)


@pytest.mark.shared_data
def test_real_scans_folder(shared_data, tmp_path):
    src = shared_data / "ct_spleen" / "image.nii.gz"
    if not src.is_file():
        pytest.skip(f"{src} is absent")
    cohort = tmp_path / "real"
    _crop(src, cohort / "spleen_crop.nii.gz", 10, 14)
    out = tmp_path / "out"
    assert main(["predict", str(cohort), "-o", str(out), "--model", "ct-phantom-2d", "-q", "--threads", "1"]) == 0
    back = read_volume(out / "spleen_crop.nii.gz")
    assert back.shape == read_volume(cohort / "spleen_crop.nii.gz").shape


def test_rtstruct_format_for_the_dicom_case(cohort, tmp_path, capsys):
    _need_rt_utils()
    for extra in ("site2", "case_a.nii.gz", "small.mha"):
        p = cohort / extra
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    out = tmp_path / "out"
    assert main(["predict", str(cohort), "-o", str(out), "--model", "ct-phantom-2d", "-q", "--threads", "1",
                 "--format", "rtstruct.dcm"]) == 0
    import pydicom

    ds = pydicom.dcmread(str(out / "patient_dcm.rtstruct.dcm"))
    assert ds.Modality == "RTSTRUCT" and len(ds.StructureSetROISequence) >= 1
