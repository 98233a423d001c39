"""The product loop end to end, driven through the widgets as a user would:

open (reader) -> Segment -> Refine (CRF) -> Compare (both vs ground truth) -> brush correction +
reviewed slices -> Fine-tune (new registry version) -> Segment again with it.

Invariants checked at the end: the user's corrected layer is never modified, re-runs update
layers in place (layer count stable), every derived layer sits exactly on the source grid
(scale, translate, affine), and results carry their provenance in ``metadata["attnseg"]``.
The scan is written with an oblique direction so the affine path is exercised, not only
scale/translate.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pydensecrf")

from napari_attnseg._napari.layers import META_KEY  # noqa: E402
from napari_attnseg._napari.reader import get_reader  # noqa: E402
from napari_attnseg.io import write_volume  # noqa: E402
from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig  # noqa: E402
from napari_attnseg.model.checkpoint import ModelSpec  # noqa: E402
from napari_attnseg.model.registry import ModelRegistry  # noqa: E402
from napari_attnseg.sample import ct_phantom  # noqa: E402
from napari_attnseg.volume import Volume  # noqa: E402

SHAPE = (12, 64, 64)
SPACING = (2.5, 0.8, 0.8)
FAST = dict(epochs=1, steps_per_epoch=3, batch_size=2, patch_size=(32, 32), seed=0)
CORRECTED = (3, 5, 7, 9)  # slices the "user" corrects with the brush


def _oblique(volume: Volume) -> Volume:
    """The same voxels with a 10 degree in-plane rotation and a non-zero origin."""
    t = np.deg2rad(10.0)
    direction = np.array([[1.0, 0.0, 0.0],
                          [0.0, np.cos(t), -np.sin(t)],
                          [0.0, np.sin(t), np.cos(t)]])
    return Volume(volume.data, volume.spacing, origin=(-12.0, 30.0, -25.0),
                  direction=direction, modality=volume.modality, is_labels=volume.is_labels)


@pytest.fixture
def scan_files(tmp_path):
    image, labels = ct_phantom(0, shape=SHAPE, spacing=SPACING)
    img_path = write_volume(_oblique(image), tmp_path / "ct.nii.gz")
    gt_path = write_volume(_oblique(labels), tmp_path / "ct_gt.nii.gz")
    return img_path, gt_path, labels.data


@pytest.fixture
def tiny_model():
    """A tiny untrained 2D network in the test registry (3 classes like the phantom)."""
    torch.manual_seed(0)
    cfg = UNetConfig(spatial_dims=2, out_channels=3, channels=(4, 8, 16))
    spec = ModelSpec(arch=cfg, label_names={0: "background", 1: "organ", 2: "lesion"},
                     modality="CT", patch_size=(64, 64), name="tiny")
    reg = ModelRegistry()
    entry = reg.add_version("tiny", AttentionUNet(cfg), spec)
    reg.set_active("tiny", entry.version)
    return entry


def _open(viewer, path):
    reader = get_reader(str(path))
    assert reader is not None, f"the plugin's reader refused {path}"
    layers = []
    for data, kwargs, kind in reader(str(path)):
        layers.append(getattr(viewer, f"add_{kind}")(data, **kwargs))
    assert len(layers) == 1
    return layers[0]


def _grid(layer):
    n = layer.data.ndim if type(layer).__name__ == "Labels" else layer.ndim
    return (np.asarray(layer.scale)[-3:], np.asarray(layer.translate)[-3:],
            np.asarray(layer.affine.affine_matrix)[-4:, -4:], n)


def _assert_same_grid(layer, ref):
    s, t, a, _ = _grid(layer)
    rs, rt, ra, _ = _grid(ref)
    np.testing.assert_allclose(s, rs, err_msg=f"{layer.name}: scale")
    np.testing.assert_allclose(t, rt, atol=1e-6, err_msg=f"{layer.name}: translate")
    np.testing.assert_allclose(a, ra, atol=1e-6, err_msg=f"{layer.name}: affine")


def test_product_loop_end_to_end(make_napari_viewer, qtbot, scan_files, tiny_model):
    from napari_attnseg.widgets.compare import CompareWidget
    from napari_attnseg.widgets.finetune import FinetuneWidget
    from napari_attnseg.widgets.refine import RefineWidget
    from napari_attnseg.widgets.segment import SegmentWidget

    img_path, gt_path, gt_data = scan_files
    viewer = make_napari_viewer()

    # 1. load through the plugin's reader: geometry from the file (oblique affine)
    image = _open(viewer, img_path)
    gt = _open(viewer, gt_path)
    assert image.name == "ct" and type(image).__name__ == "Image"
    assert type(gt).__name__ == "Labels", "a uint8 mask file opens as Labels"
    np.testing.assert_array_equal(gt.data, gt_data)
    assert not np.allclose(image.affine.affine_matrix, np.eye(4)), "oblique affine kept"
    _assert_same_grid(gt, image)

    seg = SegmentWidget(viewer)
    refine = RefineWidget(viewer)
    compare = CompareWidget(viewer)
    tune = FinetuneWidget(viewer)
    for w in (seg, refine, compare, tune):
        qtbot.addWidget(getattr(w, "native", w))  # a QWidget or a magicgui Container

    # 2. segment with the registry's default model (sync path of the same JobRunner)
    seg.image_combo.setCurrentText("ct")
    seg.set_model_folder(tiny_model.path)  # (a shipped default model may be listed first)
    assert seg.model_folder() == tiny_model.path
    assert not seg.info_label.text().startswith("cannot run"), seg.info_label.text()
    runner = seg.make_runner()
    assert runner is not None
    pred = runner.run_sync()
    assert runner.error is None, runner.error
    labels = viewer.layers["ct [attnseg]"]
    probs = viewer.layers["ct [attnseg] probabilities"]
    # the layer shows the foreground probability (no channel slider); every class is kept in
    # the metadata for the CRF
    assert labels.data.shape == SHAPE and probs.data.shape == SHAPE
    assert probs.metadata[META_KEY]["class_probabilities"].shape == (3,) + SHAPE
    np.testing.assert_array_equal(labels.data, pred.labels)
    _assert_same_grid(labels, image)
    _assert_same_grid(probs, image)
    prov = labels.metadata[META_KEY]["provenance"]
    assert prov["model_id"].startswith("tiny@1:") and prov["kind"] == "attnseg prediction"

    # 3. refine with the dense CRF (probabilities -> labels on the same grid)
    # (the new segmentation's probabilities are preselected)
    assert refine.source_combo.currentText() == "ct [attnseg] probabilities"
    assert refine.config().probabilities.shape == (3,) + SHAPE
    refine.image_combo.setCurrentText("ct")
    refine.iterations_spin.setValue(2)
    refine.refine_volume(sync=True)
    assert refine.runner.error is None, refine.runner.error
    crf = viewer.layers["ct [attnseg+crf]"]
    assert crf.data.shape == SHAPE
    _assert_same_grid(crf, image)
    assert crf.metadata[META_KEY]["provenance"]["crf"]["source"] == "ct [attnseg] probabilities"

    # 4. compare both against the ground truth; Dice checked against an independent count
    compare.gt_combo.setCurrentText("ct_gt")
    compare.set_candidates(["ct [attnseg]", "ct [attnseg+crf]"])
    runner = compare.make_runner()
    assert runner is not None, compare.message.text()
    runner.run_sync()
    assert runner.error is None, runner.error
    rows = compare.report.rows
    scored = {r["candidate"] for r in rows}
    assert {"ct [attnseg]", "ct [attnseg+crf]"} <= scored
    assert compare.table.rowCount() == len(rows)
    for r in rows:
        if r["candidate"] == "ct [attnseg]" and str(r["label"]) in ("1", "organ"):
            a, b = labels.data == 1, gt_data == 1
            expected = 2 * (a & b).sum() / (a.sum() + b.sum()) if a.sum() + b.sum() else 1.0
            assert r["dice"] == pytest.approx(expected, abs=1e-6)
            break
    else:
        pytest.fail(f"no organ row for the prediction in {rows}")
    n_layers = len(viewer.layers)

    # 5. brush correction on the prediction layer: paint the ground truth into a few slices
    # (before choosing the layer in Fine-tune: strokes are recorded from the layer's creation)
    for z in CORRECTED:
        for value in (0, 1, 2):
            idx = np.nonzero(gt_data[z] == value)
            labels.data_setitem((np.full(idx[0].size, z), *idx), value)
    np.testing.assert_array_equal(labels.data[list(CORRECTED)], gt_data[list(CORRECTED)])
    assert labels.metadata[META_KEY].get("edited"), "painting marks the layer as edited"

    # 6. fine-tune on the reviewed (painted) slices -> a new registry version
    tune.image_combo.setCurrentText("ct")
    tune.labels_combo.setCurrentText("ct [attnseg]")
    assert tune.tracker is not None and tune.tracker.layer is labels
    assert tune.tracker.reviewed_slices() == list(CORRECTED), "painted slices count as reviewed"
    corrected = np.array(labels.data, copy=True)
    # a learning rate that improves the untrained model within the budget: a fine-tune that does
    # not beat its base on the held-out slices saves nothing
    tune.train_overrides = dict(FAST, lr=1e-2, epochs=2)
    runner = tune.make_runner()
    assert runner is not None
    result = runner.run_sync()
    assert runner.error is None, runner.error
    reg = ModelRegistry()
    assert [e.version for e in reg.versions("tiny")] == ["1", "2"]
    assert result.entry.ref == "tiny@2" and result.entry.parent
    np.testing.assert_array_equal(labels.data, corrected)

    # 7. segment again with the new version: the edited layer is kept, a "(new)" layer appears
    seg.refresh_models()
    seg.set_model_folder(result.entry.path)
    runner = seg.make_runner()
    runner.run_sync()
    assert runner.error is None, runner.error
    new = viewer.layers["ct [attnseg] (new)"]
    assert new.metadata[META_KEY]["provenance"]["model_id"].startswith("tiny@2:")
    np.testing.assert_array_equal(labels.data, corrected)  # the user's corrections survive
    n_after_new = len(viewer.layers)
    assert n_after_new == n_layers + 2  # "(new)" labels + its probabilities

    # re-running everything updates the layers in place
    seg.make_runner().run_sync()
    refine.refine_volume(sync=True)
    compare.make_runner().run_sync()
    assert len(viewer.layers) == n_after_new
    assert viewer.layers["ct [attnseg] (new)"] is new
    assert viewer.layers["ct [attnseg+crf]"] is crf
    np.testing.assert_array_equal(labels.data, corrected)

    # every derived layer sits on the source grid and says where it came from
    derived = [ly for ly in viewer.layers if "[attnseg" in ly.name]
    assert len(derived) >= 5
    for ly in derived:
        if ly.data.shape[-3:] == SHAPE:
            _assert_same_grid(ly, image)
        meta = ly.metadata.get(META_KEY) or {}
        assert meta.get("provenance"), f"{ly.name} has no provenance"
