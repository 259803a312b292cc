"""SEnSeI module: sizes, invariances, padding, the 1x1 fast path and pre-training helpers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xsensei.descriptors import encode_wavelengths
from xsensei.errors import CheckpointError
from xsensei.nn import PretrainHeads, SEnSeI, SEnSeIConfig
from xsensei.nn.heads import (
    pretraining_loss,
    pretraining_loss_components,
    sample_pretraining_batch,
    sample_validation_batch,
    validation_descriptor_bank,
)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def random_descriptors(rng: np.random.Generator, n: int) -> torch.Tensor:
    """Encoded descriptors of ``n`` valid random bands (301 nm .. 15 um)."""
    nm = np.sort(rng.uniform(301.0, 15000.0, size=(n, 3)), axis=-1)
    return torch.from_numpy(encode_wavelengths(nm))


@pytest.fixture(scope="module")
def model() -> SEnSeI:
    torch.manual_seed(1234)
    return SEnSeI().eval()


def test_parameter_counts(model: SEnSeI) -> None:
    assert n_params(model.descriptor_block) == 24_208
    assert n_params(model.permutation_block) == 62_848
    assert n_params(model.combined_block) == 123_488
    assert n_params(model) == 210_544
    assert model.out_channels == 64


def test_heads_parameter_count() -> None:
    assert n_params(PretrainHeads()) == 62_010


def test_config_round_trip() -> None:
    config = SEnSeIConfig()
    restored = SEnSeIConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert isinstance(restored.descriptor_widths, tuple)
    with pytest.raises(CheckpointError, match="unknown SEnSeI config keys"):
        SEnSeIConfig.from_dict({**config.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="divisible by groups"):
        SEnSeIConfig(descriptor_widths=(15,))
    small = SEnSeI(SEnSeIConfig(descriptor_widths=(8,), combined_widths=(16,), out_channels=8))
    assert small(
        torch.rand(2, 3, 4, 4), random_descriptors(np.random.default_rng(0), 3).expand(2, 3, 3)
    ).shape == (2, 8, 4, 4)


def test_output_shape_and_band_embeddings(model: SEnSeI) -> None:
    d = random_descriptors(np.random.default_rng(0), 5)[None].repeat(3, 1, 1)
    out = model(torch.rand(3, 5, 6, 7), d)
    assert out.shape == (3, 64, 6, 7)
    assert model.band_embeddings(d).shape == (3, 5, 64)


def test_band_multiplication_definition(model: SEnSeI) -> None:
    """forward == mean_n((x_n + 0.5) * d_n), the paper's band multiplication."""
    gen = torch.Generator().manual_seed(3)
    d = random_descriptors(np.random.default_rng(3), 6)[None]
    x = torch.rand(1, 6, 4, 5, generator=gen)
    emb = model.band_embeddings(d)  # (1, N, 64)
    expected = ((x[:, :, None] + 0.5) * emb[:, :, :, None, None]).mean(dim=1)
    torch.testing.assert_close(model(x, d), expected, atol=1e-5, rtol=1e-5)


@settings(max_examples=100, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 20),
    h=st.integers(1, 8),
    w=st.integers(1, 8),
    seed=st.integers(0, 2**31 - 1),
)
def test_permutation_invariance(
    model: SEnSeI, data: st.DataObject, n: int, h: int, w: int, seed: int
) -> None:
    perm = torch.tensor(data.draw(st.permutations(range(n))))
    rng = np.random.default_rng(seed)
    d = random_descriptors(rng, n)[None]
    x = torch.from_numpy(rng.uniform(0.0, 1.7, size=(1, n, h, w)).astype(np.float32))
    with torch.no_grad():
        ref = model(x, d)
        out = model(x[:, perm], d[:, perm])
    assert (out - ref).abs().max().item() < 1e-5


def test_raw_network_is_equivariant_and_masks_anywhere() -> None:
    """The math itself, without the canonical sort, in float64 (rounding out of the way).

    Guards against the sort hiding an order-dependent bug, and checks masked reductions with
    padding interleaved between real bands (the public path always sorts padding last).
    """
    torch.manual_seed(5)
    model = SEnSeI().double().eval()
    rng = np.random.default_rng(5)
    with torch.no_grad():
        for n in (1, 2, 7, 20):
            d = random_descriptors(rng, n).double()[None]
            perm = torch.from_numpy(rng.permutation(n))
            ref = model._embed(d, None)
            torch.testing.assert_close(
                model._embed(d[:, perm], None), ref[:, perm], atol=1e-10, rtol=0
            )
            torch.testing.assert_close(model.band_embeddings(d), ref, atol=1e-10, rtol=0)
            # Interleave 3 padded bands at random positions.
            total = n + 3
            real_pos = torch.from_numpy(np.sort(rng.choice(total, size=n, replace=False)))
            padded = torch.full((1, total, 3), -7.0, dtype=torch.float64)
            padded[0, real_pos] = d[0]
            mask = torch.zeros(1, total, dtype=torch.bool)
            mask[0, real_pos] = True
            out = model._embed(padded, mask)
            torch.testing.assert_close(out[:, real_pos], ref, atol=1e-10, rtol=0)


