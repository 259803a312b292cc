"""Surface layouts: a few endmember spectra and per-pixel maps that say where each one is.

A surface is ``K`` endmember spectra (on the common grid) plus, per pixel, a primary and a
secondary endmember index, the secondary's fraction, a brightness factor and a terrain
illumination factor. Rendering integrates the K spectra over the bands once, then gathers per
pixel: cost independent of the spectral library size and linear in the number of bands.

Layouts (all lengths in metres, so structure shrinks into pixels as the GSD grows): natural
land-cover patches, agricultural parcels with roads, urban blocks and streets, mountains with
hill shading and snow above a snow line, deserts with dunes and salt pans, open ocean with
islands, polar land and sea ice with leads. Land layouts get coasts, rivers, lakes and seasonal
snow as random overlays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from xsensei.training.synthetic.fields import (
    FieldSpec,
    Grid,
    spectral_fields,
    sun_incidence,
    worley_map,
)
from xsensei.training.synthetic.spectra import (
    CLASS,
    SpectralLibrary,
    ice_spectrum,
    salt_spectrum,
    sand_spectrum,
    snow_spectrum,
    water_spectrum,
)

__all__ = ["LAYOUTS", "Surface", "make_surface"]

LAYOUTS = ("natural", "agriculture", "urban", "mountain", "desert", "ocean", "polar")

# fmt: off
# Biome: surface temperature range (K) and class weights of land patches.
_BIOMES: dict[str, tuple[tuple[float, float], dict[str, float]]] = {
    "temperate": ((278.0, 305.0), {"vegetation": 0.55, "soil": 0.25, "npv": 0.1, "urban": 0.05,
                                   "sand": 0.05}),
    "boreal": ((262.0, 292.0), {"vegetation": 0.7, "soil": 0.1, "npv": 0.15, "burn": 0.05}),
    "tropical": ((295.0, 310.0), {"vegetation": 0.75, "soil": 0.2, "burn": 0.05}),
    "arid": ((295.0, 325.0), {"soil": 0.45, "sand": 0.25, "npv": 0.15, "vegetation": 0.1,
                              "salt": 0.05}),
    "polar": ((235.0, 272.0), {"snow": 0.6, "ice": 0.1, "soil": 0.3}),
}
_LAYOUT_BIOMES = {
    "natural": ("temperate", "boreal", "tropical", "arid"),
    "agriculture": ("temperate", "tropical", "arid"),
    "urban": ("temperate", "tropical", "arid"),
    "mountain": ("temperate", "boreal", "arid", "polar"),
    "desert": ("arid",),
    "ocean": ("temperate", "tropical", "arid", "boreal"),
    "polar": ("polar",),
}
# What a patch of each class is mixed with (sub-pixel cover, sparse canopies, dirty snow).
_PARTNER = {
    "vegetation": ("soil", "npv", "vegetation"),
    "soil": ("vegetation", "npv", "soil"),
    "npv": ("soil", "vegetation"),
    "burn": ("soil", "npv"),
    "urban": ("urban", "vegetation", "soil"),
    "sand": ("soil", "sand"),
    "salt": ("sand", "soil"),
    "snow": ("soil", "snow", "ice"),
    "ice": ("snow", "water"),
}
# Surface temperature offset (K) from the scene's base and 3.7 um reflectance per class.
_TEMP_OFFSET = {"vegetation": -4.0, "soil": 4.0, "urban": 6.0, "npv": 3.0, "burn": 8.0,
                "sand": 8.0, "salt": 2.0, "water": -6.0, "turbid_water": -5.0, "snow": -2.0,
                "ice": -3.0}
_R37 = {"vegetation": 0.05, "soil": 0.2, "urban": 0.12, "npv": 0.15, "burn": 0.1, "sand": 0.25,
        "salt": 0.3, "water": 0.02, "turbid_water": 0.03, "snow": 0.02, "ice": 0.02}
# fmt: on
_LUT = 4096


@dataclass
class Surface:
    """Band-independent description of the ground (see module docstring)."""

    spectra: NDArray[np.float32]  # (K, L)
    classes: NDArray[np.uint8]  # (K,)
    temps_k: NDArray[np.float32]  # (K,)
    r37: NDArray[np.float32]  # (K,)
    primary: NDArray[np.intp]  # (n, n)
    secondary: NDArray[np.intp]
    frac: NDArray[np.float32]  # fraction of the secondary endmember
    bright: NDArray[np.float32]
    terrain: NDArray[np.float32] | None  # direct-sun illumination factor, 1 on flat ground
    elevation_m: NDArray[np.float32] | None  # relative elevation (thermal lapse)
    layout: str
    biome: str
    base_temp_k: float
    overlays: tuple[str, ...] = ()

    def class_map(self) -> NDArray[np.uint8]:
        """Dominant surface class per pixel (codes of ``SURFACE_CLASSES``)."""
        dominant = np.where(self.frac < 0.5, self.primary, self.secondary)
        return self.classes[dominant]


@dataclass
class _Palette:
    """Endmember table being built for one scene."""

    rng: np.random.Generator
    lib: SpectralLibrary
    t0: float
    spectra: list[NDArray[np.float64]] = field(default_factory=list)
    classes: list[int] = field(default_factory=list)
    temps: list[float] = field(default_factory=list)
    by_class: dict[str, list[int]] = field(default_factory=dict)

    def add(self, kind: str, spectrum: NDArray[np.float64]) -> int:
        rng = self.rng
        temp = self.t0 + _TEMP_OFFSET[kind] + rng.normal(0.0, 2.0)
        if kind in ("snow", "ice"):
            temp = min(temp, 273.0 - rng.uniform(0.0, 4.0))
        elif kind in ("water", "turbid_water"):
            temp = max(temp, 273.5)
        self.spectra.append(np.clip(spectrum, 0.0, 1.5))
        self.classes.append(CLASS[kind])
        self.temps.append(temp)
        self.by_class.setdefault(kind, []).append(len(self.spectra) - 1)
        return len(self.spectra) - 1

    def land(self, kind: str) -> int:
        """A new endmember of a land class (library draw with a brightness jitter)."""
        rng = self.rng
        if kind == "snow":
            spec = snow_spectrum(rng.uniform(0, 2), rng.uniform(0.75, 1.0), rng.uniform(0, 0.5))
        elif kind == "ice":
            spec = ice_spectrum(rng.uniform(1.2, 2.5), rng.uniform(0.45, 0.75))
        elif kind == "salt":
            spec = salt_spectrum(rng.uniform(0.55, 0.85), rng.uniform(0, 1))
        elif kind == "sand" and rng.random() < 0.5:
            spec = sand_spectrum(rng.uniform(0.3, 0.6), rng.uniform(0, 1))
        else:
            spec = self.lib.draw(rng, kind)
            scale = rng.uniform(0.6, 1.05) if kind == "soil" else rng.uniform(0.85, 1.1)
            spec = spec * scale
        return self.add(kind, spec)

    def water(self, turbid: bool) -> int:
        rng = self.rng
        if turbid:
            spec = water_spectrum(
                np.exp(rng.uniform(np.log(0.5), np.log(30))),
                rng.uniform(0.01, 0.12),
                rng.uniform(0.0, 1.0),
                rng.uniform(0.005, 0.02),
            )
            return self.add("turbid_water", spec)
        spec = water_spectrum(
            np.exp(rng.uniform(np.log(0.03), np.log(5))),
            rng.uniform(0.0, 0.004),
            rng.uniform(0.0, 0.3),
            rng.uniform(0.004, 0.02),
        )
        return self.add("water", spec)

    def pick(self, kind: str, new_prob: float = 0.3) -> int:
        """An endmember of ``kind``: reuse one (scenes have few materials) or draw a new one."""
        have = self.by_class.get(kind, [])
        if have and (self.rng.random() > new_prob or len(have) >= 4):
            return have[self.rng.integers(len(have))]
        if kind in ("water", "turbid_water"):
            return self.water(kind == "turbid_water")
        return self.land(kind)


def _choice(rng: np.random.Generator, weights: dict[str, float]) -> str:
    """Weighted choice of a key (``rng.choice(p=...)`` is ~50x slower for small tables)."""
    total = sum(weights.values())
    x = rng.random() * total
    for key, w in weights.items():
        x -= w
        if x < 0:
            return key
    return key


def _region_tables(
    rng: np.random.Generator, pal: _Palette, weights: dict[str, float], mix_max: float
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.float32]]:
    """Lookup tables region -> (primary, secondary, fraction) over ``_LUT`` hashed slots."""
    n_kinds = 12
    entries = []
    for _ in range(n_kinds):
        kind = _choice(rng, weights)
        p = pal.pick(kind)
        partner = _PARTNER.get(kind, (kind,))
        q = pal.pick(partner[rng.integers(len(partner))]) if kind != "water" else p
        entries.append((p, q))
    slot = rng.integers(n_kinds, size=_LUT)
    prim = np.array([e[0] for e in entries], dtype=np.intp)[slot]
    sec = np.array([e[1] for e in entries], dtype=np.intp)[slot]
    frac = (rng.uniform(0.0, 1.0, size=_LUT) ** 2 * mix_max).astype(np.float32)
    return prim, sec, frac


def _hash(ids: NDArray[np.integer], rng: np.random.Generator) -> NDArray[np.intp]:
    a = int(rng.integers(1, 1 << 20)) * 2 + 1
    b = int(rng.integers(0, 1 << 20))
    return ((ids.astype(np.int64) * a + b) >> 3) % _LUT


def _digitize(values: NDArray[np.float32], levels: int, rng: np.random.Generator) -> NDArray:
    edges = np.sort(rng.normal(0.0, 0.9, size=levels - 1)).astype(np.float32)
    return np.searchsorted(edges, values)


def _terrain_factor(
    z: NDArray[np.float32], gsd: float, sun_elev: float, sun_az: float
) -> NDArray[np.float32]:
    """cos(incidence) / cos(sun zenith): hill shading of a Lambertian surface."""
    zx = (np.roll(z, -1, axis=1) - np.roll(z, 1, axis=1)) / (2.0 * gsd)
    zn = (np.roll(z, 1, axis=0) - np.roll(z, -1, axis=0)) / (2.0 * gsd)
    cos_i = sun_incidence(zx, zn, sun_elev, sun_az)
    return np.clip(cos_i / np.sin(sun_elev), 0.0, 1.6).astype(np.float32)


def _scaled_relief(unit: NDArray[np.float32], gsd: float, slope: float) -> NDArray[np.float32]:
    """Scale a unit field (metres) so its RMS slope is ``slope``."""
    gx = (np.roll(unit, -1, axis=1) - unit) / gsd
    gy = (np.roll(unit, -1, axis=0) - unit) / gsd
    rms = float(np.sqrt(np.mean(gx * gx + gy * gy))) + 1e-9
    return (unit * (slope / rms)).astype(np.float32)


class _Builder:
    """Working state of one surface while its layout and overlays are painted."""

    def __init__(
        self,
        rng: np.random.Generator,
        grid: Grid,
        pal: _Palette,
        tex: NDArray[np.float32],
        layout: str,
        biome: str,
        sun: tuple[float, float],
    ) -> None:
        self.rng = rng
        self.grid = grid
        self.pal = pal
        self.tex = tex
        self.layout = layout
        self.biome = biome
        self.sun = sun  # (elevation, azimuth) radians
        n = grid.n
        self.prim = np.zeros((n, n), dtype=np.intp)
        self.sec = np.zeros((n, n), dtype=np.intp)
        self.frac = np.zeros((n, n), dtype=np.float32)
        self.terrain: NDArray[np.float32] | None = None
        self.elev: NDArray[np.float32] | None = None
        self.overlays: list[str] = []
        self.rows, self.cols = grid.coords()
        # shared low-resolution fields: two patch fields, a mask, relief/lakes, coast/basins
        outer = float(np.exp(rng.uniform(np.log(800.0), np.log(10000.0))))
        self.f = spectral_fields(
            rng,
            grid.m,
            grid.lowres_m,
            [
                FieldSpec(rng.uniform(3.0, 4.0), outer),
                FieldSpec(rng.uniform(3.0, 4.0), outer * rng.uniform(0.3, 1.0)),
                FieldSpec(3.5, max(outer * 2, 2000.0)),
                FieldSpec(rng.uniform(3.0, 4.0), rng.uniform(2000.0, 20000.0)),
                FieldSpec(3.5, rng.uniform(3000.0, 30000.0)),
            ],
        )

    def field(self, i: int) -> NDArray[np.float32]:
        """Shared field ``i`` at full resolution."""
        return self.grid.sample(self.f[i])

    def regions(
        self,
        ids: NDArray,
        weights: dict[str, float],
        mask: NDArray[np.bool_] | None = None,
        mix_max: float = 0.5,
    ) -> None:
        """Paint hashed region ids with endmembers drawn from class ``weights``."""
        lut_p, lut_q, lut_f = _region_tables(self.rng, self.pal, weights, mix_max)
        slot = _hash(ids, self.rng)
        amp = np.float32(self.rng.uniform(0.05, 0.3))
        p, q = lut_p[slot], lut_q[slot]
        f = np.clip(lut_f[slot] + amp * self.tex[1], 0.0, 1.0)
        if mask is None:
            self.prim, self.sec, self.frac = p, q, f
        else:
            self.prim = np.where(mask, p, self.prim)
            self.sec = np.where(mask, q, self.sec)
            self.frac = np.where(mask, f, self.frac)

    def natural(self, mask: NDArray[np.bool_] | None = None) -> None:
        """Land-cover patches: two smooth fields cut into levels, the biome's classes."""
        ids = _digitize(self.field(0), int(self.rng.integers(2, 7)), self.rng) * 8
        ids += _digitize(self.field(1), 4, self.rng)
        self.regions(ids, _BIOMES[self.biome][1], mask)

    def cover(self, frac: NDArray[np.float32], index: int | NDArray[np.intp]) -> None:
        """Cover the surface by ``index`` with per-pixel fraction ``frac`` (water, snow, roads).

        Fully covered pixels take it as primary; partly covered ones as secondary, so the
        boundary pixels mix (the sub-pixel river, the road at 30 m).
        """
        full = frac >= 0.999
        part = (frac > 0.001) & ~full
        self.prim = np.where(full, index, self.prim)
        self.frac = np.where(full, 0.0, np.where(part, frac, self.frac)).astype(np.float32)
        self.sec = np.where(part, index, self.sec)


