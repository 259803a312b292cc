"""Band descriptors: the [min, centre, max] wavelengths that tell SEnSeI what each band is.

SEnSeI never sees band names, only these three wavelengths per band, encoded as
``log10(nm - 300) - 2`` (400 nm -> 0.0, 10 um -> ~2.0). The encoding is undefined at or below
300 nm, so every entry point validates its input and raises :class:`DescriptorError` naming the
offending band instead of letting NaN or -inf reach the network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from xsensei.errors import DescriptorError

if TYPE_CHECKING:
    import torch

__all__ = [
    "ENCODING_OFFSET_NM",
    "decode_descriptors",
    "encode_wavelengths",
    "encode_wavelengths_torch",
    "validate_wavelengths",
]

#: Wavelength (nm) at which the log encoding diverges; every band edge must lie above it.
ENCODING_OFFSET_NM = 300.0


def _band_label(index: tuple[int, ...]) -> str:
    """Human name of a band position in a ``(..., 3)`` array."""
    if len(index) == 0:
        return "the band"
    if len(index) == 1:
        return f"band {index[0]}"
    return f"band {tuple(int(i) for i in index)}"


def _format_band(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in values) + "] nm"


def validate_wavelengths(wavelengths_nm: ArrayLike) -> np.ndarray:
    """Check ``(..., 3)`` [min, centre, max] wavelengths in nm; return them as float64.

    Raises :class:`DescriptorError` for a wrong shape, non-finite values, wavelengths at or
    below 300 nm, or an out-of-order triple. ``min == centre == max`` is accepted (a
    monochromatic band).
    """
    try:
        nm = np.asarray(wavelengths_nm, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DescriptorError(f"band wavelengths must be numeric, got {wavelengths_nm!r}") from err
    if nm.ndim == 0 or nm.shape[-1] != 3:
        raise DescriptorError(
            "band wavelengths must have shape (..., 3) = [min, centre, max] nm per band, "
            f"got shape {nm.shape}"
        )
    checks = (
        (~np.isfinite(nm).all(axis=-1), "has non-finite wavelengths"),
        (
            (nm <= ENCODING_OFFSET_NM).any(axis=-1),
            f"has wavelengths <= {ENCODING_OFFSET_NM:g} nm, where the encoding "
            "log10(nm - 300) - 2 is undefined",
        ),
        (
            (nm[..., 0] > nm[..., 1]) | (nm[..., 1] > nm[..., 2]),
            "is out of order: expected min <= centre <= max",
        ),
    )
    for bad, reason in checks:
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            others = int(bad.sum()) - 1
            more = f" ({others} more band(s) with the same problem)" if others else ""
            raise DescriptorError(f"{_band_label(first)} {_format_band(nm[first])} {reason}{more}")
    return nm


def encode_wavelengths(wavelengths_nm: ArrayLike) -> np.ndarray:
    """Encode ``(..., 3)`` [min, centre, max] wavelengths in nm as SEnSeI descriptors.

    Returns float32 ``log10(nm - 300) - 2`` of the same shape; see
    :func:`validate_wavelengths` for the errors raised.
    """
    nm = validate_wavelengths(wavelengths_nm)
    return (np.log10(nm - ENCODING_OFFSET_NM) - 2.0).astype(np.float32)


def decode_descriptors(descriptors: ArrayLike) -> np.ndarray:
    """Inverse of :func:`encode_wavelengths`: encoded descriptors back to nm (float64)."""
    enc = np.asarray(descriptors, dtype=np.float64)
    if enc.ndim == 0 or enc.shape[-1] != 3:
        raise DescriptorError(f"descriptors must have shape (..., 3), got shape {enc.shape}")
    if not np.isfinite(enc).all():
        raise DescriptorError("descriptors contain non-finite values")
    return np.power(10.0, enc + 2.0) + ENCODING_OFFSET_NM


def encode_wavelengths_torch(wavelengths_nm: torch.Tensor, *, check: bool = True) -> torch.Tensor:
    """Torch twin of :func:`encode_wavelengths`, differentiable and on the input's device.

    Useful when wavelengths are augmented on the fly (e.g. scaled by 0.99-1.01 on raw nm)
    inside a training step. ``check=True`` validates like the NumPy version, which costs a
    device synchronisation; pass ``check=False`` in hot loops whose inputs are known good.
    """
    import torch

    if wavelengths_nm.ndim == 0 or wavelengths_nm.shape[-1] != 3:
        raise DescriptorError(
            f"band wavelengths must have shape (..., 3), got shape {tuple(wavelengths_nm.shape)}"
        )
    nm = wavelengths_nm if wavelengths_nm.is_floating_point() else wavelengths_nm.double()
    if check:
        finite = torch.isfinite(nm).all()
        above = (nm > ENCODING_OFFSET_NM).all()
        ordered = ((nm[..., 0] <= nm[..., 1]) & (nm[..., 1] <= nm[..., 2])).all()
        if not bool(finite & above & ordered):
            validate_wavelengths(nm.detach().cpu().double().numpy())
    return torch.log10(nm - ENCODING_OFFSET_NM) - 2.0
