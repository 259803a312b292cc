"""SEnSeI v1: the spectral encoder that maps any set of bands to a fixed 64-channel image.

Architecture (Francis et al., SEnSeI v1; sizes in :class:`SEnSeIConfig`):

1. descriptor block: each band's encoded [min, centre, max] wavelength -> 64-d vector;
2. permutation block: every ordered pair ``[band j, band i]`` (self-pairs included) -> 64-d,
   mean over partners ``i``, concatenated with the block input -> 128-d per band;
3. combined descriptor block: 128-d -> 64-d vector ``d_n`` per band;
4. band multiplication: ``mean_n((x_n + 0.5) * d_n)`` -> ``(B, 64, H, W)``.

Every hidden layer is Linear -> LeakyReLU -> GroupNorm, and the GroupNorm statistics span all
bands of a sample (all N x N pairs in the permutation block). That coupling is what lets a band's
vector depend on the others, but it also means padded bands would leak into the statistics, so
every reduction here accepts a ``band_mask`` and ignores padded positions exactly.

Steps 1-3 only see descriptors, so the per-pixel cost is a single 1x1 convolution
(:meth:`SEnSeI.to_conv1x1`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xsensei.errors import CheckpointError

__all__ = [
    "DESCRIPTOR_DIM",
    "DenseBlock",
    "DenseLayer",
    "MaskedGroupNorm",
    "PermutationBlock",
    "SEnSeI",
    "SEnSeIConfig",
    "masked_mean",
]

#: Width of one band descriptor: encoded [min, centre, max] wavelength.
DESCRIPTOR_DIM = 3


def masked_mean(x: Tensor, mask: Tensor | None, dim: int) -> Tensor:
    """Mean of ``x`` over ``dim`` counting only positions where ``mask`` is True.

    ``mask`` has the shape of ``x`` without its trailing feature axis. Masked positions may
    hold any finite value. An all-masked slice gives 0 instead of NaN.
    """
    if mask is None:
        return x.mean(dim=dim)
    w = mask.to(x.dtype).unsqueeze(-1)
    total = (x * w).sum(dim=dim)
    count = w.sum(dim=dim).clamp_min(1.0)
    return total / count


class MaskedGroupNorm(nn.Module):
    """GroupNorm over a channels-last ``(B, *set_dims, C)`` tensor, statistics per sample
    and group over all set positions, optionally restricted to positions where ``mask``
    is True.

    Equivalent to ``nn.GroupNorm(groups, C, eps)`` applied to the channels-first tensor when
    no mask is given; with a mask, padded positions do not affect the statistics (they are
    still normalised, with the real positions' statistics, and must be ignored downstream).
    """

    def __init__(self, groups: int, channels: int, eps: float = 1e-3) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"channels ({channels}) must be divisible by groups ({groups})")
        self.groups = groups
        self.channels = channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        batch = x.shape[0]
        xg = x.reshape(batch, -1, self.groups, self.channels // self.groups)
        if mask is None:
            var, mean = torch.var_mean(xg, dim=(1, 3), correction=0, keepdim=True)
        else:
            w = mask.reshape(batch, -1, 1, 1).to(x.dtype)
            count = (w.sum(dim=1, keepdim=True) * xg.shape[-1]).clamp_min(1.0)
            mean = (xg * w).sum(dim=(1, 3), keepdim=True) / count
            var = ((xg - mean).square() * w).sum(dim=(1, 3), keepdim=True) / count
        # Fold normalisation and affine into one scale/shift: a single pass over the big
        # (B, N, N, C) pair tensor instead of four.
        scale = torch.rsqrt(var + self.eps) * self.weight.view(1, 1, self.groups, -1)
        shift = self.bias.view(1, 1, self.groups, -1) - mean * scale
        return torch.addcmul(shift, xg, scale).reshape(x.shape)

    def extra_repr(self) -> str:
        return f"{self.groups}, {self.channels}, eps={self.eps}"


class DenseLayer(nn.Module):
    """Linear -> LeakyReLU -> GroupNorm (set-wide statistics), plus a skip-add if enabled."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        skip: bool,
        groups: int,
        eps: float,
        negative_slope: float,
    ) -> None:
        super().__init__()
        if skip and in_features != out_features:
            raise ValueError("a skip-add needs equal input and output widths")
        self.linear = nn.Linear(in_features, out_features)
        self.norm = MaskedGroupNorm(groups, out_features, eps)
        self.skip = skip
        self.negative_slope = negative_slope

    def post_linear(self, h: Tensor, mask: Tensor | None, residual: Tensor | None) -> Tensor:
        """Activation, norm and skip for an already computed ``linear(x)``."""
        h = self.norm(F.leaky_relu(h, self.negative_slope), mask)
        if self.skip:
            if residual is None:
                raise ValueError("this layer has a skip-add and needs its input as residual")
            h = h + residual
        return h

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.post_linear(self.linear(x), mask, x)