def make_surface(
    rng: np.random.Generator,
    grid: Grid,
    lib: SpectralLibrary,
    layout: str,
    sun_elev: float,
    sun_az: float,
    tex: NDArray[np.float32],
) -> Surface:
    """Draw the ground of one scene (``tex``: (2, n, n) unit full-resolution textures)."""
    if layout not in _LAYOUT_BIOMES:
        raise ValueError(f"unknown layout {layout!r}")
    biome = _LAYOUT_BIOMES[layout][rng.integers(len(_LAYOUT_BIOMES[layout]))]
    t_lo, t_hi = _BIOMES[biome][0]
    pal = _Palette(rng, lib, float(rng.uniform(t_lo, t_hi)))
    b = _Builder(rng, grid, pal, tex, layout, biome, (sun_elev, sun_az))
    _LAYOUT_PAINTERS[layout](b)
    if layout in ("natural", "agriculture", "urban", "mountain", "desert"):
        _overlays(b)
    bright = (1.0 + np.float32(rng.uniform(0.02, 0.12)) * tex[0]).astype(np.float32)
    return Surface(
        spectra=np.asarray(pal.spectra, dtype=np.float32),
        classes=np.asarray(pal.classes, dtype=np.uint8),
        temps_k=np.asarray(pal.temps, dtype=np.float32),
        r37=np.asarray([_R37[_CLASS_NAMES[c]] for c in pal.classes], dtype=np.float32),
        primary=b.prim,
        secondary=b.sec,
        frac=b.frac.astype(np.float32),
        bright=bright,
        terrain=b.terrain,
        elevation_m=b.elev,
        layout=layout,
        biome=biome,
        base_temp_k=pal.t0,
        overlays=tuple(b.overlays),
    )