def test_padding_with_mask_matches_unpadded(model: SEnSeI) -> None:
    rng = np.random.default_rng(7)
    sizes = (4, 7)
    n_max, hw = max(sizes), (5, 3)
    values = torch.full((2, n_max, *hw), float("nan"))
    descriptors = torch.full((2, n_max, 3), float("nan"))
    mask = torch.zeros(2, n_max, dtype=torch.bool)
    alone = []
    with torch.no_grad():
        for i, n in enumerate(sizes):
            d = random_descriptors(rng, n)
            x = torch.from_numpy(rng.uniform(0.0, 1.7, size=(n, *hw)).astype(np.float32))
            values[i, :n], descriptors[i, :n], mask[i, :n] = x, d, True
            alone.append(model(x[None], d[None])[0])
        padded = model(values, descriptors, mask)
        # Garbage (finite) padding instead of NaN gives the same result too.
        values2 = torch.where(mask[:, :, None, None], values, torch.tensor(123.0))
        descriptors2 = torch.where(mask[:, :, None], descriptors, torch.tensor(-5.0))
        padded2 = model(values2, descriptors2, mask)
        embeddings = model.band_embeddings(descriptors2, mask)
    for i in range(len(sizes)):
        torch.testing.assert_close(padded[i], alone[i], atol=1e-5, rtol=0)
        torch.testing.assert_close(padded2[i], alone[i], atol=1e-5, rtol=0)
        assert torch.isfinite(embeddings[i]).all()
    # An all-True mask is the same as no mask.
    full = torch.ones(1, 7, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(
            model(values[1:], descriptors[1:], full),
            model(values[1:], descriptors[1:]),
            atol=1e-5,
            rtol=0,
        )


@pytest.mark.parametrize("n", [1, 2, 3, 8, 13])
def test_conv1x1_fast_path(model: SEnSeI, n: int) -> None:
    rng = np.random.default_rng(n)
    d = random_descriptors(rng, n)
    x = torch.from_numpy(rng.uniform(0.0, 1.7, size=(n, 9, 11)).astype(np.float32))
    conv = model.to_conv1x1(d)
    assert isinstance(conv, torch.nn.Conv2d)
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (n, 64, (1, 1))
    with torch.no_grad():
        ref = model(x[None], d[None])
        fast = conv(x[None])
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(conv(x), ref[0], atol=1e-5, rtol=0)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    model = SEnSeI()
    d = random_descriptors(np.random.default_rng(11), 5)[None].repeat(2, 1, 1)
    out = model(torch.rand(2, 5, 4, 4), d)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_input_validation(model: SEnSeI) -> None:
    d = random_descriptors(np.random.default_rng(0), 3)[None]
    with pytest.raises(ValueError, match=r"descriptors must be \(B, N, 3\)"):
        model(torch.rand(1, 3, 2, 2), d[0])
    with pytest.raises(ValueError, match="values must be"):
        model(torch.rand(1, 4, 2, 2), d)
    with pytest.raises(ValueError, match="bool"):
        model(torch.rand(1, 3, 2, 2), d, torch.ones(1, 3))


def test_pretraining_batch_and_heads() -> None:
    gen = torch.Generator().manual_seed(0)
    batch = sample_pretraining_batch(64, 5, gen)
    assert batch.values.shape == (64, 5, 1, 1)
    assert batch.descriptors.shape == (64, 5, 3)
    assert batch.candidates.shape == (64, 10, 3)
    assert batch.labels.shape == (64, 10)
    assert torch.equal(batch.candidates[:, :5], batch.descriptors)
    assert batch.labels[:, :5].eq(1).all() and batch.labels[:, 5:].eq(0).all()
    assert 0.0 <= batch.values.min() and batch.values.max() < 1.7
    left, mid, right = batch.candidates.unbind(-1)
    assert (left >= 0).all() and (left < 2.5).all()
    assert (mid - left >= 0.02 - 1e-6).all() and (right - mid >= 0.02 - 1e-6).all()

    torch.manual_seed(0)
    sensei, heads = SEnSeI(), PretrainHeads()
    features = sensei(batch.values, batch.descriptors)
    probs, estimates = heads(features, batch.candidates, batch.descriptors)
    assert probs.shape == (64, 10) and estimates.shape == (64, 5)
    assert (probs > 0).all() and (probs < 1).all()
    loss = pretraining_loss(probs, batch.labels, estimates, batch.target_values)
    cand, val = pretraining_loss_components(probs, batch.labels, estimates, batch.target_values)
    torch.testing.assert_close(loss, 0.5 * cand + val)
    loss.backward()
    assert all(p.grad is not None for p in [*sensei.parameters(), *heads.parameters()])


def test_validation_bank() -> None:
    bank = validation_descriptor_bank()
    assert bank.shape == (80, 3)
    torch.testing.assert_close(bank[:40, 1], torch.arange(40) * 0.06 + 0.15)
    torch.testing.assert_close(bank[:40, 2] - bank[:40, 1], torch.full((40,), 0.02))
    torch.testing.assert_close(bank[40:, 1] - bank[40:, 0], torch.full((40,), 0.15))
    batch = sample_validation_batch(32, torch.Generator().manual_seed(0))
    assert batch.candidates.shape == (32, 26, 3) and batch.descriptors.shape == (32, 13, 3)
    # Rows are drawn without replacement.
    for sample in batch.candidates:
        assert torch.unique(sample, dim=0).shape[0] == 26
