"""Random fields: spectral (FFT) synthesis at low resolution, bilinear sampling to full size.

Every spatial structure of a scene (land-cover patches, elevation, cloud optical thickness) is
a smooth random field defined in metres and made on a small periodic grid, then sampled at the
image pixels. Sampling is where the speed comes from (a 128^2 FFT instead of 256^2 per field),
and where shadows come free: a cloud's shadow is the same low-resolution field sampled at
shifted coordinates. Fields are periodic on the image domain, so a shadow leaving one side
re-enters on the other; that looks like the shadow of an out-of-view cloud.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["FieldSpec", "Grid", "spectral_fields"]


@dataclass(frozen=True)
class FieldSpec:
    """Power spectrum ``P(k) ~ (k^2 + k0^2)^(-beta/2)``, ``k0 = 1 / outer_m``.

    ``beta`` ~2 is rough (grass, texture), ~3-4 smooth (terrain, cloud decks). ``aniso`` > 1
    stretches structures along ``angle`` (radians), as cirrus fibres and dunes are.
    """

    beta: float
    outer_m: float
    aniso: float = 1.0
    angle: float = 0.0


def spectral_fields(
    rng: np.random.Generator, m: int, pixel_m: float, specs: list[FieldSpec]
) -> NDArray[np.float32]:
    """``(len(specs), m, m)`` periodic fields, zero mean and unit standard deviation.

    ``pixel_m`` is the size of one low-resolution pixel in metres, so fields keep their
    physical scale whatever the ground sampling distance.
    """
    ky = np.fft.fftfreq(m)[:, None] / pixel_m
    kx = np.fft.rfftfreq(m)[None, :] / pixel_m
    amps = np.empty((len(specs), m, m // 2 + 1), dtype=np.float32)
    for i, s in enumerate(specs):
        if s.aniso != 1.0:
            c, sn = np.cos(s.angle), np.sin(s.angle)
            ku = kx * c + ky * sn
            kv = -kx * sn + ky * c
            k2 = (ku / s.aniso) ** 2 + (kv * s.aniso) ** 2
        else:
            k2 = kx**2 + ky**2
        amp = (k2 + (1.0 / s.outer_m) ** 2) ** (-s.beta / 4.0)
        amp[0, 0] = 0.0
        amps[i] = amp
    white = rng.standard_normal((len(specs), m, m // 2 + 1, 2), dtype=np.float32)
    spec = (white[..., 0] + 1j * white[..., 1]) * amps
    out = np.fft.irfft2(spec, s=(m, m)).astype(np.float32)
    out -= out.mean(axis=(1, 2), keepdims=True)
    out /= out.std(axis=(1, 2), keepdims=True) + 1e-12
    return out


class Grid:
    """Pixel geometry of one scene: ``n`` x ``n`` pixels of ``gsd_m``; fields made at ``m``."""

    def __init__(self, n: int, m: int, gsd_m: float) -> None:
        self.n = n
        self.m = m
        self.gsd_m = gsd_m
        self.lowres_m = gsd_m * n / m

    def _axis(self, shift: float) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray]:
        pos = (np.arange(self.n, dtype=np.float64) + 0.5 + shift) * (self.m / self.n) - 0.5
        lo = np.floor(pos)
        w = (pos - lo).astype(np.float32)
        i0 = lo.astype(np.intp) % self.m
        return i0, (i0 + 1) % self.m, w

    def sample(self, field: NDArray[np.float32], shift: tuple[float, float] = (0.0, 0.0)):
        """Bilinear periodic upsampling of a low-res field, optionally shifted (full pixels)."""
        y0, y1, wy = self._axis(shift[0])
        x0, x1, wx = self._axis(shift[1])
        rows = field[y0] * (1.0 - wy)[:, None] + field[y1] * wy[:, None]
        return rows[:, x0] * (1.0 - wx) + rows[:, x1] * wx

    def sample_at(
        self, field: NDArray[np.float32], rows: NDArray, cols: NDArray
    ) -> NDArray[np.float32]:
        """Bilinear periodic sampling at arbitrary full-resolution pixel coordinates."""
        scale = self.m / self.n
        py = (rows + 0.5) * scale - 0.5
        px = (cols + 0.5) * scale - 0.5
        y0f = np.floor(py)
        x0f = np.floor(px)
        wy = (py - y0f).astype(np.float32)
        wx = (px - x0f).astype(np.float32)
        y0 = y0f.astype(np.intp) % self.m
        x0 = x0f.astype(np.intp) % self.m
        y1 = (y0 + 1) % self.m
        x1 = (x0 + 1) % self.m
        top = field[y0, x0] * (1.0 - wx) + field[y0, x1] * wx
        bot = field[y1, x0] * (1.0 - wx) + field[y1, x1] * wx
        return top * (1.0 - wy) + bot * wy

    def coords(self) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Full-resolution (rows, cols) pixel-centre coordinates as float32 grids."""
        r = np.arange(self.n, dtype=np.float32)
        return np.broadcast_to(r[:, None], (self.n, self.n)), np.broadcast_to(
            r[None, :], (self.n, self.n)
        )


def worley(
    rng: np.random.Generator,
    rows: NDArray,
    cols: NDArray,
    period: float,
    cell: float,
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.intp]]:
    """Voronoi cells of a jittered seed grid on a periodic square of side ``period``.

    Evaluated at (rows, cols) (any shape, same units as ``period``). Returns the distance to the
    nearest seed and the edge distance ``d2 - d1`` (both in units of ``cell``), and the id of
    the nearest seed's cell: polygons for urban blocks and stratocumulus cells.
    """
    g = max(2, round(period / cell))
    size = period / g
    jitter = rng.uniform(0.1, 0.9, size=(g, g, 2)).astype(np.float32)
    cy = np.floor(rows / size).astype(np.intp)
    cx = np.floor(cols / size).astype(np.intp)
    best = np.full(rows.shape, np.inf, dtype=np.float32)
    second = np.full(rows.shape, np.inf, dtype=np.float32)
    ident = np.zeros(rows.shape, dtype=np.intp)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            ny = cy + dy
            nx = cx + dx
            iy = ny % g
            ix = nx % g
            sy = (ny + jitter[iy, ix, 0]) * size
            sx = (nx + jitter[iy, ix, 1]) * size
            d = np.hypot(rows - sy, cols - sx).astype(np.float32)
            closer = d < best
            second = np.where(closer, best, np.minimum(second, d))
            ident = np.where(closer, iy * g + ix, ident)
            best = np.where(closer, d, best)
    return best / size, (second - best) / size, ident