_CLASS_NAMES = {v: k for k, v in CLASS.items()}


def _rotated(b: _Builder, scale: float, angle: float) -> tuple[NDArray, NDArray]:
    """Pixel coordinates rotated by ``angle`` and scaled (metres when ``scale`` is the GSD)."""
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    x = b.cols * np.float32(scale)
    y = b.rows * np.float32(scale)
    return x * c + y * s, -x * s + y * c


def _boundaries(
    rng: np.random.Generator, lo: float, hi: float, size: tuple[float, float]
) -> NDArray[np.float64]:
    """Sorted boundaries covering [lo, hi] with log-uniform spacings in ``size`` (metres)."""
    span = hi - lo
    count = int(span / size[0]) + 2
    steps = np.exp(rng.uniform(np.log(size[0]), np.log(size[1]), size=min(count, 20000)))
    edges = lo - rng.uniform(0, size[1]) + np.cumsum(steps)
    return edges[edges < hi + size[1]]


def _natural(b: _Builder) -> None:
    b.natural()


def _agriculture(b: _Builder) -> None:
    """Rectangular parcels in strips along a random direction, roads on some strip edges."""
    rng, pal, gsd = b.rng, b.pal, b.grid.gsd_m
    u, v = _rotated(b, gsd, rng.uniform(0, np.pi))
    size = (rng.uniform(40.0, 150.0), rng.uniform(200.0, 900.0))
    edges = _boundaries(rng, float(u.min()), float(u.max()), size)
    col = np.searchsorted(edges, u)
    n_cols = edges.size + 1
    length = np.exp(rng.uniform(np.log(size[0]), np.log(size[1] * 2), size=n_cols))
    offset = rng.uniform(0, 1, size=n_cols) * length
    pos = (v + offset[col].astype(np.float32)) / length[col].astype(np.float32)
    row = np.floor(pos).astype(np.int64)
    ids = col.astype(np.int64) * 100003 + row
    b.regions(ids, {"vegetation": 0.5, "soil": 0.35, "npv": 0.15}, mix_max=0.7)
    # roads on a subset of strip edges, tracks on some parcel ends
    road_on = rng.random(edges.size + 2) < rng.uniform(0.1, 0.6)
    left = edges[np.clip(col - 1, 0, edges.size - 1)]
    right = edges[np.clip(col, 0, edges.size - 1)]
    d_left = np.where(road_on[col], np.abs(u - left), np.inf)
    d_right = np.where(road_on[col + 1], np.abs(right - u), np.inf)
    width = rng.uniform(4.0, 15.0)
    dist = np.minimum(d_left, d_right)
    road_frac = np.clip((width / 2 - dist) / gsd + 0.5, 0.0, 1.0).astype(np.float32)
    road = pal.pick("urban") if rng.random() < 0.7 else pal.pick("soil")
    b.cover(road_frac, road)
    if rng.random() < 0.4:  # tracks / hedges at parcel ends
        d_end = np.abs(pos - np.round(pos)) * length[col].astype(np.float32)
        track_frac = np.clip((rng.uniform(2.0, 6.0) - d_end) / gsd + 0.5, 0.0, 1.0)
        kind = "vegetation" if rng.random() < 0.5 else "soil"
        b.cover(track_frac.astype(np.float32) * 0.8, pal.pick(kind))
    if rng.random() < 0.5:  # forest / village / wasteland patches between the fields
        b.natural(b.field(2) > rng.uniform(0.3, 1.5))


