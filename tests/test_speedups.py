"""Inference-only rewrites (batch-norm folding, channels-last): same outputs, model untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xsensei.engine.speedups import fold_batchnorm, has_spatial_conv, prepare_cpu_runner
from xsensei.nn.model import CloudMaskModel


def _trained_bn(channels: int, seed: int) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(channels, generator=g))
        bn.running_var.copy_(torch.rand(channels, generator=g) + 0.5)
        bn.weight.copy_(torch.randn(channels, generator=g))
        bn.bias.copy_(torch.randn(channels, generator=g))
    return bn


def _net() -> nn.Module:
    torch.manual_seed(0)
    separable = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
                              nn.Conv2d(8, 16, 1, bias=False))
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), _trained_bn(8, 1), nn.ReLU(),
        separable, _trained_bn(16, 2), nn.ReLU(),
        nn.ReLU(), _trained_bn(16, 3),  # not after a convolution: kept
        nn.Conv2d(16, 4, 1),
    ).eval()


def test_fold_batchnorm_keeps_the_output() -> None:
    net = _net()
    x = torch.randn(2, 3, 20, 24)
    with torch.no_grad():
        want = net(x)
        assert fold_batchnorm(net) == 2
        got = net(x)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 1
    assert isinstance(net[1], nn.Identity) and isinstance(net[4], nn.Identity)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_fold_batchnorm_leaves_sequentials_with_their_own_forward() -> None:
    class Residual(nn.Sequential):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + super().forward(x)

    torch.manual_seed(1)
    net = nn.Sequential(Residual(nn.Conv2d(4, 4, 3, padding=1), _trained_bn(4, 5))).eval()
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        want = net(x)
        assert fold_batchnorm(net) == 0
        torch.testing.assert_close(net(x), want, rtol=0, atol=0)


def test_fold_batchnorm_refuses_training_mode() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(_net().train())


def test_prepare_cpu_runner_copies_folds_and_goes_channels_last() -> None:
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast = prepare_cpu_runner(net)
    assert fast is not net and fast.channels_last
    assert not any(isinstance(m, nn.BatchNorm2d) and i in (1, 4) for i, m in enumerate(fast))
    assert fast[0].weight.is_contiguous(memory_format=torch.channels_last)
    for name, tensor in net.state_dict().items():  # the original is untouched
        assert torch.equal(tensor, before[name]) and tensor.is_contiguous(), name
    x = torch.randn(2, 3, 20, 24)
    with torch.no_grad():
        torch.testing.assert_close(fast(x.contiguous(memory_format=torch.channels_last)),
                                   net(x), rtol=1e-5, atol=1e-5)


def test_prepare_cpu_runner_leaves_per_pixel_and_training_modules() -> None:
    pixel = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.Conv2d(8, 2, 1)).eval()
    assert not has_spatial_conv(pixel)
    assert prepare_cpu_runner(pixel) is pixel
    training = _net().train()
    assert prepare_cpu_runner(training) is training


def test_default_architecture_folds_its_batchnorms() -> None:
    """DeepLabv3+ with the edge head: every batch norm follows a convolution or a separable
    convolution; all are folded but the image-pooling branch's (a Sequential with its own
    forward, run on a 1x1 map)."""
    model = CloudMaskModel("deeplabv3plus_refined",
                           segmenter_kwargs={"encoder_output_stride": 16}).eval()
    runner = model.for_bands(torch.tensor([[0.1, 0.2, 0.3]] * 4))
    fast = prepare_cpu_runner(runner)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in runner.modules()) == 63
    left = [name for name, m in fast.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(left) == 1 and type(fast.get_submodule(left[0].rsplit(".", 1)[0])).__name__ \
        == "ASPPPooling"
