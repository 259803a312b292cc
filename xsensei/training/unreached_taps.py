"""Convolution taps that training at a fixed crop size can never reach.

A dilated 3x3 convolution whose dilation is not smaller than its input map reads only zero
padding with its off-centre taps. DeepLabv3+ trained on 128 px crops at output stride 16
sees 8 x 8 maps, so the ASPP branches at rates 12, 24 and 36 never train those taps: they
keep their random initial values, get exactly zero gradient, and change nothing at the crop
size. At inference on larger windows they do reach real features and add that noise. The
trainer zeroes them, which leaves training bit for bit unchanged and makes every window size
compute the function that was trained.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _reached(size: int, kernel: int, stride: int, padding: int, dilation: int) -> list[bool]:
    """Per kernel index along one axis: does any output position read a real input cell?"""
    outputs = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    return [
        any(0 <= o * stride - padding + j * dilation < size for o in range(max(outputs, 0)))
        for j in range(kernel)
    ]


def _padding(conv: nn.Conv2d) -> tuple[int, int]:
    if conv.padding == "valid":
        return 0, 0
    if conv.padding == "same":  # left padding of an odd total; taps fall the same way
        return tuple((d * (k - 1)) // 2 for d, k in zip(conv.dilation, conv.kernel_size,
                                                       strict=True))  # type: ignore[return-value]
    return conv.padding  # type: ignore[return-value]


def find_unreached_taps(module: nn.Module, input_shape: Sequence[int]) -> dict[str, torch.Tensor]:
    """``{parameter name: bool (kh, kw) mask}`` of the zero-padded ``Conv2d`` taps that no
    output position reads inside the input when ``module`` runs on ``input_shape``
    ``(B, C, H, W)``; only convolutions with such taps are listed.

    The map sizes come from one forward pass of zeros in eval mode (batch-norm statistics are
    not touched); the module's train/eval state is restored.
    """
    sizes: dict[str, tuple[int, int]] = {}
    hooks = []
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Conv2d) and sub.padding_mode == "zeros":
            def record(_m: nn.Module, args: tuple[torch.Tensor, ...], name: str = name) -> None:
                # a module called on several sizes reaches what its largest input reaches
                h, w = sizes.get(name, (0, 0))
                sizes[name] = (max(h, int(args[0].shape[-2])), max(w, int(args[0].shape[-1])))
            hooks.append(sub.register_forward_pre_hook(record))
    was_training = {name: sub.training for name, sub in module.named_modules()}
    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(*input_shape, device=device))
    finally:
        for hook in hooks:
            hook.remove()
        for name, sub in module.named_modules():
            sub.train(was_training[name])
    masks: dict[str, torch.Tensor] = {}
    convs = dict(module.named_modules())
    for name, (h, w) in sizes.items():
        conv = convs[name]
        assert isinstance(conv, nn.Conv2d)
        (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
        ph, pw = _padding(conv)
        rows = torch.tensor(_reached(h, kh, sh, ph, dh))
        cols = torch.tensor(_reached(w, kw, sw, pw, dw))
        unreached = ~(rows[:, None] & cols[None, :])
        if bool(unreached.any()):
            masks[f"{name}.weight" if name else "weight"] = unreached
    return masks


def zero_unreached_taps(module: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """Set the taps :func:`find_unreached_taps` lists to zero, in place; returns
    ``{parameter name: zeroed weights}`` (all kernels' entries counted)."""
    params = dict(module.named_parameters())
    zeroed: dict[str, int] = {}
    with torch.no_grad():
        for name, mask in find_unreached_taps(module, input_shape).items():
            weight = params[name]
            weight[..., mask.to(weight.device)] = 0
            zeroed[name] = int(mask.sum()) * weight.shape[0] * weight.shape[1]
    return zeroed
