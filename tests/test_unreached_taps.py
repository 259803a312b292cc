"""Taps a crop never reaches: found exactly, and zeroing them changes no training step."""

from __future__ import annotations

import copy

import torch
from torch import nn

from xsensei.training.unreached_taps import find_unreached_taps, zero_unreached_taps


def _atrous(rate: int, **kwargs: object) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(2, 2, 3, padding=rate, dilation=rate, **kwargs))


def test_off_centre_taps_read_only_padding_when_the_rate_reaches_past_the_map() -> None:
    centre_only = torch.ones(3, 3, dtype=torch.bool)
    centre_only[1, 1] = False
    masks = find_unreached_taps(_atrous(12), (1, 2, 8, 8))
    assert list(masks) == ["0.weight"] and torch.equal(masks["0.weight"], centre_only)
    assert find_unreached_taps(_atrous(12), (1, 2, 16, 16)) == {}  # cells 0-3 see 12-15
    # a tall narrow map: every row is reached, only the centre column
    tall = find_unreached_taps(_atrous(12), (1, 2, 24, 8))["0.weight"]
    assert tall[:, 1].tolist() == [False] * 3 and tall[:, [0, 2]].all()
    # reflect padding reads real cells; "same" padding behaves like the explicit one
    assert find_unreached_taps(_atrous(12, padding_mode="reflect"), (1, 2, 13, 13)) == {}
    same = nn.Sequential(nn.Conv2d(2, 2, 3, padding="same", dilation=12))
    assert torch.equal(find_unreached_taps(same, (1, 2, 8, 8))["0.weight"], centre_only)
    # one convolution used on two sizes reaches what the larger input reaches
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=12, dilation=12)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            large = nn.functional.interpolate(x, scale_factor=4)
            return self.conv(large).mean() + self.conv(x).mean()  # the small call comes last

    assert find_unreached_taps(Twice(), (1, 2, 8, 8)) == {}
    # plain 3x3 convolutions, strided or not, reach every tap
    plain = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 3, stride=2, padding=1))
    assert find_unreached_taps(plain, (1, 2, 8, 8)) == {}


def _net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=8, dilation=8, groups=8, bias=False), nn.BatchNorm2d(8),
        nn.ReLU(), nn.Conv2d(8, 2, 1),
    )


def test_zeroing_changes_no_training_step_at_the_crop_but_changes_larger_inputs() -> None:
    torch.manual_seed(0)
    plain = _net()
    zeroed = copy.deepcopy(plain)
    buffers = {k: v.clone() for k, v in zeroed.state_dict().items() if "running" in k}
    report = zero_unreached_taps(zeroed, (1, 3, 8, 8))
    assert report == {"3.weight": 8 * 8 * 1}
    # the pass that found the map sizes ran in eval mode: no statistics moved, mode restored
    assert zeroed.training
    assert all(torch.equal(v, zeroed.state_dict()[k]) for k, v in buffers.items())
    mask = find_unreached_taps(plain, (1, 3, 8, 8))["3.weight"]
    opts = [torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.1)
            for net in (plain, zeroed)]
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        x = torch.randn(4, 3, 8, 8, generator=gen)
        y = torch.randint(0, 2, (4, 8, 8), generator=gen)
        for net, opt in zip((plain, zeroed), opts, strict=True):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    a, b = dict(plain.named_parameters()), dict(zeroed.named_parameters())
    for name in a:
        if name == "3.weight":
            assert torch.equal(a[name][..., ~mask], b[name][..., ~mask])
            assert (b[name][..., mask] == 0).all() and (a[name][..., mask] != 0).all()
        else:
            assert torch.equal(a[name], b[name]), name
    plain.eval()
    zeroed.eval()
    with torch.no_grad():
        small = torch.randn(2, 3, 8, 8, generator=gen)
        assert torch.equal(plain(small), zeroed(small))
        large = torch.randn(2, 3, 32, 32, generator=gen)
        assert not torch.equal(plain(large), zeroed(large))


def test_deeplab_at_crop_128_has_exactly_the_aspp_taps_unreached() -> None:
    from xsensei.nn.segmenters import build_segmenter

    seg = build_segmenter("deeplabv3plus", 64, 4, encoder_output_stride=16)
    found = {k: int(v.sum()) for k, v in find_unreached_taps(seg, (1, 64, 128, 128)).items()}
    assert found == {f"decoder.aspp.0.convs.{i}.0.0.weight": 8 for i in (1, 2, 3)}
    assert set(find_unreached_taps(seg, (1, 64, 256, 256))) == {
        "decoder.aspp.0.convs.2.0.0.weight", "decoder.aspp.0.convs.3.0.0.weight"}


def test_the_packaged_default_carries_no_unreached_taps() -> None:
    """Trained at 128 px crops: the taps those crops never reached are zero in the file."""
    from xsensei.weights.checkpoint import load_model, read_metadata, resolve_model_path

    model = load_model("sensei-deeplab")
    crop = read_metadata(resolve_model_path("sensei-deeplab"))["provenance"]["crop"]
    masks = find_unreached_taps(model.segmenter, (1, 64, crop, crop))
    params = dict(model.segmenter.named_parameters())
    assert masks and all((params[k][..., m] == 0).all() for k, m in masks.items())
