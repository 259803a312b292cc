"""Wavelength -> descriptor encoding: values, round trip and error messages."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xsensei.descriptors import (
    decode_descriptors,
    encode_wavelengths,
    encode_wavelengths_torch,
)
from xsensei.errors import DescriptorError

S2_B02_B11 = [[446.0, 494.0, 542.0], [1541.0, 1612.0, 1683.0]]


def test_reference_points() -> None:
    enc = encode_wavelengths([[400.0, 400.0, 10000.0]])
    assert enc.dtype == np.float32
    assert enc.shape == (1, 3)
    assert enc[0, 0] == 0.0
    assert enc[0, 2] == pytest.approx(math.log10(9700.0) - 2.0, abs=1e-6)
    assert enc[0, 2] == pytest.approx(1.98677, abs=1e-5)


def test_shapes_and_round_trip() -> None:
    nm = np.array([S2_B02_B11, S2_B02_B11])  # (2, 2, 3)
    enc = encode_wavelengths(nm)
    assert enc.shape == nm.shape
    np.testing.assert_allclose(decode_descriptors(enc), nm, rtol=1e-5)
    single = encode_wavelengths([446.0, 494.0, 542.0])
    assert single.shape == (3,)


def test_monochromatic_band_allowed() -> None:
    enc = encode_wavelengths([[865.0, 865.0, 865.0]])
    assert np.all(enc == enc[0, 0])


def test_torch_twin_matches_numpy() -> None:
    nm = torch.tensor(S2_B02_B11, dtype=torch.float64, requires_grad=True)
    enc = encode_wavelengths_torch(nm)
    np.testing.assert_allclose(enc.detach().numpy(), encode_wavelengths(S2_B02_B11), atol=1e-6)
    enc.sum().backward()
    assert nm.grad is not None and torch.all(nm.grad > 0)


@pytest.mark.parametrize(
    ("bands", "match"),
    [
        (
            [[446.0, 494.0, 542.0], [250.0, 280.0, 320.0]],
            r"band 1 \[250, 280, 320\] nm .*<= 300 nm",
        ),
        ([[300.0, 400.0, 500.0]], r"band 0 .*<= 300 nm"),
        ([[446.0, float("nan"), 542.0]], r"band 0 \[446, nan, 542\] nm has non-finite"),
        ([[446.0, 494.0, float("inf")]], r"band 0 .*non-finite"),
        ([[446.0, 494.0, 542.0], [500.0, 490.0, 510.0]], r"band 1 .*out of order"),
        ([[446.0, 494.0, 542.0], [480.0, 520.0, 510.0]], r"band 1 .*min <= centre <= max"),
    ],
)
def test_invalid_wavelengths(bands: list[list[float]], match: str) -> None:
    with pytest.raises(DescriptorError, match=match):
        encode_wavelengths(bands)
    with pytest.raises(DescriptorError, match=match):
        encode_wavelengths_torch(torch.tensor(bands))


def test_error_names_nd_index_and_counts_others() -> None:
    nm = np.full((2, 3, 3), 500.0)
    nm[1, 2] = [100.0, 200.0, 300.0]
    nm[0, 1] = [100.0, 200.0, 300.0]
    with pytest.raises(DescriptorError, match=r"band \(0, 1\) .*\(1 more band"):
        encode_wavelengths(nm)


def test_bad_shape_is_descriptor_error() -> None:
    assert issubclass(DescriptorError, ValueError)
    with pytest.raises(DescriptorError, match=r"shape \(\.\.\., 3\)"):
        encode_wavelengths([[400.0, 500.0]])
    with pytest.raises(DescriptorError, match="numeric"):
        encode_wavelengths([["a", "b", "c"]])
