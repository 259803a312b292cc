"""CloudMaskModel, segmenters and the inference fast path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from xsensei.descriptors import encode_wavelengths
from xsensei.nn.model import CLASSES_2, CLASSES_3, CloudMaskModel
from xsensei.nn.segmenters import PixelNet

S2_6 = [
    [446, 494, 542],
    [537, 560, 582],
    [645, 665, 684],
    [763, 834, 904],
    [1541, 1612, 1683],
    [2074, 2194, 2314],
]


def _inputs(n: int = 6, size: int = 64, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(batch, n, size, size, generator=g)
    desc = torch.as_tensor(encode_wavelengths(np.asarray(S2_6[:n], float)))
    return values, desc[None].expand(batch, -1, -1).contiguous()


def test_pixelnet_is_tiny_and_per_pixel() -> None:
    net = PixelNet(64, 4).eval()
    assert 1000 < sum(p.numel() for p in net.parameters()) < 1600
    x = torch.randn(1, 64, 9, 9)
    full = net(x)
    one = net(x[:, :, 4:5, 4:5])
    torch.testing.assert_close(full[:, :, 4:5, 4:5], one)


@pytest.mark.parametrize("classes", [CLASSES_2, CLASSES_3, None])
def test_deeplab_output_shape(classes) -> None:
    kwargs = {} if classes is None else {"classes": classes}
    model = CloudMaskModel("deeplabv3plus", **kwargs).eval()
    values, desc = _inputs()
    with torch.no_grad():
        out = model(values, desc)
    assert out.shape == (2, len(model.classes), 64, 64)


def test_deeplab_is_output_stride_8_by_default() -> None:
    model = CloudMaskModel("deeplabv3plus")
    assert model.segmenter.encoder.output_stride == 8


def test_edge_refined_deeplab_starts_as_its_deeplab() -> None:
    """The edge head adds only new tensors and starts at zero: a DeepLabv3+'s weights load
    into it unchanged and give the same logits; once the head is non-zero it corrects pixel
    by pixel, at full resolution."""
    torch.manual_seed(0)
    kwargs = {"encoder_output_stride": 16}
    plain = CloudMaskModel("deeplabv3plus", segmenter_kwargs=kwargs).eval()
    refined = CloudMaskModel("deeplabv3plus_refined", segmenter_kwargs=kwargs).eval()
    missing, unexpected = refined.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected
    assert missing and all(k.startswith("segmenter.refine.") for k in missing)
    values, desc = _inputs(batch=2)
    with torch.no_grad():
        torch.testing.assert_close(refined(values, desc), plain(values, desc), rtol=0, atol=0)
        last = refined.segmenter.refine[-1]
        last.bias.copy_(torch.tensor([0.0, 1.0, 0.0, 0.0]))
        shifted = refined(values, desc) - plain(values, desc)
    torch.testing.assert_close(shifted[:, 1], torch.ones_like(shifted[:, 1]))
    assert refined.segmenter.encoder.output_stride == 16


def test_any_module_taking_64_channels_works() -> None:
    seg = nn.Conv2d(64, 2, 3, padding=1)
    model = CloudMaskModel(seg, classes=CLASSES_2).eval()
    values, desc = _inputs(n=4)
    assert model(values, desc).shape == (2, 2, 64, 64)
    with pytest.raises(ValueError, match="custom segmenter"):
        model.config()


@pytest.mark.parametrize("segmenter", ["deeplabv3plus", "pixelnet"])
def test_fast_path_matches_full_forward(segmenter: str) -> None:
    torch.manual_seed(0)
    model = CloudMaskModel(segmenter)
    if segmenter == "pixelnet":  # non-trivial batch-norm statistics, then eval
        norm = model.segmenter.net[0]
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.01, 0.2)
        norm.weight.data.uniform_(0.5, 2.0)
        norm.bias.data.uniform_(-1.0, 1.0)
    model.eval()
    values, desc = _inputs(batch=2)
    fast = model.for_bands(desc[0])
    if segmenter == "pixelnet":  # SEnSeI, batch norm and first conv fused into one N x 16 matrix
        assert fast.weights[0].shape == (desc.shape[1], 16)
    with torch.no_grad():
        full = model(values, desc)
        quick = fast(values)
    torch.testing.assert_close(quick, full, atol=1e-5, rtol=1e-5)


def test_bad_classes_rejected() -> None:
    with pytest.raises(ValueError, match="first class must be 'clear'"):
        CloudMaskModel("pixelnet", classes=("cloud", "clear"))
    with pytest.raises(ValueError, match="unknown class names"):
        CloudMaskModel("pixelnet", classes=("clear", "snow"))
    with pytest.raises(ValueError, match="unknown segmenter"):
        CloudMaskModel("unet9000")


def test_training_step_reduces_loss() -> None:
    """Gradients flow through SEnSeI and DeepLabv3+: a few SGD steps on random data help."""
    torch.manual_seed(0)
    model = CloudMaskModel("deeplabv3plus")
    values, desc = _inputs(n=5, size=32, batch=4, seed=1)
    target = (values.mean(dim=1) > 0.5).long()  # a learnable per-pixel rule
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(values, desc), target)
        loss.backward()
        losses.append(loss.item())
        opt.step()
    sensei_grads = [p.grad for p in model.sensei.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in sensei_grads)
    assert any(g.abs().sum() > 0 for g in sensei_grads)
    assert losses[-1] < 0.8 * losses[0], losses
