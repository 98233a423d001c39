"""AttentionUNet: shapes, deep supervision, gradients, input checks, parameter counts, fast path."""

from __future__ import annotations

import pytest
import torch

from napari_attnseg.errors import ModelError
from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig, count_parameters

SMALL = (4, 8, 16)


def _expected_params(c, cin=1, cout=2, attention=True, ds=True, fusion="add", dims=2):
    """Independent parameter count from the architecture description (batch norm)."""
    k3, k2 = 3**dims, 2**dims
    n = 0
    for i, ci in enumerate(c):
        prev = cin if i == 0 else c[i - 1]
        n += prev * ci * k3 + 2 * ci + ci * ci * k3 + 2 * ci
    for i in range(len(c) - 1):
        lo, hi = c[i], c[i + 1]
        n += hi * lo * k2 + lo  # transposed conv
        if attention:
            inter = max(lo // 2, 1)
            n += lo * inter * k2 + hi * inter + inter + inter + 1
        first_in = 2 * lo if fusion == "concat" else lo
        n += first_in * lo * k3 + 2 * lo + lo * lo * k3 + 2 * lo
    n += c[0] * cout + cout
    if ds:
        n += sum(ci * cout + cout for ci in c[1:-1])
    return n


def test_default_parameter_count_is_pinned():
    net = AttentionUNet()
    assert net.config == UNetConfig()
    assert net.config.channels == (16, 32, 64, 128, 256)
    assert count_parameters(net) == _expected_params((16, 32, 64, 128, 256))
    assert count_parameters(net) == 1_812_444  # regression pin: change only on purpose


@pytest.mark.parametrize("fusion", ["add", "concat"])
@pytest.mark.parametrize("attention", [True, False])
def test_parameter_count_matches_description(fusion, attention):
    net = AttentionUNet(channels=SMALL, attention=attention, skip_fusion=fusion, out_channels=3)
    want = _expected_params(SMALL, cout=3, attention=attention, fusion=fusion)
    assert count_parameters(net) == want


def test_attention_gates_present_or_absent():
    with_gates = AttentionUNet(channels=SMALL)
    without = AttentionUNet(channels=SMALL, attention=False)
    gate_params = sum(p.numel() for n, p in with_gates.named_parameters() if ".gate." in n)
    assert gate_params > 0
    assert not any(".gate." in n for n, _ in without.named_parameters())
    assert count_parameters(with_gates) - count_parameters(without) == gate_params


def test_shapes_2d_train_and_eval():
    torch.manual_seed(0)
    net = AttentionUNet(channels=SMALL, out_channels=3)
    x = torch.randn(2, 1, 32, 48)
    net.train()
    outs = net(x)
    assert isinstance(outs, list)
    assert [tuple(o.shape) for o in outs] == [(2, 3, 32, 48), (2, 3, 16, 24)]
    net.eval()
    with torch.inference_mode():
        y = net(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 3, 32, 48)
    assert y.is_contiguous()


def test_deep_supervision_levels_default_depth():
    net = AttentionUNet(channels=(2, 4, 4, 8, 8))
    outs = net.train()(torch.randn(1, 1, 32, 32))
    assert [o.shape[-1] for o in outs] == [32, 16, 8, 4]
    net_no_ds = AttentionUNet(channels=(2, 4, 4, 8, 8), deep_supervision=False).train()
    y = net_no_ds(torch.randn(1, 1, 32, 32))
    assert isinstance(y, torch.Tensor) and y.shape == (1, 2, 32, 32)


def test_shapes_3d():
    torch.manual_seed(0)
    net = AttentionUNet(spatial_dims=3, channels=SMALL, in_channels=2)
    x = torch.randn(1, 2, 8, 16, 12)
    outs = net.train()(x)
    assert [tuple(o.shape) for o in outs] == [(1, 2, 8, 16, 12), (1, 2, 4, 8, 6)]
    with torch.inference_mode():
        y = net.eval()(x)
    assert y.shape == (1, 2, 8, 16, 12)


@pytest.mark.parametrize("norm", ["batch", "instance", "group"])
def test_gradients_reach_every_parameter(norm):
    torch.manual_seed(0)
    net = AttentionUNet(channels=SMALL, norm=norm, dropout=0.1).train()
    outs = net(torch.randn(2, 1, 16, 16))
    loss = sum(o.square().mean() for o in outs)
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_input_checks_raise_model_error_with_fix():
    net = AttentionUNet(channels=(4, 8, 16, 32, 64)).eval()
    with pytest.raises(ModelError, match=r"pad to a multiple of 16.*sliding_window"):
        net(torch.randn(1, 1, 40, 32))
    with pytest.raises(ModelError, match=r"expects 4.*x\[None, None\]"):
        net(torch.randn(32, 32))
    with pytest.raises(ModelError, match=r"3 channel\(s\).*expects 1"):
        net(torch.randn(1, 3, 32, 32))
    net3 = AttentionUNet(spatial_dims=3, channels=SMALL)
    with pytest.raises(ModelError, match="expects 5"):
        net3(torch.randn(1, 1, 8, 8))
    assert net.divisor == 16 and net3.divisor == 4


def test_config_validation_and_dict_round_trip():
    cfg = UNetConfig(spatial_dims=3, channels=[8, 16], norm="Instance", skip_fusion="CONCAT")
    assert cfg.channels == (8, 16) and cfg.norm == "instance" and cfg.skip_fusion == "concat"
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="did you mean 'batch'"):
        UNetConfig(norm="batc")
    with pytest.raises(ValueError, match="spatial_dims"):
        UNetConfig(spatial_dims=4)
    with pytest.raises(ValueError, match="unknown architecture key"):
        UNetConfig.from_dict({"chanels": [4, 8]})
    with pytest.raises(ValueError, match="unknown AttentionUNet option"):
        AttentionUNet(chanels=(4, 8))
    assert AttentionUNet(UNetConfig(channels=SMALL), out_channels=5).config.out_channels == 5


