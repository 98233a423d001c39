"""``attnseg predict IN_DIR -o OUT_DIR --scheduler local|ADDRESS``: a folder over a real Dask
cluster (no mocks): the outputs equal the serial run's voxel for voxel with the same sidecars, a
broken case is named and the others written, a scheduler given by address (a LocalCluster this
test starts) runs the cases with each worker loading the model once, and the refusals."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_attnseg.cli import main
from napari_attnseg.io import read_volume, write_volume
from napari_attnseg.sample.phantoms import phantom_dataset
from napari_attnseg.volume import Volume

NAMES = ("case_0", "case_1", "sub/case_2")
#: written at each run: the only provenance fields a cluster run may change
VOLATILE = ("seconds", "date")
BASE = ["--model", "ct-phantom-2d", "-q", "--threads", "1"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Three small CT phantoms (8 middle slices each, one in a subfolder) and a file that is
    not really gzip."""
    root = tmp_path_factory.mktemp("cohort")
    truth = {}
    for name, (image, labels) in zip(NAMES, phantom_dataset("ct", 3, seed=11, vary=0.3)):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        crop = Volume(image.data[20:28], image.spacing, origin=image.origin, modality="CT")
        write_volume(crop, root / f"{name}.nii.gz")
        truth[name] = labels.data[20:28]
    (root / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    return root, truth


@pytest.fixture(scope="module")
def serial(cohort, tmp_path_factory):
    """The serial run's outputs (the reference), checked against the phantoms' truth."""
    root, truth = cohort
    out = tmp_path_factory.mktemp("serial")
    assert main(["predict", str(root), "-o", str(out), *BASE]) == 2  # broken.nii.gz
    for name in NAMES:
        labels = read_volume(out / f"{name}.nii.gz").data
        organ, want = labels == 1, truth[name] == 1
        dice = 2 * (organ & want).sum() / (organ.sum() + want.sum())
        assert dice > 0.8, (name, dice)  # a real segmentation, not an empty or copied array
    return out


def _sidecar(path: Path) -> dict:
    side = json.loads(path.read_text())
    for key in VOLATILE:
        side["provenance"].pop(key)
    together = side.pop("written_together")  # its write's id and the file's own path differ
    side["written_together"] = [(f["file"], f["sha256"]) for f in together["files"]]
    return side


def _same_as_serial(out: Path, serial: Path) -> None:
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.nii.gz"))
    assert written == sorted(f"{n}.nii.gz" for n in NAMES)
    for name in NAMES:
        got, want = read_volume(out / f"{name}.nii.gz"), read_volume(serial / f"{name}.nii.gz")
        assert got.data.dtype == want.data.dtype
        np.testing.assert_array_equal(got.data, want.data)
        assert got.same_grid(want)
        assert _sidecar(out / f"{name}.json") == _sidecar(serial / f"{name}.json")


@pytest.mark.slow
def test_local_cluster_equals_serial_and_names_the_broken_case(cohort, serial, tmp_path,
                                                               capsys, caplog):
    pytest.importorskip("distributed")
    root, _ = cohort
    out = tmp_path / "out"
    rc = main(["predict", str(root), "-o", str(out), *BASE, "--scheduler", "local",
               "--workers", "2"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "3 segmented, 0 kept, 1 failed (broken)" in err
    assert "broken.nii.gz" in caplog.text and "not a valid gzip file" in caplog.text
    _same_as_serial(out, serial)


@pytest.fixture
def scheduler():
    """A 2-worker cluster of its own, reached by address only."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster:
        yield cluster.scheduler_address


@pytest.mark.slow
def test_scheduler_address_each_worker_loads_the_model_once(cohort, serial, scheduler,
                                                            tmp_path, capsys):
    import distributed

    from napari_attnseg.commands._cluster import model_cache_info

    root, _ = cohort
    out = tmp_path / "out"
    run = ["predict", str(root), "-o", str(out), *BASE, "--scheduler", scheduler]
    assert main(run) == 2
    assert "3 segmented, 0 kept, 1 failed (broken)" in capsys.readouterr().err
    _same_as_serial(out, serial)
    with distributed.Client(scheduler) as client:
        info = client.run(model_cache_info)  # {worker: (hits, misses)}
    assert sum(h + m for h, m in info.values()) == len(NAMES)
    assert all(m <= 1 for _, m in info.values())  # one load per worker process
    # the existing outputs are kept, as in the serial run (resume)
    assert main(run) == 2
    assert "0 segmented, 3 kept, 1 failed (broken)" in capsys.readouterr().err


@pytest.fixture
def tiny(tmp_path):
    """A folder with one scan name (the client only lists the cases; it never reads them)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.nii.gz").write_bytes(b"")
    return tmp_path / "in"


def test_missing_extra_says_what_to_install(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    assert main(["predict", str(tiny), "-o", str(tmp_path / "o"), *BASE,
                 "--scheduler", "local"]) == 2
    assert "pip install 'napari-attnseg[cluster]'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_refusals(tiny, tmp_path, capsys):
    one = tiny / "a.nii.gz"
    assert main(["predict", str(one), "-o", str(tmp_path / "x.nii.gz"), "--scheduler",
                 "local"]) == 2
    assert "give IN_DIR and an output folder" in capsys.readouterr().err
    assert main(["predict", str(tiny), "-o", str(tmp_path / "o"), "--scheduler",
                 "tcp://127.0.0.1:1", "--workers", "3"]) == 2
    assert "--workers sizes the cluster that --scheduler local starts" in capsys.readouterr().err
    assert main(["predict", str(tiny), "-o", str(tmp_path / "o"), "--workers", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err


def test_unreachable_scheduler_is_a_clear_error(tiny, tmp_path, capsys, monkeypatch):
    pytest.importorskip("distributed")
    import napari_attnseg.commands._cluster as cl

    monkeypatch.setattr(cl, "CONNECT_TIMEOUT", 2)
    assert main(["predict", str(tiny), "-o", str(tmp_path / "o"), *BASE,
                 "--scheduler", "tcp://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "--scheduler tcp://127.0.0.1:9: no Dask scheduler answered" in err
    assert not (tmp_path / "o").exists()
