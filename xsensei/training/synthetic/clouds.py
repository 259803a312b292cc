"""Cloud layers: optical-thickness fields per cloud type, their cast shadows, two-stream optics.

A layer is a tau (optical thickness at 550 nm) field at a height, a phase (water/ice) and a
brightness gain. Its shadow is the same field sampled ``height / tan(sun elevation) / gsd``
pixels towards the sun, so clouds and shadows always agree. Types:

- cumulus: a thresholded fractal, tau rising as a power of the excess: compact thick cores,
  thin edges, clear gaps; 0.8-3 km tops (congestus up to 8 km).
- stratocumulus: Voronoi cells, thick in the middle, thin at the cell walls, in decks with holes.
- stratus: smooth, extensive, tau 1.5-40, low (0.2-2 km), soft deck edges.
- cirrus: anisotropic, warped (fibrous) field, thin (tau mostly < 3), ice, 7-13 km: invisible
  in most bands over bright ground, but bright at 1375 nm above the water vapour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from xsensei.training.synthetic.fields import (
    FieldSpec,
    Grid,
    spectral_fields,
    sun_incidence,
    worley,
)

#: Full-resolution unit texture, optionally shifted by (rows, cols) pixels.
TextureFn = Callable[[tuple[float, float]], NDArray[np.float32]]

__all__ = [
    "CLOUD_TYPES",
    "CloudLayer",
    "make_cloud_layer",
    "top_illumination",
    "two_stream_reflectance",
]

CLOUD_TYPES = ("cumulus", "stratocumulus", "stratus", "cirrus")

#: Asymmetry parameter of cloud scattering in the two-stream reflectance.
ASYMMETRY_G = 0.85


def two_stream_reflectance(tau: NDArray | float) -> NDArray | float:
    """``tau (1 - g) / (2 + tau (1 - g))``: conservative-scattering cloud reflectance.

    Grows from 0 to 1 with tau (0.13 at tau 2, 0.38 at 8, 0.88 at 100); one minus it is the
    diffuse transmittance.
    """
    x = tau * (1.0 - ASYMMETRY_G)
    return x / (2.0 + x)


@dataclass
class CloudLayer:
    """One cloud layer of a scene (band independent)."""

    kind: str
    phase: str  # "water" | "ice"
    height_km: float
    gain: float  # brightness scale of the two-stream reflectance
    swir_kappa: float  # scales the SWIR absorption of the cloud shape (particle size)
    tau: NDArray[np.float32]  # (n, n) vertical optical thickness
    tau_shadow: NDArray[np.float32]  # (n, n) optical thickness on the path to the sun
    #: (n, n) factor on the light the layer reflects: sunlit / shaded sides of a cloud top with
    #: relief (physics 1.2, :func:`top_illumination`); None = a flat top (1 everywhere)
    illumination: NDArray[np.float32] | None = None


def _shift_px(grid: Grid, height_km: float, sun_elev: float, sun_az: float) -> tuple[float, float]:
    """(rows, cols) offset from a ground pixel to the cloud that shades it (towards the sun)."""
    d = height_km * 1000.0 / np.tan(sun_elev) / grid.gsd_m
    return float(-np.cos(sun_az) * d), float(np.sin(sun_az) * d)


def _texture(
    tex: TextureFn, shift: tuple[float, float], amp: float
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Lognormal small-scale modulation (and the same, shifted, for the shadow)."""
    a, b = np.float32(amp), np.float32(amp * amp / 2)
    return np.exp(a * tex((0.0, 0.0)) - b), np.exp(a * tex(shift) - b)