def _trained_bn_net(**kw):
    torch.manual_seed(1)
    net = AttentionUNet(channels=SMALL, **kw).train()
    with torch.no_grad():  # a few forwards give batch norm non-trivial running statistics
        for _ in range(3):
            net(torch.randn(2, 1, 16, 16) * 3 + 1)
    return net.eval()


def test_folded_batchnorm_path_matches_plain_eval():
    net = _trained_bn_net()
    x = torch.randn(1, 1, 16, 16)
    plain = net(x)  # grad enabled: unfolded conv -> BN -> ReLU
    with torch.inference_mode():
        fast = net(x)
    torch.testing.assert_close(fast, plain.detach(), rtol=1e-4, atol=1e-5)


def test_folded_cache_follows_weight_changes():
    net = _trained_bn_net()
    other = _trained_bn_net()
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.1)
    x = torch.randn(1, 1, 16, 16)
    with torch.inference_mode():
        stale = net(x)  # fills the folded-weights cache
        net.load_state_dict(other.state_dict())
        fresh = net(x)
        torch.testing.assert_close(fresh, other(x))
    assert not torch.allclose(stale, fresh)
    # a training step changes only the running statistics; the cache must follow them too
    batch = torch.randn(2, 1, 16, 16) * 2
    with torch.no_grad():
        net.train()(batch)
        other.train()(batch)
    net.eval(), other.eval()
    with torch.inference_mode():
        torch.testing.assert_close(net(x), other(x))
        assert not torch.allclose(net(x), fresh)


def test_fuse_for_inference_keeps_state_dict_and_output():
    net = _trained_bn_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(1, 1, 16, 16)
    with torch.inference_mode():
        y0 = net(x)
        y1 = net.fuse_for_inference()(x)
    torch.testing.assert_close(y1, y0)
    assert not net.training
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_runs_under_bf16_autocast():
    net = _trained_bn_net()
    x = torch.randn(1, 1, 32, 32)
    with torch.inference_mode():
        ref = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(x)
    assert low.shape == ref.shape
    assert torch.isfinite(low.float()).all()
    agree = (low.float().argmax(1) == ref.argmax(1)).float().mean()
    assert agree > 0.9


@pytest.mark.slow  # importing MONAI alone takes seconds
def test_same_output_shape_as_monai_attention_unet():
    monai_nets = pytest.importorskip("monai.networks.nets")
    ref = monai_nets.AttentionUnet(spatial_dims=2, in_channels=1, out_channels=3, channels=SMALL, strides=(2, 2))
    ours = AttentionUNet(channels=SMALL, out_channels=3, skip_fusion="concat").eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.inference_mode():
        assert ours(x).shape == ref.eval()(x).shape
    # same channels, same concat decoder: parameter counts within 15% of MONAI's
    big_ref = monai_nets.AttentionUnet(
        spatial_dims=2, in_channels=1, out_channels=2, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2)
    )
    big = AttentionUNet(skip_fusion="concat")
    assert abs(count_parameters(big) / count_parameters(big_ref) - 1) < 0.15
