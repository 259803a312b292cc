"""Windows on a scene-anchored grid, and the weights that blend their overlaps.

Window ``k`` covers ``[k * stride, k * stride + size)`` in *scene* coordinates, whatever part
of the scene a Dask chunk holds. With a halo of ``size`` pixels every window that touches a
chunk is fully inside the chunk plus halo, so each pixel is predicted from the same windows
with the same inputs in a numpy call and under any chunking: chunk independence is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from xsensei.errors import InputError

Blend = Literal["uniform", "linear", "cosine"]


@dataclass(frozen=True)
class WindowSpec:
    """Model window geometry. ``size=None`` means a per-pixel model: no windows, no halo."""

    size: int | None = 256
    overlap: int = 64
    blend: Blend = "cosine"

    def __post_init__(self) -> None:
        for name in ("size", "overlap"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, int | np.integer)):
                raise InputError(f"window {name} must be a whole number of pixels, got "
                                 f"{value!r}")
        if self.size is not None:
            if self.size < 8:
                raise InputError(f"window size must be >= 8 pixels, got {self.size}")
            if not 0 <= self.overlap < self.size:
                raise InputError(
                    f"overlap must be in [0, size) = [0, {self.size}), got {self.overlap}"
                )
        if self.blend not in ("uniform", "linear", "cosine"):
            raise InputError(f"blend must be 'uniform', 'linear' or 'cosine', got {self.blend!r}")

    @property
    def stride(self) -> int:
        assert self.size is not None
        return self.size - self.overlap

    @property
    def halo(self) -> int:
        """Context needed on each side of a chunk for exact chunk independence."""
        return 0 if self.size is None else self.size


def window_starts(core_start: int, core_stop: int, scene_len: int, spec: WindowSpec) -> list[int]:
    """Scene coordinates of the windows along one axis that touch ``[core_start, core_stop)``.

    The scene's window grid is ``k * stride`` for ``k = 0 .. last``, where the last window is the
    first one reaching the scene end (it runs into the reflected border if the grid doesn't fit).
    """
    size, stride = spec.size, spec.stride
    assert size is not None
    last = max(0, -(-(scene_len - size) // stride))
    first_k = max(0, (core_start - size) // stride + 1)
    last_k = min(last, (core_stop - 1) // stride)
    return [k * stride for k in range(first_k, last_k + 1)]


def _ramp(size: int, overlap: int, blend: Blend) -> NDArray[np.float64]:
    """1-D weight profile: rises over ``overlap`` pixels at both ends, never exactly zero."""
    w = np.ones(size)
    if blend == "uniform" or overlap == 0:
        return w
    t = (np.arange(overlap) + 0.5) / overlap  # in (0, 1), so every pixel keeps some weight
    rise = t if blend == "linear" else 0.5 - 0.5 * np.cos(np.pi * t)
    w[:overlap] = rise
    w[size - overlap :] = np.minimum(w[size - overlap :], rise[::-1])
    return w


def blend_weights(spec: WindowSpec) -> NDArray[np.float32]:
    """2-D window weights (outer product of the 1-D ramps), float32."""
    assert spec.size is not None
    r = _ramp(spec.size, spec.overlap, spec.blend)
    return np.outer(r, r).astype(np.float32)
