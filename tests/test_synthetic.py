"""Synthetic scene generator: determinism, sensor independence and physical sanity (numbers).

Physical checks aggregate pixels over a fixed set of small scenes; thresholds are the ones a
remote-sensing reader would expect of real top-of-atmosphere data (thick cloud > 0.3 in the
visible, vegetation NIR/red > 3, water < 0.05 in the NIR, snow dark at 1.6 um, 1375 nm dark over
the ground). "Clear reference" pixels are labelled clear, cloud- and shadow-free, on flat
ground and a single pure material.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from xsensei.training.synthetic import (
    LABELS,
    BandSet,
    SceneGenerator,
    SyntheticConfig,
    band_weights,
    random_bandset,
    sensor_bandset,
)
from xsensei.training.synthetic.spectra import CLASS, GRID_NM, load_library

SIZE = 96
S2 = sensor_bandset("sentinel-2a")
L8 = sensor_bandset("landsat-8")
L7 = sensor_bandset("landsat-7")
S2_VIS = [S2.names.index(b) for b in ("B02", "B03", "B04")]
S2_RED, S2_NIR = S2.names.index("B04"), S2.names.index("B08")
S2_CIRRUS, S2_SWIR = S2.names.index("B10"), S2.names.index("B11")
L8_TIR = L8.names.index("B10")


@pytest.fixture(scope="module")
def pixels() -> dict[str, np.ndarray]:
    """Pixel populations pooled over 40 default scenes (S2 and Landsat 8 renders)."""
    gen = SceneGenerator(SyntheticConfig(size=SIZE), seed=11)
    pools: dict[str, list[np.ndarray]] = {}

    def add(key: str, values: np.ndarray) -> None:
        pools.setdefault(key, []).append(np.asarray(values, dtype=np.float64).ravel())

    for i in range(40):
        scene = gen.scene(i)
        s2 = gen.render(scene, S2).image
        tir = gen.render(scene, L8).image[L8_TIR]
        surf = scene.surface
        cls = surf.class_map()
        pure = (surf.frac < 0.05) | (surf.frac > 0.95)
        flat = np.ones(cls.shape, bool) if surf.terrain is None else np.abs(surf.terrain - 1) < 0.1
        ref = (scene.label == 0) & (scene.tau < 0.05) & (scene.sun_transmission > 0.99)
        ref &= pure & flat
        vis = s2[S2_VIS].mean(0)
        thick = scene.label == 1
        add("thick_vis", vis[thick])
        add("thick_spread", ((s2[S2_VIS].max(0) - s2[S2_VIS].min(0)) / vis)[thick])
        veg = ref & (cls == CLASS["vegetation"])
        add("veg_ratio", s2[S2_NIR][veg] / np.maximum(s2[S2_RED][veg], 1e-3))
        water = ref & np.isin(cls, [CLASS["water"], CLASS["turbid_water"]])
        add("water_nir", s2[S2_NIR][water])
        snow = ref & (cls == CLASS["snow"])
        add("snow_vis", vis[snow])
        add("snow_swir", s2[S2_SWIR][snow])
        add("cirrus_clear", s2[S2_CIRRUS][ref])
        if thick.sum() > 50 and ref.sum() > 50:
            add("tir_thick_minus_clear", np.median(tir[thick]) - np.median(tir[ref]))
    return {k: np.concatenate(v) for k, v in pools.items()}


# ------------------------------------------------------------------------------ determinism
def test_same_seed_and_index_is_identical_whatever_the_order() -> None:
    cfg = SyntheticConfig(size=64)
    a = SceneGenerator(cfg, seed=5)
    b = SceneGenerator(cfg, seed=5)
    for i in (3, 0, 1):
        a.sample(S2, i)
    first = a.sample(S2, 2)
    second = b.sample(S2, 2)  # fresh generator, asked directly
    np.testing.assert_array_equal(first.image, second.image)
    np.testing.assert_array_equal(first.label, second.label)
    assert first.meta == second.meta


def test_different_index_or_seed_gives_different_scenes() -> None:
    cfg = SyntheticConfig(size=64)
    gen = SceneGenerator(cfg, seed=5)
    a, b = gen.sample(S2, 2), gen.sample(S2, 3)
    c = SceneGenerator(cfg, seed=6).sample(S2, 2)
    assert not np.array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)


def test_same_scene_under_two_band_sets_has_identical_labels() -> None:
    gen = SceneGenerator(SyntheticConfig(size=64), seed=2)
    rng = np.random.default_rng(0)
    for i in range(4):
        s2, l7 = gen.sample(S2, i), gen.sample(L7, i)
        other = gen.sample(random_bandset(rng, 7), i)
        np.testing.assert_array_equal(s2.label, l7.label)
        np.testing.assert_array_equal(s2.label, other.label)
        for key in ("gsd_m", "layout", "surface_types", "clouds", "sun_elevation_deg"):
            assert s2.meta[key] == l7.meta[key]
    # the common visible band agrees closely (same physical scene, different response curves)
    s2, l7 = gen.sample(S2, 1), gen.sample(L7, 1)
    red_s2, red_l7 = s2.image[S2_RED], l7.image[L7.names.index("B3")]
    assert np.corrcoef(red_s2.ravel(), red_l7.ravel())[0, 1] > 0.9


# ------------------------------------------------------------------------------ physics
def test_thick_cloud_is_bright_and_spectrally_flat_in_the_visible(pixels) -> None:
    assert pixels["thick_vis"].size > 1000
    assert np.percentile(pixels["thick_vis"], 5) > 0.3
    assert np.median(pixels["thick_spread"]) < 0.1


def test_vegetation_has_a_red_edge(pixels) -> None:
    assert pixels["veg_ratio"].size > 500
    assert np.median(pixels["veg_ratio"]) > 3
    assert np.percentile(pixels["veg_ratio"], 25) > 3  # sparse canopies under haze: lower


def test_water_is_dark_in_the_nir(pixels) -> None:
    assert pixels["water_nir"].size > 500
    assert np.median(pixels["water_nir"]) < 0.05
    assert np.percentile(pixels["water_nir"], 90) < 0.06


def test_snow_is_bright_in_the_visible_and_dark_at_1600nm(pixels) -> None:
    assert pixels["snow_vis"].size > 500
    assert np.median(pixels["snow_vis"]) > 0.6
    assert np.median(pixels["snow_swir"]) < 0.2
    assert np.percentile(pixels["snow_swir"], 95) < 0.2


def test_cirrus_band_is_dark_over_ground_and_bright_over_cirrus() -> None:
    cfg = SyntheticConfig(size=SIZE, low_cloud_weights=(("none", 1.0),), cirrus_prob=1.0)
    gen = SceneGenerator(cfg, seed=3)
    clear, cirrus = [], []
    for i in range(6):
        scene = gen.scene(i)
        band = gen.render(scene, S2).image[S2_CIRRUS]
        clear.append(band[scene.tau < 0.01])
        cirrus.append(band[scene.tau_ice > 1.0])
    clear_v, cirrus_v = np.concatenate(clear), np.concatenate(cirrus)
    assert clear_v.size > 1000 and cirrus_v.size > 200
    assert np.median(clear_v) < 0.02
    assert np.median(cirrus_v) > np.median(clear_v) + 0.02


def test_shadow_pixels_are_darker_than_their_unshadowed_surface() -> None:
    cfg = SyntheticConfig(size=SIZE, low_cloud_weights=(("cumulus", 1.0),), blur_prob=0.0)
    lit = SceneGenerator(replace(cfg, shadows=False), seed=4)
    shaded = SceneGenerator(cfg, seed=4)
    ratios = []
    for i in range(5):
        with_shadow = shaded.sample(S2, i)
        without = lit.sample(S2, i)
        # over dark water the path radiance dominates both; compare where the ground shows
        mask = (with_shadow.label == 3) & (without.image[S2_NIR] > 0.1)
        if mask.sum() < 20:
            continue
        a = with_shadow.image[S2_NIR][mask]
        b = without.image[S2_NIR][mask]
        ratios.append(np.median(a / np.maximum(b, 1e-3)))
        assert (a < b).mean() > 0.9
    assert len(ratios) >= 2
    assert max(ratios) < 0.75


def test_thermal_band_is_colder_over_cloud_than_clear_ground(pixels) -> None:
    # per scene (same ground and air temperature), normalised BT: 117 K per unit
    thick = pixels["tir_thick_minus_clear"]
    assert thick.size >= 5
    assert (thick < 0).mean() > 0.8  # low cloud tops too, except over cold ground


def test_thermal_band_is_much_colder_over_high_cirrus() -> None:
    cfg = SyntheticConfig(size=SIZE, low_cloud_weights=(("none", 1.0),), cirrus_prob=1.0)
    gen = SceneGenerator(cfg, seed=3)
    diffs = []
    for i in range(6):
        scene = gen.scene(i)
        tir = gen.render(scene, L8).image[L8_TIR]
        cirrus, clear = scene.tau_ice > 2.0, scene.tau < 0.01
        if cirrus.sum() > 20 and clear.sum() > 20:
            diffs.append(np.median(tir[cirrus]) - np.median(tir[clear]))
    assert len(diffs) >= 2
    assert max(diffs) < -0.15  # > ~18 K colder: cloud tops at 7-13 km, lapse rate 6.5 K/km


def test_high_cloud_is_colder_than_low_cloud() -> None:
    gen = SceneGenerator(SyntheticConfig(size=SIZE, cirrus_prob=1.0), seed=8)
    for i in range(10):
        scene = gen.scene(i)
        if len(scene.layers) != 2:
            continue
        tir = gen.render(scene, L8).image[L8_TIR]
        high = scene.layers[1].tau > 3
        low = (scene.layers[0].tau > 10) & (scene.layers[1].tau < 0.05)
        if high.sum() > 20 and low.sum() > 20:
            assert np.median(tir[high]) < np.median(tir[low])
            return
    pytest.skip("no scene with both a thick low layer and dense cirrus")


def test_label_fractions_vary_between_scenes() -> None:
    gen = SceneGenerator(SyntheticConfig(size=48), seed=0)
    cloud = []
    for i in range(60):
        frac = gen.scene(i).meta["label_fractions"]
        cloud.append(frac["thick_cloud"] + frac["thin_cloud"])
    cloud_a = np.array(cloud)
    assert (cloud_a == 0).mean() > 0.1  # some scenes entirely clear
    assert (cloud_a > 0.8).any()  # some overcast
    assert ((cloud_a > 0.05) & (cloud_a < 0.6)).mean() > 0.2  # many partly cloudy


def test_values_are_finite_and_plausible() -> None:
    gen = SceneGenerator(SyntheticConfig(size=64), seed=9)
    for i in range(12):
        sample = gen.sample(L8, i)
        img = sample.image
        assert img.dtype == np.float32 and img.shape == (len(L8), 64, 64)
        assert np.isfinite(img).all()
        refl = img[~L8.is_thermal]
        assert refl.min() > -0.1 and refl.max() < 2.0
        therm = img[L8.is_thermal]
        assert therm.min() > 0.0 and therm.max() < 2.5  # (BT - 132) / 117 for 150-390 K
        assert sample.label.dtype == np.uint8 and set(np.unique(sample.label)) <= {0, 1, 2, 3}
        assert len(LABELS) == 4


def test_labels_follow_the_configured_thresholds() -> None:
    base = SyntheticConfig(size=64, cirrus_prob=0.0)
    strict = replace(base, tau_thin=4.0, tau_thick=20.0)
    a, b = SceneGenerator(base, seed=1), SceneGenerator(strict, seed=1)
    for i in range(8):
        scene_a, scene_b = a.scene(i), b.scene(i)
        np.testing.assert_array_equal(scene_a.tau, scene_b.tau)
        tau = scene_a.tau
        assert (scene_a.label[tau >= 8.0] == 1).all()
        assert (scene_b.label[tau >= 20.0] == 1).all()
        assert (scene_b.label[(tau >= 4.0) & (tau < 20.0)] == 2).all()
        assert not np.isin(scene_b.label[tau < 4.0], [1, 2]).any()


# ------------------------------------------------------------------------------ bands
def test_band_integration_of_a_constant_spectrum_gives_the_constant() -> None:
    rng = np.random.default_rng(1)
    flat = BandSet(
        ("a", "b"),
        np.array([[500.0, 550.0, 600.0], [1370.0, 1375.0, 1380.0]]),
        ("reflective", "reflective"),
    )
    for bandset in (S2, L7, sensor_bandset("modis-terra"), flat, random_bandset(rng, 12)):
        weights, sources = band_weights(bandset)
        refl = ~bandset.is_thermal
        constant = weights[refl] @ np.full(GRID_NM.size, 0.37)
        np.testing.assert_allclose(constant, 0.37, rtol=1e-9)
        assert len(sources) == len(bandset)
    assert band_weights(flat)[1] == ("flat-top FWHM", "flat-top FWHM")


def test_band_integration_follows_the_band_wavelengths() -> None:
    ramp = GRID_NM / 1000.0  # reflectance equal to wavelength in um
    weights, _ = band_weights(S2)
    centres = S2.wavelengths_nm[:, 1] / 1000.0
    np.testing.assert_allclose(weights @ ramp, centres, atol=0.01)


def test_sensor_and_random_bandsets() -> None:
    assert S2.descriptors().shape == (13, 3)
    assert L8.kinds.count("thermal") == 2
    np.testing.assert_allclose(L8.bt_range_k[L8_TIR], (132.0, 249.0))
    sub = sensor_bandset("landsat-8", ["B4", "B3", "B2"])
    assert sub.names == ("B4", "B3", "B2")
    bands = random_bandset(np.random.default_rng(3), 200)
    nm = bands.wavelengths_nm
    refl = ~bands.is_thermal
    assert 0 < bands.is_thermal.sum() < 60
    assert (nm[refl, 1] >= 400).all() and (nm[refl, 1] <= 2400).all()
    width = nm[refl, 2] - nm[refl, 0]
    assert width.min() >= 5 and width.max() <= 200.01
    assert ((nm[~refl, 1] >= 8000) & (nm[~refl, 1] <= 13000)).all()
    assert np.isfinite(bands.descriptors()).all()
    assert sub == sensor_bandset("landsat-8", ["B4", "B3", "B2"])
    assert hash(sub) == hash(sensor_bandset("landsat-8", ["B4", "B3", "B2"]))


def test_random_bandsets_draw_mid_infrared_on_request() -> None:
    """mwir_prob turns that share of thermal bands into 3.5-4.1 um ones; 0 keeps old draws."""
    old = random_bandset(np.random.default_rng(3), 200)
    same = random_bandset(np.random.default_rng(3), 200, mwir_prob=0.0)
    assert old == same
    bands = random_bandset(np.random.default_rng(3), 400, thermal_prob=0.5, mwir_prob=0.4)
    centre = bands.wavelengths_nm[bands.is_thermal, 1]
    mwir = (centre >= 3500) & (centre <= 4100)
    assert (mwir | ((centre >= 8000) & (centre <= 13000))).all()
    assert 0.25 < mwir.mean() < 0.55
    gen = SceneGenerator(SyntheticConfig(size=32), seed=0)
    image = gen.sample(bands.subset(np.flatnonzero(bands.is_thermal)[:6]), 0).image
    assert np.isfinite(image).all()


@pytest.mark.parametrize("index", [6, 22])
def test_bright_snow_under_cloud_stays_finite_and_bounded(index: int) -> None:
    """Mountain snow scenes under thick cloud: the surface <-> cloud multiple reflection once
    divided by ~0 and gave pixels of -25,000 (generator 1.0); now TOA stays physical."""
    gen = SceneGenerator(SyntheticConfig(size=128), seed=0)
    scene = gen.scene(index)
    assert scene.meta["layout"] == "mountain" and scene.meta["surface_types"].get("snow", 0) > 0.2
    image = gen.render(scene, sensor_bandset("sentinel-2a")).image
    assert np.isfinite(image).all()
    assert -0.2 < image.min() and image.max() < 5.0


def test_clear_ocean_carries_rayleigh_path_reflectance() -> None:
    """Real clear water reads ~0.06-0.15 at 443 nm TOA (Rayleigh, tau 0.24): the darkest
    synthetic pixels must too, and the path must fall off steeply towards the NIR."""
    cfg = SyntheticConfig(size=64, layout_weights=(("ocean", 1.0),),
                          low_cloud_weights=(("none", 1.0),), cirrus_prob=0.0)
    gen = SceneGenerator(cfg, seed=4)
    bands = sensor_bandset("sentinel-2a", ["B01", "B8A"])
    for index in range(4):
        sample = gen.sample(bands, index)
        dark_blue, dark_nir = np.quantile(sample.image.reshape(2, -1), 0.01, axis=1)
        elevation = sample.meta["sun_elevation_deg"]
        assert 0.05 < dark_blue < 0.3, (index, elevation, dark_blue)
        assert dark_blue > 3 * max(dark_nir, 0.005), (index, dark_blue, dark_nir)


def test_physics_1_0_draws_the_same_scenes_with_the_old_image_formation() -> None:
    """Recipes of the version-1 models select physics 1.0: the same scenes and labels, the
    weak Rayleigh path (clear water darker in the blue) and the uncapped multiple reflection
    of that generator (scene 6's snow under thick cloud blows up), so their data is redrawn."""
    ocean = dict(size=64, layout_weights=(("ocean", 1.0),),
                 low_cloud_weights=(("none", 1.0),), cirrus_prob=0.0)
    new = SceneGenerator(SyntheticConfig(**ocean), seed=4)
    old = SceneGenerator(SyntheticConfig(**ocean, physics="1.0"), seed=4)
    blue = sensor_bandset("sentinel-2a", ["B01"])
    for index in range(3):
        a, b = new.sample(blue, index), old.sample(blue, index)
        assert np.array_equal(a.label, b.label) and a.meta == b.meta
        assert np.quantile(b.image, 0.01) < np.quantile(a.image, 0.01) - 0.03, index
    snow = SceneGenerator(SyntheticConfig(size=128, physics="1.0"), seed=0)
    image = snow.render(snow.scene(6), sensor_bandset("sentinel-2a")).image
    assert np.abs(image).max() > 5.0  # the bound the 1.1 test holds scene 6 to


def _edge_brightness_ratio(gen: SceneGenerator, indices: range) -> float:
    """Mean visible reflectance of labelled cloud 1-3 px inside its edge, pixels whose nearest
    clear pixel lies towards the sun over those whose nearest clear pixel lies away from it."""
    from scipy import ndimage

    sun_side, shade_side = [], []
    vis = sensor_bandset("sentinel-2a", ["B02", "B03", "B04"])
    for index in indices:
        sample = gen.sample(vis, index)
        cloud = np.isin(sample.label, (1, 2))
        az = np.deg2rad(sample.meta["sun_azimuth_deg"])
        towards_sun = np.array([-np.cos(az), np.sin(az)])  # (rows, cols)
        dist, (iy, ix) = ndimage.distance_transform_edt(cloud, return_indices=True)
        yy, xx = np.nonzero(cloud & (dist < 3))
        to_clear = np.stack([iy[yy, xx] - yy, ix[yy, xx] - xx], axis=1)
        cos = to_clear @ towards_sun / dist[yy, xx]
        brightness = sample.image.mean(axis=0)[yy, xx]
        sun_side.append(brightness[cos > 0.5])
        shade_side.append(brightness[cos < -0.5])
    return float(np.concatenate(sun_side).mean() / np.concatenate(shade_side).mean())


def test_physics_1_2_lights_cloud_tops_from_the_sun_and_keeps_the_scenes() -> None:
    """Physics 1.2 adds 3-D cloud tops: the same scenes and labels as 1.1, but cumulus edges
    facing the sun are brighter than those facing away (real scenes: 1.2-1.3x), while 1.1's
    flat tops are symmetric. Cirrus has no relief, so a cirrus-only scene is unchanged."""
    cumulus = dict(size=128, low_cloud_weights=(("cumulus", 1.0),), cirrus_prob=0.0,
                   gsd_range_m=(25.0, 35.0), sun_elevation_range_deg=(40.0, 70.0))
    flat = SceneGenerator(SyntheticConfig(**cumulus), seed=11)
    lit = SceneGenerator(SyntheticConfig(**cumulus, physics="1.2"), seed=11)
    for index in range(3):
        a, b = flat.sample(S2, index), lit.sample(S2, index)
        assert np.array_equal(a.label, b.label) and a.meta == b.meta
    assert 0.95 < _edge_brightness_ratio(flat, range(16)) < 1.05
    assert _edge_brightness_ratio(lit, range(16)) > 1.1

    cirrus = dict(size=64, low_cloud_weights=(("none", 1.0),), cirrus_prob=1.0)
    a = SceneGenerator(SyntheticConfig(**cirrus), seed=2).sample(S2, 0)
    b = SceneGenerator(SyntheticConfig(**cirrus, physics="1.2"), seed=2).sample(S2, 0)
    assert np.array_equal(a.image, b.image)


def test_relief_prob_mixes_flat_and_3d_topped_scenes_of_the_same_draw() -> None:
    """``relief_prob`` 0.5 gives each scene either 1.2's 3-D tops or 1.1's flat ones, both bit
    for bit, in about even shares; 1.0 (the default) is 1.2 unchanged; bad values are refused."""
    cumulus = dict(size=32, low_cloud_weights=(("cumulus", 1.0),), cirrus_prob=0.0)
    flat = SceneGenerator(SyntheticConfig(**cumulus), seed=3)
    lit = SceneGenerator(SyntheticConfig(**cumulus, physics="1.2"), seed=3)
    mixed = SceneGenerator(SyntheticConfig(**cumulus, physics="1.2", relief_prob=0.5), seed=3)
    blue = sensor_bandset("sentinel-2a", ["B02"])
    kinds = []
    for index in range(40):
        m = mixed.sample(blue, index).image
        is_flat = np.array_equal(m, flat.sample(blue, index).image)
        is_lit = np.array_equal(m, lit.sample(blue, index).image)
        assert is_flat != is_lit, index  # exactly one of the two draws
        kinds.append(is_lit)
    assert 12 <= sum(kinds) <= 28  # binomial(40, 0.5): outside this with p < 0.002
    with pytest.raises(ValueError, match="relief_prob"):
        SyntheticConfig(relief_prob=1.5, physics="1.2")
    with pytest.raises(ValueError, match="physics '1.2'"):
        SyntheticConfig(relief_prob=0.5)


def test_physics_1_3_darkens_cloud_shadows_and_keeps_the_rest_of_the_scene() -> None:
    """Physics 1.3 lets only the direct beam and a share k of the diffusely transmitted light
    reach a cloud's shadow: the same clouds and cloud labels as 1.2, sunlight never brighter
    than 1.2's and untouched where no cloud is on the sun path, and for cumulus (k <= 0.3)
    at most ``exp(-x) + 0.3 (1 - F(x) - exp(-x))`` of x = tau / mu; shadows get darker and
    cover more of the scene."""
    from xsensei.training.synthetic.clouds import two_stream_reflectance

    cumulus = dict(size=128, low_cloud_weights=(("cumulus", 1.0),), cirrus_prob=0.0,
                   gsd_range_m=(25.0, 35.0))
    old = SceneGenerator(SyntheticConfig(**cumulus, physics="1.2"), seed=5)
    new = SceneGenerator(SyntheticConfig(**cumulus, physics="1.3"), seed=5)
    shaded_old, shaded_new, shadow_px = [], [], [0, 0]
    for index in range(6):
        a, b = old.scene(index), new.scene(index)
        np.testing.assert_array_equal(a.tau, b.tau)
        cloudy = a.label == 1
        np.testing.assert_array_equal(b.label[cloudy], 1)
        assert (b.sun_transmission <= a.sun_transmission + 1e-6).all()
        free = a.sun_transmission == 1.0
        np.testing.assert_allclose(b.sun_transmission[free], 1.0, atol=1e-6)
        x = b.layers[0].tau_shadow / np.sin(b.sun_elevation)
        direct = np.exp(-x)
        bound = direct + 0.3 * (1.0 - two_stream_reflectance(x) - direct)
        assert (b.sun_transmission <= bound + 1e-6).all()
        dark = a.sun_transmission < 0.9
        shaded_old.append(a.sun_transmission[dark])
        shaded_new.append(b.sun_transmission[dark])
        shadow_px[0] += int((a.label == 3).sum())
        shadow_px[1] += int((b.label == 3).sum())
    assert np.concatenate(shaded_new).mean() < 0.6 * np.concatenate(shaded_old).mean()
    assert shadow_px[1] > 1.3 * shadow_px[0] > 0


def test_top_illumination_is_bounded_and_flat_tops_are_unlit() -> None:
    from xsensei.training.synthetic.clouds import RELIEF, top_illumination

    rng = np.random.default_rng(0)
    elev, az = np.deg2rad(40.0), np.deg2rad(90.0)  # sun in the east: image right
    assert top_illumination(rng, "cirrus", np.ones((8, 8), np.float32), 30.0, elev, az) is None
    flat = top_illumination(rng, "cumulus", np.full((8, 8), 20.0, np.float32), 30.0, elev, az)
    assert flat is not None and np.allclose(flat, 1.0)
    dome = np.clip(30.0 - np.hypot(*np.mgrid[-16:17, -16:17]), 0, None).astype(np.float32)
    light = top_illumination(rng, "cumulus", dome, 30.0, elev, az)
    w_max = RELIEF["cumulus"][1][1]
    assert light is not None and light.min() >= 1 - w_max - 1e-6 and light.max() <= 1 + w_max
    assert light[16, 20:28].mean() > 1.0 > light[16, 5:13].mean()  # east side lit, west shaded


def test_bandset_rejects_inconsistent_input() -> None:
    with pytest.raises(ValueError):
        BandSet(("a",), np.array([[500.0, 550.0, 600.0]]), ("visible",))
    with pytest.raises(ValueError):
        BandSet(("a", "b"), np.array([[500.0, 550.0, 600.0]]), ("reflective",))
    with pytest.raises(ValueError):
        BandSet(("a",), np.array([[600.0, 550.0, 500.0]]), ("reflective",))


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        SyntheticConfig(tau_thin=10.0, tau_thick=8.0)
    with pytest.raises(ValueError):
        SyntheticConfig(layout_weights=(("moon", 1.0),))
    with pytest.raises(ValueError, match=r"physics version '0.9'.*'1.0', '1.1'"):
        SyntheticConfig(physics="0.9")


def test_parametric_library_works_without_earthlib() -> None:
    gen = SceneGenerator(SyntheticConfig(size=48, library="parametric"), seed=0)
    sample = gen.sample(S2, 0)
    assert sample.meta["spectral_library"] == "parametric"
    assert np.isfinite(sample.image).all()


def test_earthlib_library_when_installed() -> None:
    pytest.importorskip("earthlib")
    lib = load_library("earthlib")
    assert lib.source == "earthlib"
    assert lib.spectra.shape == (7261, GRID_NM.size)
    assert {"vegetation", "soil", "urban", "npv", "burn", "sand"} <= set(lib.groups)


def test_flat_top_fallback_without_pyrsr_is_close_to_the_official_curves(monkeypatch) -> None:
    from xsensei.training.synthetic import bands

    monkeypatch.setattr(bands, "_pyrsr_data_dir", lambda: None)
    fallback = sensor_bandset("sentinel-2a")
    assert fallback.srf == (None,) * 13
    weights, sources = band_weights(fallback)
    assert set(sources) == {"flat-top FWHM"}
    lib = load_library("parametric")
    rng = np.random.default_rng(0)
    spectrum = np.mean([lib.draw(rng, "vegetation") for _ in range(5)], axis=0)
    official = band_weights(S2)[0] @ spectrum
    if S2.srf[0] is not None:  # pyrsr installed: the two responses agree on smooth spectra
        np.testing.assert_allclose(weights @ spectrum, official, atol=0.02)