def _urban(b: _Builder) -> None:
    """Voronoi blocks of roofs, gardens and lots separated by streets."""
    rng, gsd = b.rng, b.grid.gsd_m
    cell = rng.uniform(30.0, 150.0)
    edge, ident = worley_map(rng, b.grid, cell)
    b.regions(ident, {"urban": 0.7, "vegetation": 0.2, "soil": 0.1}, mix_max=0.4)
    street = rng.uniform(6.0, 25.0)
    frac = np.clip((street - edge) / (2 * gsd) + 0.5, 0.0, 1.0).astype(np.float32)
    b.cover(frac, b.pal.pick("urban", 1.0))
    if rng.random() < 0.6:  # parks, wasteland, suburbs
        b.natural(b.field(2) > rng.uniform(0.0, 1.2))


def _mountain(b: _Builder) -> None:
    """Relief with hill shading; vegetation low, rock high, snow above a snow line."""
    rng, gsd, biome = b.rng, b.grid.gsd_m, b.biome
    unit = b.field(3) + np.float32(0.05) * b.tex[1]
    if rng.random() < 0.4:  # ridged peaks
        unit = 1.0 - np.abs(unit)
    z = _scaled_relief(unit.astype(np.float32), gsd, rng.uniform(0.1, 0.6))
    b.elev = z - np.float32(z.mean())
    b.terrain = _terrain_factor(z, gsd, *b.sun)
    q = np.quantile(z[::8, ::8], [0.33, 0.66])
    low_w = {"vegetation": 0.7, "soil": 0.2, "npv": 0.1} if biome != "polar" else {"soil": 1.0}
    if biome == "arid":
        low_w = {"soil": 0.5, "vegetation": 0.2, "npv": 0.2, "sand": 0.1}
    mid_w = {"vegetation": 0.3, "soil": 0.5, "npv": 0.2}
    high_w = {"soil": 0.7, "sand": 0.3}
    zone = np.digitize(z, q)
    ids = zone * 2 + (b.field(0) > 0)
    for level, w in enumerate((low_w, mid_w, high_w)):
        b.regions(ids, w, zone == level)
    snow_cover = rng.uniform(0.0, 1.0) ** 2 if biome != "polar" else rng.uniform(0.5, 1.0)
    if snow_cover > 0.05:
        line = np.quantile(z[::8, ::8], 1.0 - snow_cover)
        spread = float(z.std()) * rng.uniform(0.05, 0.3)
        frac = np.clip((z - line) / spread + 0.5 + 0.5 * b.tex[1], 0.0, 1.0).astype(np.float32)
        b.cover(frac, b.pal.pick("snow", 0.6))
        b.overlays.append("snow_line")


