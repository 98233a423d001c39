"""attnseg-demo: ``build`` sets the viewer up (sample, ground truth, every widget docked) without
an event loop; ``main --segment --screenshot --quit`` runs headless and writes a PNG."""

from __future__ import annotations

import numpy as np
import pytest

from napari_attnseg import demo


def test_build_docks_every_widget_with_the_sample(make_napari_viewer):
    viewer = make_napari_viewer()
    docked = demo.build(viewer, "ct_phantom")
    assert set(docked) == {cls for _, _, cls in demo.WIDGETS}
    assert "FinetuneWidget" in docked and "BaselinesWidget" in docked
    # every widget sits in a dock of the main window under its title
    titles = {title for title, _, _ in demo.WIDGETS}
    assert titles <= set(viewer.window.dock_widgets)
    assert [ly.name for ly in viewer.layers] == ["ct_phantom", "ct_phantom ground truth"]
    image, gt = viewer.layers
    assert type(gt).__name__ == "Labels" and gt.contour > 0
    assert tuple(gt.colormap.map([1])[0]) != tuple(gt.colormap.map([2])[0])
    np.testing.assert_allclose(gt.scale, image.scale)
    np.testing.assert_allclose(gt.translate, image.translate)
    # the widgets point at the sample
    assert docked["SegmentWidget"].image_combo.currentText() == "ct_phantom"
    assert docked["CompareWidget"].gt_combo.currentText() == "ct_phantom ground truth"
    # the shown slice goes through the structure (the slice with the most foreground)
    z = int(np.round(image.world_to_data(viewer.dims.point)[0]))
    area = (np.asarray(gt.data) > 0).sum(axis=(1, 2))
    assert area[z] == area.max() > 0


def test_build_with_model_selects_it(make_napari_viewer, tmp_path):
    torch = pytest.importorskip("torch")
    from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
    from napari_attnseg.model.checkpoint import ModelSpec
    from napari_attnseg.model.registry import ModelRegistry

    torch.manual_seed(0)
    cfg = UNetConfig(spatial_dims=2, out_channels=3, channels=(4, 8))
    spec = ModelSpec(arch=cfg, label_names={0: "bg", 1: "organ", 2: "lesion"}, modality="CT",
                     patch_size=(64, 64), name="demo-tiny")
    reg = ModelRegistry()
    reg.add_version("demo-tiny", AttentionUNet(cfg), spec)
    second = reg.add_version("demo-tiny", AttentionUNet(cfg), spec)
    viewer = make_napari_viewer()
    docked = demo.build(viewer, "ct_phantom", model="demo-tiny@2",
                        widgets=[w for w in demo.WIDGETS if w[2] == "SegmentWidget"])
    assert set(docked) == {"SegmentWidget"}
    assert docked["SegmentWidget"].model_folder() == second.path
    with pytest.raises(Exception, match="demo-tiny@7|7"):
        demo.select_model(docked["SegmentWidget"], "demo-tiny@7")


def test_bad_sample_name_is_refused(make_napari_viewer):
    viewer = make_napari_viewer()
    with pytest.raises(ValueError, match="sample"):
        demo.open_sample(viewer, "pet_phantom")


def test_main_headless_screenshot(tmp_path, monkeypatch):
    """The console script end to end: window, widgets, screenshot, quit (no model: no segment)."""
    import napari

    created = []
    real_viewer = napari.Viewer

    def viewer_factory(*args, **kwargs):
        kwargs["show"] = False
        v = real_viewer(*args, **kwargs)
        created.append(v)
        return v

    monkeypatch.setattr(napari, "Viewer", viewer_factory)
    out = tmp_path / "shot.png"
    try:
        assert demo.main(["--screenshot", str(out), "--quit", "--size", "900", "600"]) == 0
    finally:
        for v in created:
            try:
                v.close()
            except RuntimeError:
                pass
    assert out.is_file() and out.stat().st_size > 1000
    from imageio.v3 import imread

    img = imread(out)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
