"""SEnSeI + a segmenter = a cloud-mask model that accepts any set of bands."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from xsensei.nn.segmenters import PixelNet, build_segmenter
from xsensei.nn.sensei import SEnSeI, SEnSeIConfig

#: Class sets the library knows how to turn into flag values (see ``CLASS_FLAG_VALUES``).
CLASSES_4 = ("clear", "thick_cloud", "thin_cloud", "cloud_shadow")
CLASSES_3 = ("clear", "cloud", "cloud_shadow")
CLASSES_2 = ("clear", "cloud")
DEFAULT_CLASSES = CLASSES_4

#: Mask value written for each class name; 255 is reserved for nodata.
CLASS_FLAG_VALUES = {"clear": 0, "thick_cloud": 1, "cloud": 1, "thin_cloud": 2, "cloud_shadow": 3}
#: Class names that count as cloud in the paper's cloud-vs-rest metrics.
CLOUD_CLASSES = frozenset({"thick_cloud", "thin_cloud", "cloud"})


def check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    """Validate a class list: unique known names, ``clear`` first (mask value 0)."""
    classes = tuple(classes)
    unknown = [c for c in classes if c not in CLASS_FLAG_VALUES]
    if unknown:
        raise ValueError(f"unknown class names {unknown}; known: {sorted(CLASS_FLAG_VALUES)}")
    if len(set(classes)) != len(classes) or len(classes) < 2:
        raise ValueError(f"classes must be >= 2 unique names, got {classes}")
    if classes[0] != "clear":
        raise ValueError(f"the first class must be 'clear', got {classes}")
    return classes


class CloudMaskModel(nn.Module):
    """SEnSeI encoder followed by any segmenter taking ``sensei.out_channels`` channels.

    ``segmenter`` is a registered name (``"deeplabv3plus"``, ``"deeplabv3plus_refined"``,
    ``"pixelnet"``) or any module
    mapping ``(B, 64, H, W)`` to ``(B, len(classes), H, W)``; only named segmenters can be
    rebuilt from a checkpoint's config.
    """

    def __init__(
        self,
        segmenter: str | nn.Module = "deeplabv3plus",
        classes: Sequence[str] = DEFAULT_CLASSES,
        sensei: SEnSeI | None = None,
        segmenter_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.classes = check_classes(classes)
        self.sensei = sensei if sensei is not None else SEnSeI()
        self.segmenter_kwargs = dict(segmenter_kwargs or {})
        if isinstance(segmenter, str):
            self.segmenter_name: str | None = segmenter
            self.segmenter = build_segmenter(
                segmenter, self.sensei.out_channels, len(self.classes), **self.segmenter_kwargs
            )
        else:
            self.segmenter_name = None
            self.segmenter = segmenter

    def forward(
        self, values: torch.Tensor, descriptors: torch.Tensor, band_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits ``(B, classes, H, W)`` from values ``(B, N, H, W)``, descriptors ``(B, N, 3)``."""
        return self.segmenter(self.sensei(values, descriptors, band_mask))

    def for_bands(self, descriptors: torch.Tensor) -> nn.Module:
        """A model specialised to one band set: SEnSeI folded into a 1x1 convolution.

        The descriptor network runs once here instead of once per batch, which is what makes
        SEnSeI nearly free at inference time. Input ``(B, N, H, W)`` -> logits.
        """
        if descriptors.ndim != 2 or descriptors.shape[-1] != 3:
            raise ValueError(f"descriptors must be (N, 3), got {tuple(descriptors.shape)}")
        with torch.no_grad():
            conv = self.sensei.to_conv1x1(descriptors)
        seg = self.segmenter
        # PixelNet (not a subclass with its own forward): SEnSeI, batch norm and first conv
        # merge into one matrix, run as a PixelMLP (eval mode)
        if isinstance(seg, PixelNet) and type(seg).forward is PixelNet.forward:
            return seg.fused_with(conv)
        return nn.Sequential(conv, self.segmenter).eval()

    def config(self) -> dict[str, Any]:
        """Architecture description stored in checkpoints (JSON-serialisable)."""
        if self.segmenter_name is None:
            raise ValueError(
                "this model uses a custom segmenter module that cannot be rebuilt from a "
                "config; save its state_dict yourself or register the segmenter by name"
            )
        return {
            "sensei": self.sensei.config.to_dict(),
            "segmenter": {"name": self.segmenter_name, "kwargs": self.segmenter_kwargs},
            "classes": list(self.classes),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CloudMaskModel:
        """Rebuild an untrained model from :meth:`config` output."""
        seg = config["segmenter"]
        return cls(
            segmenter=seg["name"],
            classes=config["classes"],
            sensei=SEnSeI(SEnSeIConfig.from_dict(config["sensei"])),
            segmenter_kwargs=seg.get("kwargs") or {},
        )