def _desert(b: _Builder) -> None:
    """Dune fields (anisotropic relief, shaded), soils and salt pans in basins."""
    rng, grid = b.rng, b.grid
    dunes = spectral_fields(
        rng,
        grid.m,
        grid.lowres_m,
        [FieldSpec(3.5, rng.uniform(200, 2000), rng.uniform(2.0, 6.0), rng.uniform(0, np.pi))],
    )[0]
    z = _scaled_relief(grid.sample(dunes), grid.gsd_m, rng.uniform(0.03, 0.25))
    b.terrain = _terrain_factor(z, grid.gsd_m, *b.sun)
    b.elev = z
    ids = _digitize(b.field(0), 4, rng) * 4 + _digitize(b.field(1), 3, rng)
    b.regions(ids, {"sand": 0.5, "soil": 0.35, "npv": 0.1, "vegetation": 0.05})
    if rng.random() < 0.4:
        thr = rng.uniform(0.5, 1.8)
        frac = np.clip((b.field(4) - thr) * 3.0 + 0.3 * b.tex[1], 0.0, 1.0).astype(np.float32)
        b.cover(frac, b.pal.pick("salt", 1.0))
        b.overlays.append("salt_pan")


def _ocean(b: _Builder) -> None:
    """Open water, clear to turbid, sometimes with islands."""
    rng = b.rng
    b.prim[:] = b.pal.pick("water", 1.0)
    b.sec[:] = b.pal.pick("turbid_water", 1.0)
    b.frac = np.clip(b.field(3) * 0.4 + rng.uniform(-0.6, 0.2), 0, 1).astype(np.float32)
    if rng.random() < 0.35:
        b.natural(b.field(4) > rng.uniform(1.0, 2.2))
        b.overlays.append("islands")