class DenseBlock(nn.Module):
    """A stack of :class:`DenseLayer` then a plain Linear to ``out_features``.

    ``skips=True`` adds the layer input to its output wherever the widths match (this is how
    the original configured it, so the skip positions follow from the widths).
    """

    def __init__(
        self,
        in_features: int,
        widths: Sequence[int],
        out_features: int,
        *,
        skips: bool,
        groups: int = 2,
        eps: float = 1e-3,
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        layers = []
        prev = in_features
        for width in widths:
            layers.append(
                DenseLayer(
                    prev,
                    width,
                    skip=skips and prev == width,
                    groups=groups,
                    eps=eps,
                    negative_slope=negative_slope,
                )
            )
            prev = width
        self.layers = nn.ModuleList(layers)
        self.final = nn.Linear(prev, out_features)
        self.in_features = in_features
        self.out_features = out_features

    def hidden(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """All dense layers, without the final Linear."""
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.final(self.hidden(x, mask))


class PermutationBlock(nn.Module):
    """Pairwise block: ``out_j = mean_i f([x_j, x_i])``, returned as ``[out_j, x_j]``.

    The first Linear acts on the concatenated pair, so it splits into ``W_a x_j + W_b x_i``:
    computing the two halves per band and broadcasting saves a factor N on that layer and never
    materialises the ``(B, N, N, 2C)`` pair tensor.
    """

    def __init__(
        self,
        in_features: int,
        widths: Sequence[int],
        out_features: int,
        *,
        skips: bool,
        groups: int,
        eps: float,
        negative_slope: float,
    ) -> None:
        super().__init__()
        if not widths:
            raise ValueError("the permutation block needs at least one hidden layer")
        self.stack = DenseBlock(
            2 * in_features,
            widths,
            out_features,
            skips=skips,
            groups=groups,
            eps=eps,
            negative_slope=negative_slope,
        )
        self.in_features = in_features
        self.out_features = out_features + in_features

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        n = x.shape[1]
        first = self.stack.layers[0]
        weight = first.linear.weight
        own = F.linear(x, weight[:, : self.in_features], first.linear.bias)  # band j
        partner = F.linear(x, weight[:, self.in_features :])  # band i
        h = own.unsqueeze(2) + partner.unsqueeze(1)  # (B, j, i, H)
        pair_mask = None if mask is None else mask.unsqueeze(2) & mask.unsqueeze(1)
        residual = None
        if first.skip:
            residual = torch.cat(
                [x.unsqueeze(2).expand(-1, -1, n, -1), x.unsqueeze(1).expand(-1, n, -1, -1)], -1
            )
        h = first.post_linear(h, pair_mask, residual)
        for layer in self.stack.layers[1:]:
            h = layer(h, pair_mask)
        h = self.stack.final(h)
        partner_mask = None if mask is None else mask.unsqueeze(1).expand(-1, n, -1)
        pooled = masked_mean(h, partner_mask, dim=2)
        return torch.cat([pooled, x], dim=-1)


def _canonical_band_order(descriptors: Tensor, band_mask: Tensor | None) -> Tensor:
    """``(B, N)`` indices sorting each sample's bands by (centre, min, max); padding last."""
    keys = descriptors.detach()
    if band_mask is not None:
        keys = keys.masked_fill(~band_mask.unsqueeze(-1), float("inf"))
    order = torch.arange(keys.shape[1], device=keys.device).expand(keys.shape[0], -1)
    for column in (2, 0, 1):  # successive stable sorts: least significant key first
        key = keys[..., column].gather(1, order)
        order = order.gather(1, torch.argsort(key, dim=1, stable=True))
    return order


def _int_tuple(value: Any, name: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value)
    except TypeError as err:
        raise ValueError(f"{name} must be a sequence of ints, got {value!r}") from err
    if any(v <= 0 for v in out):
        raise ValueError(f"{name} must be positive, got {out}")
    return out


@dataclass(frozen=True)
class SEnSeIConfig:
    """Architecture of :class:`SEnSeI`; the defaults are the paper's v1 (210,544 parameters).

    Widths are the hidden layers (Linear -> LeakyReLU -> GroupNorm); each block ends with a
    plain Linear to its ``*_out`` width. ``*_skips`` enables skip-adds where widths match.
    """

    descriptor_widths: tuple[int, ...] = (16, 16, 32, 16, 16, 64, 128, 64)
    descriptor_out: int = 64
    descriptor_skips: bool = True
    permutation_widths: tuple[int, ...] = (128, 128, 128, 64)
    permutation_out: int = 64
    permutation_skips: bool = False
    combined_widths: tuple[int, ...] = (128, 256, 128, 96, 64, 128, 64)
    combined_skips: bool = True
    out_channels: int = 64
    groups: int = 2
    eps: float = 1e-3
    negative_slope: float = 0.01

    def __post_init__(self) -> None:
        for name in ("descriptor_widths", "permutation_widths", "combined_widths"):
            object.__setattr__(self, name, _int_tuple(getattr(self, name), name))
        if not self.permutation_widths:
            raise ValueError("permutation_widths must not be empty")
        for name in ("descriptor_out", "permutation_out", "out_channels", "groups"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        widths = self.descriptor_widths + self.permutation_widths + self.combined_widths
        bad = [w for w in widths if w % self.groups]
        if bad:
            raise ValueError(f"hidden widths {bad} are not divisible by groups={self.groups}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (tuples become lists) for checkpoint metadata."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SEnSeIConfig:
        """Inverse of :meth:`to_dict`; unknown keys mean an incompatible checkpoint."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"unknown SEnSeI config keys {unknown}; known: {sorted(known)}")
        return cls(**dict(data))


class SEnSeI(nn.Module):
    """Permutation-invariant spectral encoder: ``(B, N, H, W)`` bands -> ``(B, 64, H, W)``.

    Any N >= 1 works, in any order. Batches whose samples have different band counts are padded
    to a common N and passed with ``band_mask`` (True = real band); padded bands then have no
    effect at all on the real ones.
    """

    def __init__(self, config: SEnSeIConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or SEnSeIConfig()
        norm_kw = {"groups": config.groups, "eps": config.eps}
        kw = {**norm_kw, "negative_slope": config.negative_slope}
        self.descriptor_block = DenseBlock(
            DESCRIPTOR_DIM,
            config.descriptor_widths,
            config.descriptor_out,
            skips=config.descriptor_skips,
            **kw,
        )
        self.permutation_block = PermutationBlock(
            config.descriptor_out,
            config.permutation_widths,
            config.permutation_out,
            skips=config.permutation_skips,
            **kw,
        )
        self.combined_block = DenseBlock(
            self.permutation_block.out_features,
            config.combined_widths,
            config.out_channels,
            skips=config.combined_skips,
            **kw,
        )
        self.out_channels = config.out_channels

    @staticmethod
    def _check_descriptors(descriptors: Tensor, band_mask: Tensor | None) -> None:
        if descriptors.ndim != 3 or descriptors.shape[-1] != DESCRIPTOR_DIM:
            raise ValueError(f"descriptors must be (B, N, 3), got {tuple(descriptors.shape)}")
        if descriptors.shape[1] < 1:
            raise ValueError("SEnSeI needs at least one band")
        if band_mask is not None:
            if band_mask.shape != descriptors.shape[:2]:
                raise ValueError(
                    f"band_mask must be (B, N) = {tuple(descriptors.shape[:2])}, "
                    f"got {tuple(band_mask.shape)}"
                )
            if band_mask.dtype != torch.bool:
                raise ValueError(f"band_mask must be a bool tensor, got {band_mask.dtype}")

    def band_embeddings(self, descriptors: Tensor, band_mask: Tensor | None = None) -> Tensor:
        """Combined descriptor vectors ``d_n``: ``(B, N, 3)`` encoded -> ``(B, N, 64)``.

        Depends on the whole band set (through GroupNorm and the pairwise block), so a band's
        vector changes when other bands are added or removed; padded bands are ignored.

        Bands are processed in a canonical order (sorted by centre, then min, then max
        wavelength) and the result is returned in the caller's order. The network is
        permutation-equivariant anyway; the sort only removes float32 rounding differences
        (up to ~1e-5 after ~20 normalised layers), so band order cannot change a cloud mask at all.
        """
        self._check_descriptors(descriptors, band_mask)
        if band_mask is not None:
            # Padding may hold anything (even NaN); zeros keep every masked sum finite.
            descriptors = descriptors.masked_fill(~band_mask.unsqueeze(-1), 0.0)
        order = _canonical_band_order(descriptors, band_mask)
        sorted_desc = descriptors.gather(1, order.unsqueeze(-1).expand(-1, -1, DESCRIPTOR_DIM))
        sorted_mask = None if band_mask is None else band_mask.gather(1, order)
        emb = self._embed(sorted_desc, sorted_mask)
        inverse = torch.argsort(order, dim=1)
        return emb.gather(1, inverse.unsqueeze(-1).expand(-1, -1, emb.shape[-1]))

    def _embed(self, descriptors: Tensor, band_mask: Tensor | None) -> Tensor:
        """The three descriptor blocks, in the given band order."""
        x = self.descriptor_block(descriptors, band_mask)
        x = self.permutation_block(x, band_mask)
        return self.combined_block(x, band_mask)

    def _multiplication_weights(
        self, descriptors: Tensor, band_mask: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Per-band weights ``d_n / N`` and bias ``0.5 * mean_n d_n`` of the band product."""
        d = self.band_embeddings(descriptors, band_mask)
        if band_mask is None:
            weight = d / d.shape[1]
        else:
            m = band_mask.to(d.dtype).unsqueeze(-1)
            weight = d * m / m.sum(dim=1, keepdim=True).clamp_min(1.0)
        return weight, 0.5 * weight.sum(dim=1)

    def forward(
        self, values: Tensor, descriptors: Tensor, band_mask: Tensor | None = None
    ) -> Tensor:
        """``mean_n((x_n + 0.5) * d_n)`` over real bands: ``(B, N, H, W)`` -> ``(B, 64, H, W)``.

        Computed as a per-sample 1x1 convolution so the ``+ 0.5`` never copies the image.
        """
        self._check_descriptors(descriptors, band_mask)
        if values.ndim != 4 or values.shape[:2] != descriptors.shape[:2]:
            raise ValueError(
                f"values must be (B, N, H, W) with (B, N) = {tuple(descriptors.shape[:2])}, "
                f"got {tuple(values.shape)}"
            )
        weight, bias = self._multiplication_weights(descriptors, band_mask)
        if band_mask is not None:
            # Padded bands already get zero weight; zeroing them also neutralises NaN fill.
            values = values.masked_fill(~band_mask[:, :, None, None], 0.0)
        out = torch.einsum("bnhw,bnc->bchw", values, weight.to(values.dtype))
        return out + bias.to(out.dtype)[:, :, None, None]

    def to_conv1x1(self, descriptors: Tensor) -> nn.Conv2d:
        """Fold SEnSeI for ONE band set ``(N, 3)`` into an equivalent ``Conv2d(N, 64, 1)``.

        ``conv(values) == forward(values[None], descriptors[None])``; the descriptor network
        runs once here, so inference costs one 1x1 convolution per pixel. The returned layer
        holds detached copies (it does not train SEnSeI).
        """
        if descriptors.ndim != 2 or descriptors.shape[-1] != DESCRIPTOR_DIM:
            raise ValueError(f"descriptors must be (N, 3), got {tuple(descriptors.shape)}")
        with torch.no_grad():
            weight, bias = self._multiplication_weights(descriptors[None], None)
        n = descriptors.shape[0]
        conv = nn.Conv2d(n, self.out_channels, kernel_size=1).to(
            device=weight.device, dtype=weight.dtype
        )
        with torch.no_grad():
            conv.weight.copy_(weight[0].T.reshape(self.out_channels, n, 1, 1))
            conv.bias.copy_(bias[0])
        return conv
