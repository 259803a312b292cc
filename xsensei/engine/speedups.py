"""Inference-only rewrites of a band-specialised runner: same outputs (to float rounding),
faster on CPU.

- Batch norm folded into the convolution before it: in eval mode a batch norm is a fixed
  per-channel affine map, so it merges into that convolution's weights and bias, and its own
  pass over the activations disappears (62 of the 63 in the default DeepLabv3+, ~14 % of its
  CPU time).
- Channels-last (NHWC) layout: oneDNN's CPU convolutions run ~1.4-1.6x faster that way.

Both are applied to a copy (:func:`prepare_cpu_runner`), never to a model the caller holds.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batchnorm", "has_spatial_conv", "prepare_cpu_runner"]


def _is_plain_sequential(module: nn.Module) -> bool:
    """An ``nn.Sequential`` (or subclass) that runs its children one after the other; a
    subclass with its own ``forward`` may wire them otherwise and is left alone."""
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every eval-mode ``BatchNorm2d`` that directly follows a convolution inside an
    ``nn.Sequential`` (or follows a ``Sequential`` that ends in one, as separable convolutions
    do) into that convolution, in place (Sequential subclasses with a ``forward`` of their own
    are left alone); the batch norm becomes ``nn.Identity``. Returns the
    number folded. Refuses a module in training mode (its batch norms use batch statistics)."""
    if module.training:
        raise ValueError("fold_batchnorm needs a module in eval mode (call .eval() first)")
    folded = 0
    for seq in [m for m in module.modules() if _is_plain_sequential(m)]:
        for i in range(1, len(seq)):
            bn, prev = seq[i], seq[i - 1]
            if not isinstance(bn, nn.BatchNorm2d) or not bn.track_running_stats:
                continue
            if isinstance(prev, nn.Conv2d):
                seq[i - 1] = fuse_conv_bn_eval(prev, bn)
            elif _is_plain_sequential(prev) and len(prev) and isinstance(prev[-1], nn.Conv2d):
                prev[-1] = fuse_conv_bn_eval(prev[-1], bn)
            else:
                continue
            seq[i] = nn.Identity()
            folded += 1
    return folded


def has_spatial_conv(module: nn.Module) -> bool:
    """Whether ``module`` holds a convolution wider than 1x1 (what channels-last speeds up)."""
    return any(isinstance(m, nn.Conv2d) and max(m.kernel_size) > 1 for m in module.modules())


def prepare_cpu_runner(runner: nn.Module) -> nn.Module:
    """A copy of an eval-mode convolutional ``runner`` with batch norms folded, in
    channels-last layout and marked ``channels_last`` (so that the engine feeds it NHWC);
    ``runner`` itself when it has no spatial convolution (the fused per-pixel net works in its
    own layout) or cannot be copied."""
    if runner.training or not has_spatial_conv(runner):
        return runner
    try:
        fast = copy.deepcopy(runner)
    except (TypeError, RuntimeError, copy.Error):
        return runner
    with torch.no_grad():
        fold_batchnorm(fast)
    fast.to(memory_format=torch.channels_last)
    fast.channels_last = True
    return fast