def _polar(b: _Builder) -> None:
    """Snow and ice land, sea ice floes with open-water leads."""
    rng, grid = b.rng, b.grid
    sea = b.field(4) + np.float32(rng.uniform(-1.5, 1.5)) <= 0
    b.regions(_digitize(b.field(0), 4, rng), {"snow": 0.75, "ice": 0.1, "soil": 0.15}, None, 0.3)
    cell = float(np.exp(rng.uniform(np.log(100.0), np.log(5000.0))))
    edge, ident = worley_map(rng, grid, cell)
    b.regions(ident, {"ice": 0.5, "snow": 0.5}, sea, mix_max=0.5)
    lead = rng.uniform(0.02, 0.3) * cell
    water = np.clip((lead - edge) / (2 * grid.gsd_m) + 0.5, 0.0, 1.0) * sea
    open_water = b.field(3) > rng.uniform(0.0, 2.5)
    water = np.maximum(water, (open_water & sea).astype(np.float32))
    b.cover(water.astype(np.float32), b.pal.pick("water", 0.5))


_LAYOUT_PAINTERS = {
    "natural": _natural,
    "agriculture": _agriculture,
    "urban": _urban,
    "mountain": _mountain,
    "desert": _desert,
    "ocean": _ocean,
    "polar": _polar,
}


