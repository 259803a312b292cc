"""Synthetic scenes: configuration, the band-independent scene, and rendering for a band set.

``SceneGenerator.sample(bandset, index)`` = ``render(scene(index), bandset)``. The scene (ground,
clouds, shadows, atmosphere state, labels) is drawn from a generator seeded by
``(seed, index)`` only, so sample ``i`` is the same physical scene whatever the band set and
whatever order samples are asked for (DataLoader workers): the same patch can be seen by
Landsat 7 and by Sentinel-2 with an identical label map. Sensor effects (noise, blur,
saturation, quantisation) come from streams seeded by ``(seed, index)`` and the band set.

Image formation in band space (per reflective band b, per pixel)::

    Rs   = bright * ((1 - f) E[p] + f E[q]) * (D_b + (1 - D_b) * terrain * Tsun)
    R    = P_b(cloud) + t_b(z2) Rc2 + Tc2^2 t_b(z1) Rc1
           + t_b(0) Rs Tc1 Tc2 / (1 - Rs Rc1)      (lower cloud lit through the upper one)
    Rc   = gain * shape_b * F(tau) * I,     F = tau(1-g) / (2 + tau(1-g)),  g = 0.85
    Tc   = (1 - F(tau)) / (1 + a_b tau),  a_b = 0.5 (1 - shape_b)   (absorbing SWIR)
    Tsun = 1 - F(tau_shadow / mu_sun)   (cloud shadow: tau sampled towards the sun)

``E`` are endmember spectra integrated over the band (linear, done once per scene), ``D_b`` the
diffuse-sky fraction (~lambda^-2), ``t_b(z)`` gas transmittance above height z (water vapour
with a 2 km scale height, so 1375 nm sees only high clouds) times the Rayleigh transmittance,
``I`` the cloud top's illumination (1 for a flat top; physics 1.2: sunlit and shaded slopes,
:func:`~xsensei.training.synthetic.clouds.top_illumination`), ``P_b`` Rayleigh (single
scattering, ``tau_R P / (4 mu_sun)``, ~0.1 at 443 nm) plus aerosol path reflectance, reduced
above clouds. The multiple-reflection product ``Rs Rc`` is capped at
:data:`MAX_MULTIPLE_REFLECTION`. Thermal bands are brightness temperature:
surface temperature per material, cloud tops from a 6.5 K/km lapse rate, cloud emissivity
``1 - exp(-tau/2)``, a layered absorbing atmosphere, normalised like the inference engine does.

Labels (see :class:`SyntheticConfig`): 0 clear, 1 thick cloud, 2 thin cloud, 3 cloud shadow.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from xsensei.training._config import tuplify
from xsensei.training.synthetic.bands import BandSet, band_weights
from xsensei.training.synthetic.clouds import (
    CloudLayer,
    make_cloud_layer,
    top_illumination,
    two_stream_reflectance,
)
from xsensei.training.synthetic.fields import Grid, Textures, bank_normals
from xsensei.training.synthetic.layouts import LAYOUTS, Surface, make_surface
from xsensei.training.synthetic.spectra import (
    GRID_NM,
    SURFACE_CLASSES,
    cloud_shape,
    gas_optical_depth,
    load_library,
    thermal_absorption,
)

__all__ = [
    "LABELS",
    "Sample",
    "Scene",
    "SceneGenerator",
    "SyntheticConfig",
]

#: Label codes of the generated masks (same order as ``xsensei.nn.model.CLASSES_4``).
LABELS = ("clear", "thick_cloud", "thin_cloud", "cloud_shadow")

#: Physics 1.3: per cloud type, the range of the share of a layer's diffusely transmitted
#: sunlight that reaches its geometric shadow, about the (cosine-weighted) part of the
#: shadow's sky the cloud base covers: ~0.05-0.3 under a cumulus as wide as it is high, most
#: of it under a stratus deck or a cirrus sheet.
SHADOW_DIFFUSE_SHARE: dict[str, tuple[float, float]] = {
    "cumulus": (0.05, 0.3),
    "stratocumulus": (0.2, 0.5),
    "stratus": (0.4, 0.8),
    "cirrus": (0.4, 0.8),
}
_LAPSE_K_PER_KM = 6.5
_TROPOPAUSE_KM = 11.0
#: Upper bound of Rs * Rc in the surface <-> cloud multiple-reflection term 1 / (1 - Rs Rc).
MAX_MULTIPLE_REFLECTION = 0.8
#: Image-formation versions :class:`SyntheticConfig` can select (``physics``).
PHYSICS_VERSIONS = ("1.0", "1.1", "1.2", "1.3")
#: The versions that give cumuliform layers 3-D tops (and read ``relief_prob``).
RELIEF_PHYSICS = ("1.2", "1.3")


@dataclass(frozen=True)
class SyntheticConfig:
    """Every knob of the generator. Defaults are the project's training distribution.

    Label definition (the project's meaning of "thin cloud"): with ``tau`` the total cloud
    optical thickness at 550 nm in a pixel (all layers) and ``tau_ice`` that of ice cloud,

    - thick cloud (1): ``tau >= tau_thick`` (8): opaque, surface structure hidden;
    - thin cloud (2): not thick and (``tau >= tau_thin`` (2) or ``tau_ice >= tau_thin_ice`` (1)):
      semi-transparent cloud that still adds >~0.05-0.1 visible reflectance (cirrus counts from
      tau 1, where the 1375 nm band and its fibrous texture show it);
    - cloud shadow (3): not cloud, and cloud shadow darkens direct+diffuse illumination by at
      least ``shadow_darkening`` (30 %) at 550 nm;
    - clear (0): everything else, including haze-like cloud with ``tau < tau_thin``.

    Labelling tau >= 1 water cloud as cloud made bright soils read as thin cloud in a
    feasibility test; tau >= 2 worked better. Change these to move the boundary.

    ``physics`` selects the image formation, so that an old recipe still draws its data:
    "1.1" (default) single-scattering Rayleigh path and transmittance, capped multiple
    reflection; "1.0" (the version-1 models' generator) a weak ``0.02 x (450/lambda)^4``
    Rayleigh path without transmittance and an uncapped ``1 / (1 - Rs Rc)``. Its
    ``rayleigh_range`` was (0.5, 1.5): set it too, the default is 1.1's. "1.2" is 1.1 plus
    3-D cloud tops (sunward slopes brighter, far slopes darker; same scenes and labels), opt-in;
    its ``relief_prob`` < 1 leaves that share of scenes flat-topped, exactly as 1.1 draws them
    (0.5 = an even mix of 1.1 and 1.2 scenes). "1.3" is 1.2 with darker cloud shadows: up to 1.2
    the sunlight a cloud transmits *diffusely* (``1 - F(tau / mu)``, ~57 % at tau / mu = 10) all
    lit its geometric shadow, but it leaves the cloud base over a whole hemisphere, and only the
    share the cloud base covers of the shadow's sky comes back (small under cumulus, most of it
    under a stratus deck): ``Tsun = exp(-tau / mu) + k (1 - F(tau / mu) - exp(-tau / mu))`` per
    layer, ``k`` drawn per layer (:data:`SHADOW_DIFFUSE_SHARE`). Same scenes otherwise; shadow
    labels follow from the darker shadows.
    """

    size: int = 256
    gsd_range_m: tuple[float, float] = (10.0, 60.0)  # log-uniform
    tau_thin: float = 2.0
    tau_thin_ice: float = 1.0
    tau_thick: float = 8.0
    shadow_darkening: float = 0.3
    noise_range: tuple[float, float] = (0.003, 0.015)  # Gaussian sigma, reflectance
    thermal_noise_k: tuple[float, float] = (0.1, 0.6)  # NEdT range, K
    layout_weights: tuple[tuple[str, float], ...] = (
        ("natural", 0.24),
        ("agriculture", 0.2),
        ("urban", 0.06),
        ("mountain", 0.16),
        ("desert", 0.1),
        ("ocean", 0.12),
        ("polar", 0.12),
    )
    low_cloud_weights: tuple[tuple[str, float], ...] = (
        ("none", 0.3),
        ("cumulus", 0.32),
        ("stratocumulus", 0.16),
        ("stratus", 0.22),
    )
    cirrus_prob: float = 0.3
    cloud_gain_range: tuple[float, float] = (0.75, 1.1)
    sun_elevation_range_deg: tuple[float, float] = (15.0, 75.0)
    water_vapour_range_cm: tuple[float, float] = (0.3, 5.0)
    aerosol_range: tuple[float, float] = (0.0, 0.04)  # path reflectance at 550 nm
    rayleigh_range: tuple[float, float] = (0.9, 1.4)  # Rayleigh phase function P(Theta)
    diffuse_range: tuple[float, float] = (0.1, 0.3)  # diffuse-sky fraction at 550 nm
    blur_prob: float = 0.5
    blur_sigma_range_px: tuple[float, float] = (0.3, 0.7)
    saturation_prob: float = 0.1  # Landsat-7-like 8-bit clipping at a random level
    saturation_range: tuple[float, float] = (0.35, 1.0)
    quantisation_step: float = 1e-4  # reflectance step otherwise (Sentinel-2 L1C: 1/10000)
    shadows: bool = True
    field_resolution: int = 128  # low-resolution grid of the spectral fields
    library: str = "auto"  # "auto" | "earthlib" | "parametric"
    physics: str = "1.1"  # image-formation version, see PHYSICS_VERSIONS
    relief_prob: float = 1.0  # physics 1.2: share of scenes with 3-D tops (the rest flat, as 1.1)

    def __post_init__(self) -> None:
        if self.physics not in PHYSICS_VERSIONS:
            raise ValueError(
                f"unknown physics version {self.physics!r}; choose from {PHYSICS_VERSIONS}")
        if not 0.0 <= self.relief_prob <= 1.0:
            raise ValueError(f"relief_prob must lie in [0, 1], got {self.relief_prob}")
        if self.relief_prob != 1.0 and self.physics not in RELIEF_PHYSICS:
            raise ValueError(
                "relief_prob only applies to physics '1.2' and '1.3' (3-D cloud tops); set "
                "physics='1.2' or leave relief_prob at 1.0")
        if not 0 < self.tau_thin <= self.tau_thick:
            raise ValueError("need 0 < tau_thin <= tau_thick")
        if not 0 < self.tau_thin_ice <= self.tau_thick:
            raise ValueError("need 0 < tau_thin_ice <= tau_thick")
        if self.size < 8:
            raise ValueError("size must be >= 8")
        unknown = [k for k, _ in self.layout_weights if k not in LAYOUTS]
        if unknown:
            raise ValueError(f"unknown layouts {unknown}; choose from {LAYOUTS}")

    @classmethod
    def from_record(cls, generator: dict[str, Any]) -> SyntheticConfig:
        """The config a checkpoint's ``provenance["generator"]`` records, to draw its training
        distribution again (JSON lists become tuples). Records written before ``physics``
        existed are physics 1.1 if their version says so, else 1.0."""
        config = {k: tuplify(v) for k, v in (generator.get("config") or {}).items()}
        config.setdefault("physics", "1.1" if generator.get("version") == "1.1" else "1.0")
        return cls(**config)


@dataclass
class Scene:
    """Band-independent physical scene: render it with any :class:`BandSet`."""

    seed: int
    index: int
    size: int
    gsd_m: float
    sun_elevation: float  # radians
    sun_azimuth: float  # radians, clockwise from north (image up)
    surface: Surface
    layers: list[CloudLayer]
    sun_transmission: NDArray[np.float32]  # cloud-shadow direct transmission, (n, n)
    atmosphere: dict[str, float]
    label: NDArray[np.uint8]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def tau(self) -> NDArray[np.float32]:
        """Total cloud optical thickness per pixel."""
        total = np.zeros((self.size, self.size), dtype=np.float32)
        for layer in self.layers:
            total += layer.tau
        return total

    @property
    def tau_ice(self) -> NDArray[np.float32]:
        """Optical thickness of ice (cirrus) cloud per pixel."""
        total = np.zeros((self.size, self.size), dtype=np.float32)
        for layer in self.layers:
            if layer.phase == "ice":
                total += layer.tau
        return total


@dataclass
class Sample:
    """One training patch: the image in model units, its label map, bands and provenance.

    ``image`` is (N, H, W) float32: TOA reflectance for reflective bands, brightness
    temperature normalised with the band set's BT range for thermal bands (the units the
    inference engine feeds the model). ``label`` is (H, W) uint8 (codes of :data:`LABELS`).
    """

    image: NDArray[np.float32]
    label: NDArray[np.uint8]
    bandset: BandSet
    meta: dict[str, Any]


def _weighted_choice(rng: np.random.Generator, pairs: tuple[tuple[str, float], ...]) -> str:
    total = sum(w for _, w in pairs)
    x = rng.random() * total
    for name, w in pairs:
        x -= w
        if x < 0:
            return name
    return pairs[-1][0]


class SceneGenerator:
    """Deterministic synthetic scenes: ``sample(bandset, index)`` depends on (seed, index, bands).

    The physical scene and its labels depend on (seed, index) only; the band set changes only
    how it is seen. Safe to use from several DataLoader workers: nothing changes between calls
    (the spectral library, noise/texture banks and band weights are read-only caches).
    """

    def __init__(self, config: SyntheticConfig | None = None, seed: int = 0) -> None:
        self.config = config if config is not None else SyntheticConfig()
        self.seed = int(seed)
        self.library = load_library(self.config.library)

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers reload the (cached, read-only) library instead of unpickling 6 MB
        return {"config": self.config, "seed": self.seed}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"], state["seed"])

    # ---------------------------------------------------------------------------- scene
    def _has_relief(self, index: int) -> bool:
        """Whether scene ``index`` gets 3-D tops (physics 1.2), from a stream of its own so that
        ``relief_prob`` 1 draws nothing and keeps 1.2's scenes bit for bit."""
        p = self.config.relief_prob
        if p >= 1.0:
            return True
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(index), 4]))
        return bool(rng.random() < p)

    def scene(self, index: int) -> Scene:
        """The physical scene ``index`` (ground, clouds, shadows, atmosphere, labels)."""
        cfg = self.config
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(index), 0]))
        n = cfg.size
        gsd = float(np.exp(rng.uniform(*np.log(cfg.gsd_range_m))))
        m = min(cfg.field_resolution, n)
        grid = Grid(n, m, gsd)
        elev = np.deg2rad(rng.uniform(*cfg.sun_elevation_range_deg))
        az = rng.uniform(0.0, 2.0 * np.pi)
        layout = _weighted_choice(rng, cfg.layout_weights)
        textures = Textures(n)
        picks = rng.choice(textures.bank.shape[0], size=3, replace=False)
        offsets = [tuple(int(v) for v in rng.integers(0, textures.size, size=2)) for _ in picks]
        tex = np.stack([textures.crop(int(k), o) for k, o in zip(picks[:2], offsets, strict=False)])
        surface = make_surface(rng, grid, self.library, layout, elev, az, tex)

        def cloud_tex(shift: tuple[float, float]) -> NDArray[np.float32]:
            return textures.crop(int(picks[2]), offsets[2], shift)

        kinds = []
        low = _weighted_choice(rng, cfg.low_cloud_weights)
        if low != "none":
            kinds.append(low)
        if rng.random() < cfg.cirrus_prob:
            kinds.append("cirrus")
        layers = [
            make_cloud_layer(rng, k, grid, elev, az, cloud_tex, cfg.cloud_gain_range) for k in kinds
        ]
        layers.sort(key=lambda layer: layer.height_km)
        if cfg.physics in RELIEF_PHYSICS and self._has_relief(index):
            # 3-D tops, from a stream of their own: 1.1's scene otherwise
            rng3d = np.random.default_rng(np.random.SeedSequence([self.seed, int(index), 3]))
            for layer in layers:
                layer.illumination = top_illumination(rng3d, layer.kind, layer.tau, gsd, elev, az)

        # column water vapour: log-uniform, scaled ~6 %/K with the scene's surface temperature
        # (Clausius-Clapeyron): polar scenes are dry, tropical ones humid
        wv_lo, wv_hi = cfg.water_vapour_range_cm
        wv = np.exp(rng.uniform(np.log(wv_lo), np.log(wv_hi)))
        wv = float(np.clip(wv * np.exp(0.06 * (surface.base_temp_k - 290.0)), wv_lo, wv_hi))
        atmosphere = {
            "water_vapour_cm": wv,
            "aerosol_550": float(rng.uniform(*cfg.aerosol_range)),
            "aerosol_angstrom": float(rng.uniform(0.5, 2.0)),
            "rayleigh_scale": float(rng.uniform(*cfg.rayleigh_range)),
            "diffuse_550": float(rng.uniform(*cfg.diffuse_range)),
            "air_temperature_offset_k": float(rng.uniform(0.0, 8.0)),
            "shadow_cooling_k": float(rng.uniform(0.0, 6.0)),
        }
        mu_sun = np.float32(np.sin(elev))
        if layers and cfg.shadows:
            if cfg.physics == "1.3":
                sun_t = self._shadow_transmission(index, layers, mu_sun)
            else:
                tau_sh = sum(layer.tau_shadow for layer in layers)
                sun_t = (1.0 - two_stream_reflectance(tau_sh / mu_sun)).astype(np.float32)
        else:
            sun_t = np.ones((n, n), dtype=np.float32)

        tau = np.zeros((n, n), dtype=np.float32)
        tau_ice = np.zeros((n, n), dtype=np.float32)
        for layer in layers:
            tau += layer.tau
            if layer.phase == "ice":
                tau_ice += layer.tau
        label = self._labels(tau, tau_ice, sun_t, atmosphere["diffuse_550"])

        classes = surface.class_map()
        counts = np.bincount(classes.ravel(), minlength=len(SURFACE_CLASSES)) / classes.size
        meta = {
            "seed": self.seed,
            "index": int(index),
            "gsd_m": gsd,
            "size": n,
            "sun_elevation_deg": float(np.rad2deg(elev)),
            "sun_azimuth_deg": float(np.rad2deg(az)),
            "layout": surface.layout,
            "biome": surface.biome,
            "overlays": list(surface.overlays),
            "surface_types": {
                SURFACE_CLASSES[i]: round(float(c), 4) for i, c in enumerate(counts) if c > 0
            },
            "clouds": [
                {
                    "type": layer.kind,
                    "phase": layer.phase,
                    "height_km": round(layer.height_km, 3),
                    "tau_max": round(float(layer.tau.max()), 3),
                    "cover_tau_thin": round(float((layer.tau >= cfg.tau_thin).mean()), 4),
                }
                for layer in layers
            ],
            "atmosphere": atmosphere,
            "label_fractions": {
                name: round(float((label == i).mean()), 4) for i, name in enumerate(LABELS)
            },
            "spectral_library": self.library.source,
        }
        return Scene(
            seed=self.seed,
            index=int(index),
            size=n,
            gsd_m=gsd,
            sun_elevation=float(elev),
            sun_azimuth=float(az),
            surface=surface,
            layers=layers,
            sun_transmission=sun_t,
            atmosphere=atmosphere,
            label=label,
            meta=meta,
        )

    def _shadow_transmission(self, index: int, layers: list[CloudLayer], mu_sun: np.float32
                             ) -> NDArray[np.float32]:
        """Physics 1.3: sunlight reaching each pixel through the layers on its path to the sun,
        the direct beam plus the share ``k`` of the diffusely transmitted light that the cloud
        base returns to its shadow; ``k`` per layer from a stream of its own (1.2's scene
        otherwise)."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(index), 5]))
        sun_t = np.ones_like(layers[0].tau_shadow, dtype=np.float32)
        for layer in layers:
            k = np.float32(rng.uniform(*SHADOW_DIFFUSE_SHARE[layer.kind]))
            slant = layer.tau_shadow / mu_sun
            direct = np.exp(-slant)
            diffuse = 1.0 - two_stream_reflectance(slant) - direct
            sun_t *= (direct + k * np.maximum(diffuse, 0.0)).astype(np.float32)
        return sun_t

    def _labels(
        self, tau: NDArray, tau_ice: NDArray, sun_t: NDArray, diffuse: float
    ) -> NDArray[np.uint8]:
        cfg = self.config
        label = np.zeros(tau.shape, dtype=np.uint8)
        darkening = (1.0 - diffuse) * (1.0 - sun_t)
        label[darkening >= cfg.shadow_darkening] = 3
        thin = (tau >= cfg.tau_thin) | (tau_ice >= cfg.tau_thin_ice)
        label[thin] = 2
        label[tau >= cfg.tau_thick] = 1
        return label

    # ---------------------------------------------------------------------------- render
    def sample(self, bandset: BandSet, index: int) -> Sample:
        """Scene ``index`` seen through ``bandset`` (deterministic in seed, index, bands)."""
        return self.render(self.scene(index), bandset)

    def render(self, scene: Scene, bandset: BandSet) -> Sample:
        """Form the image of ``scene`` in ``bandset``'s bands (see module docstring)."""
        cfg = self.config
        n = scene.size
        rng = np.random.default_rng(np.random.SeedSequence([scene.seed, scene.index, 1]))
        noise_sigma = float(rng.uniform(*cfg.noise_range))
        nedt = float(rng.uniform(*cfg.thermal_noise_k))
        blur = float(rng.uniform(*cfg.blur_sigma_range_px)) if rng.random() < cfg.blur_prob else 0
        saturate = rng.random() < cfg.saturation_prob
        # per-band draws (noise realisation, gains, saturation levels) come from a stream keyed
        # on the scene and the band set: deterministic, and independent of call order
        band_seed = zlib.crc32(repr(bandset.key).encode())
        brng = np.random.default_rng(
            np.random.SeedSequence([scene.seed, scene.index, 2, band_seed])
        )

        thermal = bandset.is_thermal
        refl_idx = np.flatnonzero(~thermal)
        therm_idx = np.flatnonzero(thermal)
        weights, sources = band_weights(bandset)
        if refl_idx.size == len(bandset):
            image = self._reflective(scene, weights)
        else:
            image = np.empty((len(bandset), n, n), dtype=np.float32)
        if refl_idx.size and refl_idx.size < len(bandset):
            image[refl_idx] = self._reflective(scene, weights[refl_idx])
        if therm_idx.size:
            image[therm_idx] = self._thermal(scene, bandset, therm_idx)
        if blur > 0:
            image = _blur(image, blur)
        sat_levels = None
        if refl_idx.size:
            sigma = (noise_sigma * brng.uniform(0.7, 1.3, size=refl_idx.size)).astype(np.float32)
            refl = image if refl_idx.size == len(bandset) else image[refl_idx]
            _add_noise(refl, sigma, brng)
            if saturate:
                sat_levels = brng.uniform(*cfg.saturation_range, size=refl_idx.size)
                step = (sat_levels / 255.0).astype(np.float32)[:, None, None]
                np.clip(refl, 0.0, sat_levels.astype(np.float32)[:, None, None], out=refl)
                refl /= step
                np.rint(refl, out=refl)
                refl *= step
            elif cfg.quantisation_step > 0:
                q = np.float32(cfg.quantisation_step)
                refl /= q
                np.rint(refl, out=refl)
                refl *= q
            if refl is not image:
                image[refl_idx] = refl
        if therm_idx.size:
            span = bandset.bt_range_k[therm_idx, 1] - bandset.bt_range_k[therm_idx, 0]
            sig = (nedt / span).astype(np.float32)
            therm = image[therm_idx]
            _add_noise(therm, sig, brng)
            image[therm_idx] = therm
        meta = dict(scene.meta)
        meta.update(
            {
                "noise_sigma": noise_sigma,
                "nedt_k": nedt,
                "blur_sigma_px": blur,
                "saturation_levels": None if sat_levels is None else sat_levels.tolist(),
                "band_response": sources,
            }
        )
        return Sample(image=image, label=scene.label.copy(), bandset=bandset, meta=meta)

    # ------------------------------------------------------------------ reflective bands
    def _reflective(self, scene: Scene, weights: NDArray[np.float64]) -> NDArray[np.float32]:
        atm = scene.atmosphere
        surf = scene.surface
        nb = weights.shape[0]
        centre = weights @ GRID_NM  # effective (irradiance-weighted) band centre, nm
        k_h2o, k_mixed = gas_optical_depth()
        airmass = 1.0 / np.sin(scene.sun_elevation) + 1.0

        def gas_t(z_km: float) -> NDArray[np.float32]:
            depth = k_h2o * atm["water_vapour_cm"] * np.exp(-z_km / 2.0)
            depth = depth + k_mixed * np.exp(-z_km / 8.0)
            return (weights @ np.exp(-depth * airmass)).astype(np.float32)

        def col(v: NDArray) -> NDArray[np.float32]:
            return np.asarray(v, dtype=np.float32)[:, None, None]

        # Rayleigh scattering, single scattering for a nadir view: optical depth
        # 0.0088 lambda[um]^-4.05 (0.24 at 443 nm, 0.045 at 665 nm), path reflectance
        # tau P / (4 mu_s) (~0.1 at 443 nm: what makes real clear land bluish-bright at TOA),
        # surface seen through exp(-tau (1/mu_s + 1) / 2) (half the scattered light goes on)
        legacy = self.config.physics == "1.0"
        if legacy:  # version 1.0: weak power-law path, no Rayleigh transmittance
            rayleigh = 0.02 * atm["rayleigh_scale"] * (450.0 / centre) ** 4
            t0 = gas_t(0.0)
        else:
            mu_s = max(float(np.sin(scene.sun_elevation)), 0.3)
            tau_r = 0.0088 * (centre / 1000.0) ** -4.05
            rayleigh = tau_r * atm["rayleigh_scale"] / (4.0 * mu_s)
            t_r = np.exp(-0.5 * tau_r * (1.0 / mu_s + 1.0))
            t0 = gas_t(0.0) * t_r.astype(np.float32)

        # surface: endmembers integrated once (gas transmittance folded in), gathered per pixel
        ends = (surf.spectra.astype(np.float64) @ weights.T).T.astype(np.float32)  # (nb, K)
        ends_t = ends * t0[:, None]
        rs = np.take(ends_t, surf.primary, axis=1)
        eq = np.take(ends_t, surf.secondary, axis=1)
        eq -= rs
        eq *= surf.frac
        rs += eq
        del eq
        rs *= surf.bright
        diffuse = np.clip(atm["diffuse_550"] * (550.0 / centre) ** 2, 0.03, 0.8)
        sun = scene.sun_transmission if scene.layers else None
        if surf.terrain is not None:
            sun = surf.terrain if sun is None else sun * surf.terrain
        if sun is not None:
            illum = col(1.0 - diffuse) * sun
            illum += col(diffuse)
            rs *= illum
            del illum
        path = rayleigh + atm["aerosol_550"] * (550.0 / centre) ** atm["aerosol_angstrom"]
        if not scene.layers:
            rs += col(path)
            return rs

        # clouds, lowest first: surface seen up through every layer, each layer through those
        # above it (both ways); multiple reflection surface <-> lowest layer only. Per band on
        # (n, n) maps shared by all bands: non-absorbing bands skip the absorption term.
        shapes = {p: weights @ cloud_shape(p) for p in ("water", "ice")}
        out = rs
        path_mod = np.ones((scene.size, scene.size), dtype=np.float32)
        tmp = np.empty_like(path_mod)
        tmp2 = np.empty_like(path_mod)
        prev_ff, prev_refl = path_mod, np.zeros(nb, dtype=np.float32)
        for k, layer in enumerate(scene.layers):
            shape = np.clip(1.0 - layer.swir_kappa * (1.0 - shapes[layer.phase]), 0.02, 1.2)
            absorb = 0.5 * np.clip(1.0 - shape, 0.0, None)
            refl = (shape * layer.gain * gas_t(layer.height_km)).astype(np.float32)
            ff = two_stream_reflectance(layer.tau).astype(np.float32)
            trans = 1.0 - ff
            # reflected light: the top's sunlit / shaded slopes (1.2); transmission unchanged
            lit = ff if layer.illumination is None else ff * layer.illumination
            for b in range(nb):
                band = out[b]
                if k == 0:  # 1 / (1 - Rs Rc): surface <-> cloud base multiple reflection
                    np.multiply(band, ff, out=tmp)
                    tmp *= np.float32(shape[b] * layer.gain)
                    # Rs (sunlit slopes, snow) and Rc (gain, shape > 1) can each pass 1: cap
                    # the product as albedos <= ~0.9 would, or the term explodes to +-1e4
                    # (version 1.0 did not)
                    if not legacy:
                        np.minimum(tmp, np.float32(MAX_MULTIPLE_REFLECTION), out=tmp)
                    np.subtract(np.float32(1.0), tmp, out=tmp)
                    band /= tmp
                if absorb[b] > 1e-3:
                    np.multiply(layer.tau, np.float32(absorb[b]), out=tmp)
                    tmp += 1.0
                    np.divide(trans, tmp, out=tmp)
                    t_band = tmp
                else:
                    t_band = trans
                band *= t_band
                if k > 0:  # the lower cloud is also lit through this one: its part x t_band^2
                    np.multiply(prev_ff, prev_refl[b], out=tmp2)
                    tmp2 *= t_band
                    tmp2 *= 1.0 - t_band
                    band -= tmp2
                np.multiply(lit, refl[b], out=tmp)
                band += tmp
            prev_ff, prev_refl = lit, refl
            path_mod -= ff * np.float32(1.0 - np.exp(-layer.height_km / 4.0))
        out += col(path) * np.clip(path_mod, 0.1, 1.0)
        return out

    # ------------------------------------------------------------------ thermal bands
    def _thermal(
        self, scene: Scene, bandset: BandSet, idx: NDArray[np.intp]
    ) -> NDArray[np.float32]:
        atm = scene.atmosphere
        surf = scene.surface
        n = scene.size
        t_p = surf.temps_k[surf.primary]
        t_q = surf.temps_k[surf.secondary]
        t_s = t_p + surf.frac * (t_q - t_p)
        t_base = float(t_s[::8, ::8].mean())
        t_s = t_s + np.float32(1.5) * (surf.bright - 1.0) * 10.0
        if surf.elevation_m is not None:
            t_s = t_s - np.float32(_LAPSE_K_PER_KM / 1000.0) * surf.elevation_m
        t_s = t_s - np.float32(atm["shadow_cooling_k"]) * (1.0 - scene.sun_transmission)
        t_air0 = t_base - atm["air_temperature_offset_k"]

        def t_air(z: float) -> float:
            return t_air0 - _LAPSE_K_PER_KM * min(z, _TROPOPAUSE_KM)

        emissivity = [(1.0 - np.exp(-layer.tau / 2.0)).astype(np.float32) for layer in scene.layers]
        r37 = surf.r37[surf.primary] * (1 - surf.frac) + surf.r37[surf.secondary] * surf.frac
        for layer in scene.layers:
            ff = two_stream_reflectance(layer.tau)
            r37 = r37 * (1.0 - ff) + ff * (0.12 if layer.phase == "water" else 0.05)
        out = np.empty((idx.size, n, n), dtype=np.float32)
        mu_sun = float(np.sin(scene.sun_elevation))
        for j, b in enumerate(idx):
            centre = float(bandset.wavelengths_nm[b, 1])
            depth0, height = thermal_absorption(centre)
            if height < 5.0:  # water-vapour absorber
                depth0 *= atm["water_vapour_cm"] / 2.0

            def depth(z: float, d0: float = depth0, h: float = height) -> float:
                return d0 * np.exp(-z / h)

            def emit_temp(z_lo: float, z_hi: float, d0: float = depth0, h: float = height):
                z_star = max(z_lo, h * np.log(max(d0, 1e-9))) + 0.5 * h
                return t_air(float(np.clip(z_star, z_lo, z_hi)))

            bt = t_s.astype(np.float32, copy=True)
            z_lo = 0.0
            for layer, e in zip(scene.layers, emissivity, strict=True):
                z_hi = layer.height_km
                t = float(np.exp(-(depth(z_lo) - depth(z_hi))))
                bt = bt * np.float32(t) + np.float32((1 - t) * emit_temp(z_lo, z_hi))
                bt += e * (np.float32(t_air(z_hi)) - bt)
                z_lo = z_hi
            t = float(np.exp(-depth(z_lo)))
            bt = bt * np.float32(t) + np.float32((1 - t) * emit_temp(z_lo, 30.0))
            if centre < 5000.0:  # reflected sunlight in the mid-infrared
                bt = bt + np.float32(200.0 * mu_sun) * r37
            lo, hi = bandset.bt_range_k[b]
            out[j] = (bt - np.float32(lo)) / np.float32(hi - lo)
        return out


def _add_noise(image: NDArray[np.float32], sigma: NDArray, rng: np.random.Generator) -> None:
    """In place: Gaussian noise of per-band ``sigma``, read from the noise bank."""
    tmp = np.empty(image.shape[1:], dtype=np.float32)
    for band, sig in zip(image, sigma, strict=True):
        np.multiply(bank_normals(rng, tmp.shape), np.float32(sig), out=tmp)
        band += tmp


def _blur(image: NDArray[np.float32], sigma: float) -> NDArray[np.float32]:
    """In place: separable 3-tap point spread ``[w, 1-2w, w]`` (variance 2w per axis).

    Border rows and columns are left sharp (one pixel; cheaper than padding).
    """
    w = np.float32(min(sigma * sigma / 2.0, 0.3))
    for axis in (1, 2):
        lo = [slice(None)] * 3
        mid = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], mid[axis], hi[axis] = slice(None, -2), slice(1, -1), slice(2, None)
        lap = image[tuple(lo)] + image[tuple(hi)]
        centre = image[tuple(mid)]
        lap -= centre
        lap -= centre
        lap *= w
        centre += lap
    return image
