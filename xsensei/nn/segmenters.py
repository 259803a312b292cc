"""Segmentation models that turn SEnSeI's 64-channel feature map into class logits.

Any ``nn.Module`` that maps ``(B, 64, H, W)`` to ``(B, classes, H, W)`` works; these are the
two the paper used, built so that nothing is ever downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class PixelMLP(nn.Module):
    """Per-pixel layers as matrix products over pixel tiles: ``(B, N, H, W)`` -> logits.

    Equal to a stack of 1x1 convolutions with ReLU between them, but run as ``addmm`` on
    ``(pixels, channels)`` tiles small enough to stay in the CPU cache, which on a CPU is
    several times faster than convolution kernels for a handful of channels.
    """

    #: Pixels per tile: 32k pixels x 16 channels x 4 B = 2 MB of activations.
    tile = 32768

    def __init__(self, weights: list[torch.Tensor], biases: list[torch.Tensor]) -> None:
        super().__init__()
        self.weights = nn.ParameterList(nn.Parameter(w.t().contiguous(), requires_grad=False)
                                        for w in weights)  # stored (in, out)
        self.biases = nn.ParameterList(nn.Parameter(b.clone(), requires_grad=False)
                                       for b in biases)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, h, w = x.shape
        flat = x.permute(0, 2, 3, 1).reshape(-1, n)  # (pixels, bands), one copy
        classes = self.weights[-1].shape[1]
        out = torch.empty(flat.shape[0], classes, dtype=x.dtype, device=x.device)
        last = len(self.weights) - 1
        for start in range(0, flat.shape[0], self.tile):
            z = flat[start : start + self.tile]
            for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
                z = torch.addmm(bias, z, weight)
                if i < last:
                    z = z.relu_()
            out[start : start + self.tile] = z
        return out.reshape(b, h, w, classes).permute(0, 3, 1, 2).contiguous()


class PixelNet(nn.Module):
    """The paper's tiny per-pixel network: 1x1 convolutions only, no spatial context.

    With 64 input channels and the default hidden width of 16 it has about 1.5k parameters,
    which makes it the fast option when speed matters more than edges and thin cloud. The input
    batch norm matters: SEnSeI's channels have standard deviations of ~0.1 around offsets of
    ~0.15, and without it the net sat at the majority class for thousands of steps. In eval mode
    it is a per-channel affine map, as cheap as the convolutions.
    """

    def __init__(self, in_channels: int = 64, classes: int = 4, hidden: int = 16) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.classes = classes
        self.hidden = hidden
        self.net = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def fused_with(self, conv: nn.Conv2d) -> PixelMLP:
        """This net (eval mode) after the 1x1 ``conv``, merged into one :class:`PixelMLP`.

        ``conv`` (folded SEnSeI, N -> 64), the batch norm and the first 1x1 convolution are all
        affine with nothing in between, so they collapse into one ``(N, hidden)`` matrix: per
        pixel ~N x hidden multiply-adds instead of ~64 x (N + hidden), the same result up to
        float rounding.
        """
        norm, first = self.net[0], self.net[1]
        assert isinstance(norm, nn.BatchNorm2d) and isinstance(first, nn.Conv2d)
        assert norm.running_var is not None and norm.running_mean is not None
        with torch.no_grad():
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)  # (64,)
            shift = norm.bias - norm.running_mean * scale
            w1 = first.weight[:, :, 0, 0] * scale[None]  # (hidden, 64)
            b1 = first.bias + first.weight[:, :, 0, 0] @ shift
            w0, b0 = conv.weight[:, :, 0, 0], conv.bias  # (64, N), (64,)
            weights = [w1 @ w0]
            biases = [w1 @ b0 + b1]
            for layer in list(self.net)[2:]:
                if isinstance(layer, nn.Conv2d):
                    weights.append(layer.weight[:, :, 0, 0])
                    biases.append(layer.bias)
                else:
                    assert isinstance(layer, nn.ReLU)
        return PixelMLP(weights, biases).eval()


def deeplabv3plus(
    in_channels: int = 64,
    classes: int = 4,
    encoder_output_stride: int = 8,
    encoder_name: str = "mobilenet_v2",
    decoder_atrous_rates: Sequence[int] = (12, 24, 36),
) -> nn.Module:
    """DeepLabv3+ with a MobileNetV2 encoder (segmentation-models-pytorch), random init.

    ``encoder_weights=None`` always: weights come from our own checkpoints, never a download.
    Input sides must be divisible by the output stride's multiple (the engine pads windows).
    The ASPP ``decoder_atrous_rates`` (smp's default) hold no weights, like the stride.
    """
    import segmentation_models_pytorch as smp

    return smp.DeepLabV3Plus(
        encoder_name=encoder_name,
        encoder_weights=None,
        encoder_output_stride=encoder_output_stride,
        decoder_atrous_rates=tuple(int(r) for r in decoder_atrous_rates),
        in_channels=in_channels,
        classes=classes,
    )


class EdgeRefinedDeepLab(nn.Module):
    """DeepLabv3+ whose quarter-resolution logits are corrected at full resolution.

    DeepLabv3+ decides at 1/4 of the input resolution and upsamples bilinearly, which blurs
    cloud edges over ~4 px: even a perfect quarter-resolution answer, upsampled so, scores
    cloud F1 ~92-97 on edge-rich scenes. A small head of 3x3 convolutions sees SEnSeI's
    full-resolution features beside the upsampled logits and adds a correction. Its last
    layer starts at zero, so the model starts as its DeepLabv3+ and can be fine-tuned from
    one (same parameter names: ``encoder.*``, ``decoder.*``, ``segmentation_head.*``).
    """

    def __init__(self, in_channels: int = 64, classes: int = 4, encoder_output_stride: int = 16,
                 refine_channels: int = 32, refine_layers: int = 2, **deeplab_kwargs: Any
                 ) -> None:
        super().__init__()
        base = deeplabv3plus(in_channels=in_channels, classes=classes,
                             encoder_output_stride=encoder_output_stride, **deeplab_kwargs)
        self.encoder = base.encoder
        self.decoder = base.decoder
        self.segmentation_head = base.segmentation_head
        layers: list[nn.Module] = []
        width = in_channels + classes
        for _ in range(refine_layers):
            layers += [nn.Conv2d(width, refine_channels, 3, padding=1, bias=False),
                       nn.BatchNorm2d(refine_channels), nn.ReLU(inplace=True)]
            width = refine_channels
        last = nn.Conv2d(width, classes, 1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.refine = nn.Sequential(*layers, last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coarse = self.segmentation_head(self.decoder(self.encoder(x)))
        return coarse + self.refine(torch.cat([x, coarse.to(x.dtype)], 1))


SEGMENTERS = {"deeplabv3plus": deeplabv3plus, "deeplabv3plus_refined": EdgeRefinedDeepLab,
              "pixelnet": PixelNet}


def build_segmenter(name: str, in_channels: int, classes: int, **kwargs: Any) -> nn.Module:
    """Build a registered segmenter by name, for checkpoints that store only a config."""
    try:
        factory = SEGMENTERS[name]
    except KeyError:
        raise ValueError(
            f"unknown segmenter {name!r}; known: {sorted(SEGMENTERS)}. To use your own model, "
            "pass the nn.Module to CloudMaskModel(segmenter=...)"
        ) from None
    return factory(in_channels=in_channels, classes=classes, **kwargs)