def _overlays(b: _Builder) -> None:
    """Coasts, rivers, lakes and seasonal snow on land layouts."""
    rng, pal, n, gsd = b.rng, b.pal, b.grid.n, b.grid.gsd_m
    if rng.random() < 0.25:  # coast: sea beyond a fractal shore line
        u, _ = _rotated(b, 1.0, rng.uniform(0, 2 * np.pi))
        ramp = (u - np.float32(rng.uniform(0.2, 0.8) * n * 1.4 - 0.2 * n)) / np.float32(n * 0.5)
        g = ramp + np.float32(rng.uniform(0.2, 0.8)) * b.field(4)
        sea = pal.pick("water", 1.0)
        turbid = pal.pick("turbid_water", 1.0)
        mask = g > 0
        turb = np.clip(1.0 - g * np.float32(rng.uniform(1.0, 8.0)), 0.0, 1.0)
        b.prim = np.where(mask, sea, b.prim)
        b.sec = np.where(mask, turbid, b.sec)
        b.frac = np.where(mask, turb * np.float32(rng.uniform(0, 1)), b.frac).astype(np.float32)
        b.overlays.append("coast")
    if rng.random() < (0.1 if b.layout == "desert" else 0.3):  # meandering river
        u, v = _rotated(b, gsd, rng.uniform(0, np.pi))
        lo, hi = float(u.min()), float(u.max())
        span = hi - lo
        knots = np.linspace(lo, hi, 256)
        harmonics = np.arange(1, 9)
        amps = rng.normal(size=harmonics.size) * harmonics**-1.5
        phases = rng.uniform(0, 2 * np.pi, size=harmonics.size)
        line = (
            amps[:, None]
            * np.sin(2 * np.pi * harmonics[:, None] * (knots - lo) / span + phases[:, None])
        ).sum(0)
        line *= span * rng.uniform(0.03, 0.12) / (line.std() + 1e-9)
        line += rng.uniform(float(v.min()), float(v.max()))
        slope = np.gradient(line, knots)
        centre = np.interp(u.ravel(), knots, line).reshape(u.shape)
        stretch = np.sqrt(1.0 + np.interp(u.ravel(), knots, slope) ** 2).reshape(u.shape)
        width = float(np.exp(rng.uniform(np.log(8.0), np.log(400.0))))
        frac = np.clip((width / 2 - np.abs(v - centre) / stretch) / gsd + 0.5, 0.0, 1.0)
        kind = "turbid_water" if rng.random() < 0.6 else "water"
        b.cover(frac.astype(np.float32), pal.pick(kind, 1.0))
        b.overlays.append("river")
    if rng.random() < 0.2:  # lakes
        lakes = b.field(3) > rng.uniform(1.2, 2.2)
        if b.elev is not None:
            lakes &= b.elev < np.quantile(b.elev[::8, ::8], 0.3)
        kind = "water" if rng.random() < 0.6 else "turbid_water"
        b.cover(lakes.astype(np.float32), pal.pick(kind, 1.0))
        b.overlays.append("lakes")
    if b.biome in ("temperate", "boreal") and b.layout != "mountain" and rng.random() < 0.12:
        cover = np.clip(b.field(2) * 0.5 + rng.uniform(0.0, 1.2) + 0.3 * b.tex[1], 0, 1)
        veg = np.asarray(pal.classes) == CLASS["vegetation"]
        cover = np.where(veg[b.prim], cover * 0.5, cover).astype(np.float32)  # trees show
        b.cover(cover, pal.pick("snow", 0.5))
        b.overlays.append("seasonal_snow")
