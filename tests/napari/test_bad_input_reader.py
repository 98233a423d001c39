"""The napari reader never lets an exception escape (issue 12): a bad file becomes one error
notification naming the file and the problem, and the other files still open."""

from __future__ import annotations

import os
import struct
import threading

import nibabel as nib
import numpy as np
import pytest

from napari_attnseg._napari import reader


@pytest.fixture
def notes(monkeypatch):
    import napari.utils.notifications as notifications

    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(notifications, "show_error", lambda m: shown.append(("error", m)))
    monkeypatch.setattr(notifications, "show_warning", lambda m: shown.append(("warning", m)))
    return shown


def _good(tmp_path):
    p = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(8, 7, 6)).astype(np.float32),
                             np.diag([0.5, 0.5, 2.0, 1.0])), str(p))
    return p


def _singular_sform(tmp_path):
    img = nib.Nifti1Image(np.zeros((8, 7, 6), np.float32), np.eye(4))
    raw = bytearray(img.to_bytes())
    struct.pack_into("<4f", raw, 296, 0.0, 0.0, 0.0, 0.0)  # srow_y = 0: singular
    p = tmp_path / "singular.nii"
    p.write_bytes(bytes(raw))
    return p


def test_singular_sform_is_a_notification(tmp_path, notes):
    bad, good = _singular_sform(tmp_path), _good(tmp_path)
    layers = reader.read_layers([str(bad), str(good)])
    assert [t[1]["name"] for t in layers] == ["good"]
    errors = [m for kind, m in notes if kind == "error"]
    assert len(errors) == 1 and "singular.nii" in errors[0] and "singular" in errors[0][20:]


@pytest.mark.parametrize("exc,text", [(MemoryError(), "not enough memory"),
                                      (RuntimeError("boom"), "unexpected RuntimeError: boom"),
                                      (KeyError("x"), "unexpected KeyError")])
def test_no_exception_escapes(tmp_path, notes, monkeypatch, exc, text):
    from napari_attnseg import io

    def fail(*a, **k):
        raise exc

    monkeypatch.setattr(io, "read_volume", fail)
    assert reader.read_layers(str(_good(tmp_path))) == []
    (kind, message), = notes
    assert kind == "error" and "good.nii.gz" in message and text in message


def test_fifo_does_not_hang_the_reader(tmp_path, notes):
    p = tmp_path / "pipe.nii.gz"
    os.mkfifo(p)
    assert reader.get_reader(str(p)) is None  # napari's own dispatch never picks it
    done = threading.Event()
    threading.Thread(target=lambda: (reader.read_layers(str(p)), done.set()), daemon=True).start()
    assert done.wait(10), "reading a FIFO blocked"
    assert any("FIFO" in m for _, m in notes)


def test_load_widget_refuses_a_corrupted_file(make_napari_viewer, notes, tmp_path):
    """The Load widget reads through the same gate: a flipped bit in a .nii.gz (the header
    still lists) is an error notification on Open, and no layer is added."""
    from napari_attnseg.widgets.load import LoadWidget

    p = _good(tmp_path)
    raw = bytearray(p.read_bytes())
    raw[len(raw) - 6] ^= 0x10  # the CRC trailer: the voxels may even decode
    p.write_bytes(bytes(raw))
    viewer = make_napari_viewer()
    w = LoadWidget(viewer)
    assert w.set_path(p, sync=True)  # the table lists it from the header
    assert w.open_selected(sync=True) is None
    assert len(viewer.layers) == 0
    assert any("good.nii.gz" in m and "corrupt" in m for kind, m in notes if kind == "error")