def _thresholded(
    grid: Grid,
    field: NDArray[np.float32],
    cover: float,
    shift: tuple[float, float],
    power: float,
    peak: float,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    thr = float(np.quantile(field, 1.0 - cover))
    top = float(field.max()) - thr + 1e-6

    def tau_of(f: NDArray[np.float32]) -> NDArray[np.float32]:
        return (np.float32(peak) * (np.maximum(f - thr, 0.0) / top) ** power).astype(np.float32)

    return tau_of(grid.sample(field)), tau_of(grid.sample(field, shift))


def make_cloud_layer(
    rng: np.random.Generator,
    kind: str,
    grid: Grid,
    sun_elev: float,
    sun_az: float,
    tex: TextureFn,
    gain_range: tuple[float, float] = (0.75, 1.1),
) -> CloudLayer:
    """Draw one layer of ``kind`` (see module docstring); ``tex`` gives a unit texture.

    ``gain_range`` scales the two-stream reflectance (water clouds; ice clouds get 0.9 of it):
    real thick clouds reach 0.6-0.95 in the visible depending on geometry and microphysics.
    """
    m, px = grid.m, grid.lowres_m
    phase = "ice" if kind == "cirrus" else "water"
    if kind == "cumulus":
        height = rng.uniform(0.8, 3.0) if rng.random() > 0.15 else rng.uniform(3.0, 8.0)
        shift = _shift_px(grid, height, sun_elev, sun_az)
        outer = float(np.exp(rng.uniform(np.log(300.0), np.log(4000.0))))
        f = spectral_fields(rng, m, px, [FieldSpec(rng.uniform(2.6, 3.6), outer)])[0]
        cover = float(np.exp(rng.uniform(np.log(0.03), np.log(0.6))))
        tau, tau_sh = _thresholded(
            grid,
            f,
            cover,
            shift,
            rng.uniform(1.0, 2.0),
            np.exp(rng.uniform(np.log(15), np.log(100))),
        )
        amp = 0.25
    elif kind == "stratocumulus":
        height = rng.uniform(0.5, 2.5)
        shift = _shift_px(grid, height, sun_elev, sun_az)
        cell = float(np.exp(rng.uniform(np.log(400.0), np.log(3000.0))))
        f = spectral_fields(
            rng, m, px, [FieldSpec(3.0, cell * 2), FieldSpec(3.5, rng.uniform(5e3, 3e4))]
        )
        lr = (np.arange(m, dtype=np.float32) + 0.5) * np.float32(px)
        rr, cc = np.meshgrid(lr, lr, indexing="ij")
        _, edge, _ = worley(rng, rr, cc, m * px, cell)
        wall = rng.uniform(0.1, 0.5)
        cells = np.clip(edge / wall, 0.0, 1.0) ** 0.7
        cover = rng.uniform(0.4, 1.0)
        deck = np.clip((f[1] - np.quantile(f[1], 1 - cover)) / rng.uniform(0.2, 1.0) + 0.2, 0, 1)
        tau0 = np.exp(rng.uniform(np.log(3.0), np.log(30.0)))
        low = (tau0 * cells * np.exp(0.3 * f[0]) * deck).astype(np.float32)
        tau, tau_sh = grid.sample(low), grid.sample(low, shift)
        amp = 0.2
    elif kind == "stratus":
        height = rng.uniform(0.2, 2.0)
        shift = _shift_px(grid, height, sun_elev, sun_az)
        f = spectral_fields(
            rng,
            m,
            px,
            [FieldSpec(3.5, rng.uniform(2e3, 2e4)), FieldSpec(4.0, rng.uniform(1e4, 5e4))],
        )
        cover = rng.uniform(0.5, 1.0)
        soft = rng.uniform(0.1, 1.0)
        deck = np.clip((f[1] - np.quantile(f[1], 1 - cover)) / soft, 0, 1)
        tau0 = np.exp(rng.uniform(np.log(1.5), np.log(40.0)))
        low = (tau0 * np.exp(rng.uniform(0.1, 0.4) * f[0]) * deck).astype(np.float32)
        tau, tau_sh = grid.sample(low), grid.sample(low, shift)
        amp = 0.1
    elif kind == "cirrus":
        height = rng.uniform(7.0, 13.0)
        shift = _shift_px(grid, height, sun_elev, sun_az)
        f = spectral_fields(
            rng,
            m,
            px,
            [
                FieldSpec(
                    rng.uniform(2.5, 3.5),
                    rng.uniform(2e3, 2e4),
                    rng.uniform(3.0, 10.0),
                    rng.uniform(0, np.pi),
                ),
                FieldSpec(4.0, rng.uniform(5e3, 3e4)),
                FieldSpec(4.0, rng.uniform(5e3, 3e4)),
            ],
        )
        cover = rng.uniform(0.3, 1.0)
        power = rng.uniform(1.5, 3.0)
        peak = np.float32(np.exp(rng.uniform(np.log(0.5), np.log(8.0))))
        warp = np.float32(rng.uniform(0.02, 0.12) * grid.n)
        # warp on the low-resolution grid (the warp is smooth), then sample like the others
        lr = np.arange(m, dtype=np.float32)
        rr, cc = np.meshgrid(lr, lr, indexing="ij")
        coarse = Grid(m, m, px)
        wscale = np.float32(warp * m / grid.n)
        warped = coarse.sample_at(f[0], rr + wscale * f[1], cc + wscale * f[2])
        tau, tau_sh = _thresholded(grid, warped, cover, shift, power, peak)
        amp = 0.3
    else:
        raise ValueError(f"unknown cloud type {kind!r}")
    mod, mod_sh = _texture(tex, shift, amp)
    gain = rng.uniform(*gain_range) * (0.9 if phase == "ice" else 1.0)
    return CloudLayer(
        kind=kind,
        phase=phase,
        height_km=float(height),
        gain=float(gain),
        swir_kappa=float(rng.uniform(0.7, 1.4)),
        tau=(tau * mod).astype(np.float32),
        tau_shadow=(tau_sh * mod_sh).astype(np.float32),
    )


#: Per cloud type: range of the top's relief at tau 20 (m) and of the weight of direct sunlight
#: in its illumination (the rest is diffuse: skylight and light scattered inside the cloud).
#: Cumulus are about as tall as wide (0.3-1.5 km), stratiform decks far flatter; cirrus none.
RELIEF = {
    "cumulus": ((300.0, 1500.0), (0.3, 0.7)),
    "stratocumulus": ((100.0, 400.0), (0.2, 0.5)),
    "stratus": ((20.0, 100.0), (0.1, 0.3)),
}


def top_illumination(
    rng: np.random.Generator,
    kind: str,
    tau: NDArray[np.float32],
    gsd_m: float,
    sun_elev: float,
    sun_az: float,
) -> NDArray[np.float32] | None:
    """Factor on a layer's reflected light from its top's slopes facing or turned from the sun.

    Real cumuliform clouds are 3-D: their sunward sides are brighter and their far sides
    darker than a flat cloud of the same optical thickness (measured on the dev scenes: labelled
    cloud 1-2 px inside its edge is ~25-35 % brighter on the sun side). The top's height grows
    as ``tau**0.6`` (adiabatic clouds: tau ~ H**(5/3)); the factor is ``1 - w + w cos(i) /
    sin(elevation)`` (Lambertian, capped at 2) with ``w`` the share of direct light. None for
    cirrus (no relief to speak of).
    """
    if kind not in RELIEF:
        return None
    (h_lo, h_hi), (w_lo, w_hi) = RELIEF[kind]
    relief = rng.uniform(h_lo, h_hi)
    w = np.float32(rng.uniform(w_lo, w_hi))
    height = np.float32(relief) * (np.maximum(tau, 0.0) / np.float32(20.0)) ** np.float32(0.6)
    d_row, d_col = np.gradient(height / np.float32(gsd_m))
    # image rows grow southwards, so d/dnorth = -d/drow
    cos_i = sun_incidence(d_col, -d_row, sun_elev, sun_az)
    direct = np.clip(cos_i / max(np.sin(sun_elev), 0.25), 0.0, 2.0)
    return ((1.0 - w) + w * direct).astype(np.float32)
