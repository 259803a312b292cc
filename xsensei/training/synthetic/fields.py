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
from functools import cache

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "FieldSpec",
    "Grid",
    "Textures",
    "bank_normals",
    "noise_bank",
    "spectral_fields",
    "sun_incidence",
    "worley",
    "worley_map",
]


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
    shape = (len(specs), m, m // 2 + 1, 2)
    white = bank_normals(rng, shape)
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

    def sample(
        self, field: NDArray[np.float32], shift: tuple[float, float] = (0.0, 0.0)
    ) -> NDArray[np.float32]:
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
        y0 = (y0f.astype(np.intp) % self.m) * self.m
        x0 = x0f.astype(np.intp) % self.m
        y1 = (y0 + self.m) % (self.m * self.m)
        x1 = (x0 + 1) % self.m
        flat = field.ravel()
        top = np.take(flat, y0 + x0) * (1.0 - wx) + np.take(flat, y0 + x1) * wx
        bot = np.take(flat, y1 + x0) * (1.0 - wx) + np.take(flat, y1 + x1) * wx
        return top * (1.0 - wy) + bot * wy

    def coords(self) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Full-resolution (rows, cols) pixel-centre coordinates as float32 grids."""
        r = np.arange(self.n, dtype=np.float32)
        return np.broadcast_to(r[:, None], (self.n, self.n)), np.broadcast_to(
            r[None, :], (self.n, self.n)
        )


def _candidates(
    rng: np.random.Generator, rows: NDArray, cols: NDArray, period: float, cell: float
) -> tuple[NDArray, NDArray, NDArray, NDArray, float]:
    """Distances, seed positions and ids of the 9 seeds around each point: (9, ...) arrays."""
    g = max(2, round(period / cell))
    size = period / g
    jitter = rng.uniform(0.1, 0.9, size=(2, g * g)).astype(np.float32)
    cy = np.floor(rows / np.float32(size)).astype(np.intp)
    cx = np.floor(cols / np.float32(size)).astype(np.intp)
    off = np.array([-1, 0, 1], dtype=np.intp)
    ny = cy[None] + np.repeat(off, 3).reshape((9,) + (1,) * cy.ndim)
    nx = cx[None] + np.tile(off, 3).reshape((9,) + (1,) * cx.ndim)
    ident = (ny % g) * g + nx % g
    sy = (ny + np.take(jitter[0], ident)).astype(np.float32) * np.float32(size)
    sx = (nx + np.take(jitter[1], ident)).astype(np.float32) * np.float32(size)
    dist = np.hypot(rows[None] - sy, cols[None] - sx)
    return dist, sy, sx, ident, size


_Nearest = tuple[NDArray, NDArray, NDArray, NDArray]


def _two_nearest(
    rng: np.random.Generator, rows: NDArray, cols: NDArray, period: float, cell: float
) -> tuple[_Nearest, _Nearest, float]:
    """Nearest and second-nearest jittered-grid seeds: (distance, y, x, id) each, cell size."""
    dist, sy, sx, ident, size = _candidates(rng, rows, cols, period, cell)
    order = np.argpartition(dist, 1, axis=0)[:2]
    pick = [np.take_along_axis(a, order, axis=0) for a in (dist, sy, sx, ident)]
    swap = pick[0][1] < pick[0][0]
    first = tuple(np.where(swap, a[1], a[0]) for a in pick)
    second = tuple(np.where(swap, a[0], a[1]) for a in pick)
    return first, second, size


def sun_incidence(
    d_east: NDArray, d_north: NDArray, sun_elev: float, sun_az: float
) -> NDArray:
    """cos(incidence) of the sun on a surface of slopes ``dz/deast``, ``dz/dnorth`` (m/m):
    hill shading (terrain, cloud tops) divides it by sin(elevation), 1 on flat ground."""
    se, ce = np.sin(sun_elev), np.cos(sun_elev)
    sx, sy = ce * np.sin(sun_az), ce * np.cos(sun_az)
    return (-d_east * sx - d_north * sy + se) / np.sqrt(1.0 + d_east * d_east + d_north * d_north)


def worley(
    rng: np.random.Generator,
    rows: NDArray,
    cols: NDArray,
    period: float,
    cell: float,
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.intp]]:
    """Voronoi cells of a jittered seed grid on a periodic square of side ``period``.

    Evaluated at (rows, cols) (any shape, same units as ``period``). Returns the distance to the
    nearest seed and the edge distance ``d2 - d1`` (both in units of the cell size), and the id
    of the nearest seed's cell: stratocumulus cells (on the low-resolution grid).
    """
    (d1, _, _, ident), (d2, _, _, _), size = _two_nearest(rng, rows, cols, period, cell)
    return (d1 / size).astype(np.float32), ((d2 - d1) / size).astype(np.float32), ident


def worley_map(
    rng: np.random.Generator, grid: Grid, cell_m: float
) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
    """Full-resolution Voronoi polygons (urban blocks, ice floes): edge distance (m) and ids.

    The 9-cell seed search runs on the low-resolution grid and keeps the two nearest seeds;
    full-resolution pixels then only compare those two, so polygon borders stay sharp at a
    fraction of the cost. Cells smaller than ~3 pixels are sub-pixel texture anyway and are
    taken from the low-resolution search directly.
    """
    n, m, gsd = grid.n, grid.m, grid.gsd_m
    period = n * gsd
    lr = ((np.arange(m, dtype=np.float32) + 0.5) * np.float32(grid.lowres_m)).astype(np.float32)
    rr, cc = np.meshgrid(lr, lr, indexing="ij")
    (d1, s1y, s1x, id1), (d2, s2y, s2x, id2), size = _two_nearest(rng, rr, cc, period, cell_m)
    near = (np.arange(n) * m) // n
    if cell_m < 3.0 * gsd:
        edge = grid.sample(((d2 - d1) * size).astype(np.float32))
        return edge, id1[np.ix_(near, near)]
    full = ((np.arange(n, dtype=np.float32) + 0.5) * np.float32(gsd)).astype(np.float32)
    ry, rx = full[:, None], full[None, :]
    ix = np.ix_(near, near)
    da = np.hypot(ry - s1y[ix], rx - s1x[ix])
    db = np.hypot(ry - s2y[ix], rx - s2x[ix])
    closer = da <= db
    return np.abs(db - da).astype(np.float32), np.where(closer, id1[ix], id2[ix])


class Textures:
    """Crops of a few large self-similar (beta = 2-2.4) fields, made once per process.

    Power-law textures with beta ~2 look the same at every scale, so one bank serves every
    GSD; a crop at a random offset costs a copy instead of a full-resolution FFT per scene.
    ``crop(k, offset, shift)`` is exact for shifted copies (cloud texture in the shadow).
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.bank = _texture_bank(max(2 * n, 256))
        self.size = self.bank.shape[-1]

    def crop(
        self, k: int, offset: tuple[int, int], shift: tuple[float, float] = (0.0, 0.0)
    ) -> NDArray[np.float32]:
        """(n, n) texture ``k`` at ``offset`` (+ ``shift`` pixels, rounded, periodic)."""
        oy = offset[0] + round(shift[0])
        ox = offset[1] + round(shift[1])
        rows = (np.arange(self.n) + oy) % self.size
        cols = (np.arange(self.n) + ox) % self.size
        if shift == (0.0, 0.0) and oy + self.n <= self.size and ox + self.n <= self.size:
            return self.bank[k, oy : oy + self.n, ox : ox + self.n]
        return self.bank[k][np.ix_(rows, cols)]


@cache
def _texture_bank(size: int, count: int = 8) -> NDArray[np.float32]:
    rng = np.random.default_rng(20240611)
    specs = [FieldSpec(2.0 + 0.4 * (i % 3) / 2, size / 2) for i in range(count)]
    bank = spectral_fields(rng, size, 1.0, specs)
    bank.flags.writeable = False
    return bank


@cache
def noise_bank(count: int = 1 << 22) -> NDArray[np.float32]:
    """A fixed block of standard normal deviates; sensor noise is read from random offsets.

    Drawing 850k Gaussian numbers per patch costs ~18 ms, more than forming the image; slices
    of this 16 MB bank at random offsets are as good as fresh noise for training.
    """
    bank = np.random.default_rng(20240612).standard_normal(count, dtype=np.float32)
    bank.flags.writeable = False
    return bank


def bank_normals(rng: np.random.Generator, shape: tuple[int, ...]) -> NDArray[np.float32]:
    """Standard normal deviates of ``shape``: a bank slice when it fits, else freshly drawn."""
    bank = noise_bank()
    count = int(np.prod(shape))
    if count >= bank.size:
        return rng.standard_normal(shape, dtype=np.float32)
    start = int(rng.integers(0, bank.size - count))
    return bank[start : start + count].reshape(shape)
