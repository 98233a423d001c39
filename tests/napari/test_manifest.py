"""The npe2 manifest: valid, every command importable, sample data and reader usable."""

import importlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _manifest():
    import npe2

    return npe2.PluginManifest.from_distribution("napari-attnseg")


def test_manifest_validates():
    import npe2

    mf = _manifest()
    assert mf.name == "napari-attnseg"
    # re-validating the raw YAML through the model catches schema errors
    again = npe2.PluginManifest.from_file(str(ROOT / "napari_attnseg" / "napari.yaml"))
    assert {c.id for c in again.contributions.commands} == {c.id for c in mf.contributions.commands}
    assert mf.contributions.readers and mf.contributions.readers[0].accepts_directories
    assert {w.layer_types[0] for w in mf.contributions.writers} == {"labels", "image"}
    assert {s.key for s in mf.contributions.sample_data} == {"ct_phantom", "mr_phantom", "us_cine"}


def test_every_python_name_resolves():
    """What ``npe2 validate --imports`` checks; fails until every widget module exists."""
    missing = []
    for cmd in _manifest().contributions.commands:
        module, _, attr = cmd.python_name.partition(":")
        try:
            obj = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            missing.append(f"{cmd.python_name}: {exc}")
    assert not missing, "\n".join(missing)


def test_manifest_targets_import_light():
    """Discovery must not pull torch, pydicom or pydensecrf."""
    import subprocess
    import sys

    code = ("import sys\n"
            "import napari_attnseg._napari.reader, napari_attnseg._napari.writer\n"
            "import napari_attnseg._napari.sample_data, napari_attnseg.widgets.load\n"
            "print(','.join(m for m in ('torch', 'pydicom', 'pydensecrf') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__('os').environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("key,n_labels", [("ct_phantom", 2), ("mr_phantom", 2), ("us_cine", 1)])
def test_sample_data_opens(key, n_labels, make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-attnseg", key)
    assert len(layers) == 2
    image, labels = viewer.layers[key], viewer.layers[f"{key} ground truth"]
    assert type(image).__name__ == "Image" and type(labels).__name__ == "Labels"
    assert image.data.shape == labels.data.shape
    np.testing.assert_allclose(image.scale, labels.scale)
    meta = image.metadata["attnseg"]
    assert meta["modality"] == {"ct_phantom": "CT", "mr_phantom": "MR", "us_cine": "US"}[key]
    np.testing.assert_allclose(image.scale, meta["spacing"])
    assert int(np.asarray(labels.data).max()) == n_labels


def test_reader_accepts_dicom_folder_rejects_others(tmp_path):
    import npe2

    pm = npe2.PluginManager.instance()
    readers = [r.plugin_name for r in pm.iter_compatible_readers([str(ROOT / "sample_data" /
                                                                     "ct_dicom")])]
    assert "napari-attnseg" in readers
    from napari_attnseg._napari.reader import get_reader

    assert get_reader(str(ROOT / "sample_data" / "ct_dicom")) is not None
    (tmp_path / "a.txt").write_text("x")
    assert get_reader(str(tmp_path)) is None
    assert get_reader(str(tmp_path / "a.txt")) is None
