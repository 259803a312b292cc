"""SEnSeI pre-training (the v1 "autoencoder"): heads, synthetic batches and the loss.

SEnSeI is pre-trained without any imagery: random bands on 1x1 images are encoded to a 64-d
feature vector, and two heads must recover what went in from that vector alone:

* the discriminator sees ``2N`` candidate descriptors (the N real bands and N random fakes) and
  predicts 1 for the real ones and 0 for the fakes (sigmoid output, MSE loss);
* the estimator sees the N real descriptors and predicts each band's value (linear, MSE loss).

Loss = 0.5 * candidate MSE + 1.0 * band-value MSE. The validation bank and batch sizes follow
the original v1 so that losses are comparable with its reported ~0.18.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xsensei.nn.sensei import DESCRIPTOR_DIM, DenseBlock, SEnSeI

__all__ = [
    "VALUE_SCALE",
    "PretrainBatch",
    "PretrainHeads",
    "PretrainHeadsConfig",
    "ScoreHead",
    "batch_recovery_loss",
    "pretraining_loss",
    "pretraining_loss_components",
    "recovery_loss",
    "sample_descriptors",
    "sample_pretraining_batch",
    "sample_validation_batch",
    "validation_descriptor_bank",
]

#: Synthetic band values are ``VALUE_SCALE * U[0, 1)`` (covers bright cloud reflectances).
VALUE_SCALE = 1.7
#: Weights of the two terms of the pre-training loss.
CANDIDATE_LOSS_WEIGHT = 0.5
VALUE_LOSS_WEIGHT = 1.0


@dataclass(frozen=True)
class PretrainHeadsConfig:
    """Sizes of the two pre-training heads; defaults are v1's (62,010 parameters)."""

    feature_channels: int = 64
    candidate_widths: tuple[int, ...] = (8, 12, 16, 24, 32)
    candidate_skips: bool = True
    real_widths: tuple[int, ...] = (8, 12, 16, 24)
    real_skips: bool = False
    embedding_dim: int = 64
    predictor_widths: tuple[int, ...] = (128, 64, 32)
    predictor_out: int = 16
    groups: int = 2
    eps: float = 1e-3
    negative_slope: float = 0.01

    def __post_init__(self) -> None:
        for name in ("candidate_widths", "real_widths", "predictor_widths"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PretrainHeadsConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


class ScoreHead(nn.Module):
    """Dense block on ``[features, descriptor embedding]`` then a Linear to one score."""

    def __init__(self, in_features: int, widths: Sequence[int], hidden_out: int, **kw: Any):
        super().__init__()
        self.stack = DenseBlock(in_features, widths, hidden_out, skips=False, **kw)
        self.out = nn.Linear(hidden_out, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.out(self.stack(x, mask)).squeeze(-1)


class PretrainHeads(nn.Module):
    """Discriminator and estimator heads on top of a SEnSeI feature vector.

    The feature vector is tiled to every descriptor and concatenated as
    ``[features, descriptor embedding]``. GroupNorm statistics span all candidates (or all real
    bands) of a sample, exactly like inside SEnSeI, so masks are accepted for padding.
    """

    def __init__(self, config: PretrainHeadsConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or PretrainHeadsConfig()
        kw = {"groups": c.groups, "eps": c.eps, "negative_slope": c.negative_slope}
        self.candidate_embedding = DenseBlock(
            DESCRIPTOR_DIM, c.candidate_widths, c.embedding_dim, skips=c.candidate_skips, **kw
        )
        self.real_embedding = DenseBlock(
            DESCRIPTOR_DIM, c.real_widths, c.embedding_dim, skips=c.real_skips, **kw
        )
        joint = c.feature_channels + c.embedding_dim
        self.discriminator = ScoreHead(joint, c.predictor_widths, c.predictor_out, **kw)
        self.estimator = ScoreHead(joint, c.predictor_widths, c.predictor_out, **kw)

    @staticmethod
    def _join(features: Tensor, embedding: Tensor) -> Tensor:
        tiled = features[:, None, :].expand(-1, embedding.shape[1], -1)
        return torch.cat([tiled, embedding], dim=-1)

    def forward(
        self,
        features: Tensor,
        candidates: Tensor,
        real_descriptors: Tensor,
        candidate_mask: Tensor | None = None,
        real_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(B, 64)`` features, ``(B, 2N, 3)`` candidates, ``(B, N, 3)`` real descriptors ->
        (candidate probabilities ``(B, 2N)``, band-value estimates ``(B, N)``).

        ``features`` may also be SEnSeI's ``(B, 64, 1, 1)`` output on 1x1 images.
        """
        if features.ndim == 4 and features.shape[-2:] == (1, 1):
            features = features.flatten(1)
        if features.ndim != 2:
            raise ValueError(f"features must be (B, C) or (B, C, 1, 1), got {features.shape}")
        cand = self.candidate_embedding(candidates, candidate_mask)
        real = self.real_embedding(real_descriptors, real_mask)
        probs = torch.sigmoid(self.discriminator(self._join(features, cand), candidate_mask))
        values = self.estimator(self._join(features, real), real_mask)
        return probs, values


def pretraining_loss_components(
    candidate_probs: Tensor, candidate_labels: Tensor, value_estimates: Tensor, values: Tensor
) -> tuple[Tensor, Tensor]:
    """(candidate MSE, band-value MSE), each a mean over all entries."""
    return (
        F.mse_loss(candidate_probs, candidate_labels.to(candidate_probs.dtype)),
        F.mse_loss(value_estimates, values.to(value_estimates.dtype)),
    )


def pretraining_loss(
    candidate_probs: Tensor, candidate_labels: Tensor, value_estimates: Tensor, values: Tensor
) -> Tensor:
    """v1 pre-training / validation loss: ``0.5 * candidate MSE + 1.0 * band-value MSE``.

    The original's reported ``val_loss`` also included ~0.0165 of L1 weight penalty; this is
    the data term only.
    """
    cand, val = pretraining_loss_components(
        candidate_probs, candidate_labels, value_estimates, values
    )
    return CANDIDATE_LOSS_WEIGHT * cand + VALUE_LOSS_WEIGHT * val


class PretrainBatch(NamedTuple):
    """One synthetic pre-training batch (all tensors on the same device).

    ``candidates`` holds the N real descriptors first, then N fakes; ``labels`` matches it.
    """

    values: Tensor  # (B, N, 1, 1) band values of 1x1 images
    descriptors: Tensor  # (B, N, 3) encoded descriptors of the real bands
    candidates: Tensor  # (B, 2N, 3) real then fake descriptors
    labels: Tensor  # (B, 2N) 1.0 real, 0.0 fake

    @property
    def target_values(self) -> Tensor:
        """``(B, N)`` values the estimator must recover."""
        return self.values.flatten(1)


def sample_descriptors(
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Random encoded descriptors ``(*shape, 3)`` as in v1 pre-training.

    ``left ~ U[0, 2.5)``, ``mid = left + 0.02 + 0.05|N(0,1)|``,
    ``right = mid + 0.02 + 0.05|N(0,1)|``: bands 400 nm - ~32 um, mostly narrow.
    """
    shape = tuple(shape)
    left = 2.5 * torch.rand(shape, generator=generator, device=device)
    gaps = 0.02 + 0.05 * torch.randn((*shape, 2), generator=generator, device=device).abs()
    mid = left + gaps[..., 0]
    return torch.stack([left, mid, mid + gaps[..., 1]], dim=-1)


def _batch(values: Tensor, real: Tensor, fake: Tensor) -> PretrainBatch:
    n_real, n_fake = real.shape[1], fake.shape[1]
    labels = torch.cat(
        [
            torch.ones(real.shape[0], n_real, device=real.device),
            torch.zeros(real.shape[0], n_fake, device=real.device),
        ],
        dim=1,
    )
    return PretrainBatch(values, real, torch.cat([real, fake], dim=1), labels)


def sample_pretraining_batch(
    batch: int,
    n_bands: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> PretrainBatch:
    """A training batch: ``n_bands`` random real bands + as many random fakes per sample,
    values ``1.7 * U[0, 1)`` on 1x1 images (v1 drew ``n_bands`` in 3..13 per batch)."""
    if batch < 1 or n_bands < 1:
        raise ValueError(f"batch and n_bands must be >= 1, got {batch}, {n_bands}")
    values = VALUE_SCALE * torch.rand((batch, n_bands, 1, 1), generator=generator, device=device)
    real = sample_descriptors((batch, n_bands), generator, device)
    fake = sample_descriptors((batch, n_bands), generator, device)
    return _batch(values, real, fake)


def validation_descriptor_bank(device: torch.device | str | None = None) -> Tensor:
    """v1's fixed validation bank ``(80, 3)``: 40 centres, narrow (+-0.02) then wide (+-0.15).

    Centres are ``arange(0.15, 2.5, 0.06)`` in encoded space.
    """
    centres = torch.arange(40, dtype=torch.float64) * 0.06 + 0.15
    rows = [torch.stack([centres - h, centres, centres + h], dim=-1) for h in (0.02, 0.15)]
    return torch.cat(rows).to(device=device, dtype=torch.float32)


def sample_validation_batch(
    batch: int,
    generator: torch.Generator | None = None,
    n_real: int = 13,
    n_fake: int = 13,
    device: torch.device | str | None = None,
) -> PretrainBatch:
    """A validation batch from the fixed bank: each sample draws ``n_real + n_fake`` distinct
    rows, the first ``n_real`` being the real bands (values ``1.7 * U[0, 1)``)."""
    bank = validation_descriptor_bank(device)
    if n_real + n_fake > bank.shape[0]:
        raise ValueError(f"cannot draw {n_real + n_fake} distinct rows from {bank.shape[0]}")
    order = torch.rand((batch, bank.shape[0]), generator=generator, device=device).argsort(dim=1)
    rows = bank[order[:, : n_real + n_fake]]
    values = VALUE_SCALE * torch.rand((batch, n_real, 1, 1), generator=generator, device=device)
    return _batch(values, rows[:, :n_real], rows[:, n_real:])


@torch.no_grad()
def recovery_loss(
    sensei: SEnSeI,
    heads: PretrainHeads,
    samples: int = 4096,
    seed: int = 0,
    chunk: int = 1024,
) -> dict[str, float]:
    """Validation loss of a SEnSeI + heads pair on the v1 bank (deterministic given ``seed``).

    Returns ``{"loss", "candidate_mse", "value_mse"}``; the loaded v1 weights give ~0.18.
    """
    device = next(sensei.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    batch = sample_validation_batch(samples, generator, device=device)
    return batch_recovery_loss(sensei, heads, batch, chunk)


@torch.no_grad()
def batch_recovery_loss(
    sensei: SEnSeI, heads: PretrainHeads, batch: PretrainBatch, chunk: int = 1024
) -> dict[str, float]:
    """:func:`recovery_loss` on a given validation batch, ``chunk`` samples at a time."""
    samples = batch.values.shape[0]
    cand_sum = val_sum = 0.0
    for start in range(0, samples, chunk):
        sl = slice(start, start + chunk)
        features = sensei(batch.values[sl], batch.descriptors[sl])
        probs, values = heads(features, batch.candidates[sl], batch.descriptors[sl])
        cand, val = pretraining_loss_components(
            probs, batch.labels[sl], values, batch.target_values[sl]
        )
        weight = probs.shape[0] / samples
        cand_sum += float(cand) * weight
        val_sum += float(val) * weight
    return {
        "loss": CANDIDATE_LOSS_WEIGHT * cand_sum + VALUE_LOSS_WEIGHT * val_sum,
        "candidate_mse": cand_sum,
        "value_mse": val_sum,
    }
